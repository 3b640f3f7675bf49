package segfiles

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestList(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"10.wal", "2.wal", "0000000000000003.wal", "x.wal", "4.seg", "5.wal.tmp"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), nil, 0o600))
	}
	got, err := List(dir, ".wal")
	require.NoError(t, err)
	assert.Equal(t, []uint64{2, 3, 10}, got)

	_, err = List(filepath.Join(dir, "missing"), ".wal")
	assert.Error(t, err)
}
