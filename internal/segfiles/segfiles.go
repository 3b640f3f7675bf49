// Package segfiles lists the numbered segment files of a log directory
// (<number><suffix>), as the correlator's write-ahead log and
// segment_storage keep them.
package segfiles

import (
	"os"
	"slices"
	"strconv"
	"strings"
)

// List returns the numbers of the files in dir named <number><suffix>,
// ascending. Other files are left out.
func List(dir, suffix string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var numbers []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok {
			continue
		}
		if n, err := strconv.ParseUint(name, 10, 64); err == nil {
			numbers = append(numbers, n)
		}
	}
	slices.Sort(numbers)
	return numbers, nil
}
