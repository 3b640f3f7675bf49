package kafkatapreceiver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// TestForgetGone: what the tap holds for a topic or partition that is gone
// is dropped, and no longer counts against max_pending_records; a failed
// end offsets request drops nothing that is still read.
func TestForgetGone(t *testing.T) {
	tp := &kafkaTap{partitions: map[string]map[int32]*partitionState{}}
	hold := func(topic string, partition int32, records int) {
		ps := tp.partition(topic, partition)
		for i := range records {
			added, _ := ps.add(pendingRecord{offset: int64(i), published: time.Now()}, false, 1)
			tp.pending += added
		}
	}
	hold("orders", 0, 3)
	hold("orders", 1, 2)  // re-created with one partition
	hold("deleted", 0, 4) // named in topics, deleted
	hold("purged", 0, 5)  // matched a regex, deleted: the client stopped reading it
	assert.Equal(t, 14, tp.pending)

	tapped := map[string]bool{"orders": true, "deleted": true}
	ends := kadm.ListedOffsets{
		"orders":  {0: {Topic: "orders", Partition: 0, Offset: 3}},
		"deleted": {-1: {Topic: "deleted", Partition: -1, Err: kerr.UnknownTopicOrPartition}},
	}

	tp.forgetGone(tapped, ends, false)
	assert.Equal(t, 9, tp.pending, "without a complete listing only what is no longer read goes")
	assert.NotContains(t, tp.partitions, "purged")
	assert.Len(t, tp.partitions["orders"], 2)
	assert.Contains(t, tp.partitions, "deleted")

	tp.forgetGone(tapped, ends, true)
	assert.Equal(t, 3, tp.pending)
	assert.Equal(t, []string{"orders"}, keys(tp.partitions))
	assert.Len(t, tp.partitions["orders"], 1)
	assert.Contains(t, tp.partitions["orders"], int32(0))

	tp.forgetGone(map[string]bool{}, nil, false)
	assert.Zero(t, tp.pending)
	assert.Empty(t, tp.partitions)
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
