package redistapreceiver

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// sweep reads a sorted set whole, in ascending score order, one page of
// at most limit members per poll, so a set of any size is read in full
// every few polls at a bounded cost per poll. The cursor is the score of
// the last member read and how many members of that score were read: a
// member added behind the cursor during a sweep is read by the next one.
type sweep struct {
	key string
	// from is where a new sweep starts, given when it starts ("-inf", or a
	// score).
	from func(start time.Time) string
	// active is a sweep under way; cursor and offset are where it goes on.
	active bool
	cursor float64
	offset int64
	// started is when the sweep under way began, completed when the last
	// complete one did (zero before one completed).
	started, completed time.Time
}

// read queues the read of the next page on pipe.
func (s *sweep) read(ctx context.Context, pipe redis.Pipeliner, now time.Time, limit int64) *redis.ZSliceCmd {
	if !s.active {
		s.active, s.started = true, now
		return pipe.ZRangeByScoreWithScores(ctx, s.key, &redis.ZRangeBy{Min: s.from(now), Max: "+inf", Count: limit})
	}
	return pipe.ZRangeByScoreWithScores(ctx, s.key, &redis.ZRangeBy{Min: formatScore(s.cursor), Max: "+inf", Offset: s.offset, Count: limit})
}

// advance moves the cursor past page, the reply to the last read. A page
// shorter than limit ends the sweep. A page that is an error (a key of
// another type) ends it too: nothing can be in such a set.
func (s *sweep) advance(page []redis.Z, limit int64) {
	if int64(len(page)) < limit {
		s.active, s.completed = false, s.started
		return
	}
	last := page[len(page)-1].Score
	var same int64
	for i := len(page) - 1; i >= 0 && page[i].Score == last; i-- {
		same++
	}
	if s.offset > 0 && last == s.cursor {
		s.offset += same // the whole page had the cursor's score
	} else {
		s.cursor, s.offset = last, same
	}
}

// formatScore writes a score so Redis reads back the same float.
func formatScore(f float64) string {
	return strconv.FormatFloat(f, 'g', -1, 64)
}
