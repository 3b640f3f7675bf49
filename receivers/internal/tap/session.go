package tap

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"
)

// Backoff bounds the waits between reconnection attempts: Initial, doubling
// to Max.
type Backoff struct {
	Initial time.Duration `mapstructure:"initial_interval"`
	Max     time.Duration `mapstructure:"max_interval"`
}

// DefaultBackoff waits 500ms, then up to 30s, between attempts.
var DefaultBackoff = Backoff{Initial: 500 * time.Millisecond, Max: 30 * time.Second}

// Validate checks the intervals; errors name the key.
func (b Backoff) Validate() error {
	var errs []error
	if b.Initial <= 0 {
		errs = append(errs, errors.New("reconnect::initial_interval: must be positive"))
	}
	if b.Max < b.Initial {
		errs = append(errs, errors.New("reconnect::max_interval: must be at least initial_interval"))
	}
	return errors.Join(errs...)
}

// Connected is what a session calls once it is connected and working, so
// the time without the broker ends there.
type Connected func()

// Run keeps a broker session going until ctx ends. session connects, calls
// connected once it is working, and returns when the connection is lost.
// Between attempts Run waits with backoff; when a session that had been
// working is lost, the time until the next one works is counted as a gap
// (Telemetry.Gap). Until the first session works, the time is not a gap,
// but the tap does not count as connected either. Run returns when ctx is
// done.
func Run(ctx context.Context, logger *zap.Logger, tel *Telemetry, b Backoff, session func(context.Context, Connected) error) {
	wait := b.Initial
	var lostAt time.Time
	var cause error
	tel.Connected(ctx, false)
	for ctx.Err() == nil {
		working := false
		var workingSince time.Time
		err := session(ctx, func() {
			working, workingSince = true, time.Now()
			tel.Connected(ctx, true)
			if !lostAt.IsZero() {
				tel.Gap(ctx, time.Since(lostAt), cause)
				lostAt = time.Time{}
			}
		})
		if ctx.Err() != nil {
			return
		}
		if working && time.Since(workingSince) >= b.Max {
			// It held: the next loss starts the backoff anew. A session
			// that fails soon after connecting (a misconfiguration the
			// broker only reports once asked) keeps backing off.
			wait = b.Initial
		}
		if working {
			tel.Connected(ctx, false)
			lostAt = time.Now()
			cause = err
			logger.Warn("tap lost its broker; reconnecting", zap.Error(err))
		} else if lostAt.IsZero() && wait == b.Initial {
			logger.Warn("tap cannot reach its broker; retrying with backoff", zap.Error(err))
		} else {
			logger.Debug("tap could not connect", zap.Error(err), zap.Duration("retry_in", wait))
		}
		if !sleep(ctx, wait) {
			return
		}
		wait = min(wait*2, b.Max)
	}
}

// sleep waits d, or less when ctx ends first (then it returns false).
var sleep = func(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
