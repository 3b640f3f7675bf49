package redistapreceiver

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// keyErrors are the keys Redis refused to read (a key of another type, a
// key the ACL user may not read): each is one key's problem, skipped while
// the rest of the tap goes on, and counted and logged once until it reads
// again.
type keyErrors map[string]bool

// isReply is an error Redis replied to a command, as opposed to a failure
// of the connection.
func isReply(err error) bool {
	var reply redis.Error
	return err != nil && !errors.Is(err, redis.Nil) && errors.As(err, &reply)
}

// check reports whether key read fine; err is the reply of a read of it,
// a reply error (a connection failure is the caller's). A key refused is
// counted and logged the first time.
func (k keyErrors) check(key string, err error, out *batch) bool {
	if !isReply(err) {
		delete(k, key)
		return true
	}
	if !k[key] {
		k[key] = true
		reason := reasonKey
		if strings.HasPrefix(err.Error(), "WRONGTYPE") {
			reason = reasonWrongType
		}
		out.decodeError(&decodeError{reason, err})
		out.logger.Warn("Redis refused to read a key; the tap skips it until it reads again",
			zap.String("key", key), zap.Error(err))
	}
	return false
}
