package rabbitmqtapreceiver

import (
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// celeryTask is what Celery's message protocol 2 puts in the headers of a
// task message (https://docs.celeryq.dev/en/stable/internals/protocol.html).
type celeryTask struct {
	id, name         string
	rootID, parentID string
	retries          int64
}

// maxCeleryRetries bounds the retries header: a higher value is not a real
// task's but a malformed header's.
const maxCeleryRetries = 1 << 16

// decodeCelery reads the protocol 2 headers of a task message; ok is false
// for a message that is not a Celery task (no task or id header).
func decodeCelery(h amqp.Table) (task celeryTask, ok bool, err error) {
	name, hasTask := h["task"]
	id, hasID := h["id"]
	if !hasTask || !hasID {
		return task, false, nil
	}
	if task.name, ok = name.(string); !ok || task.name == "" {
		return task, false, badFrame("celery_headers", "task is not a name")
	}
	if task.id, ok = id.(string); !ok || task.id == "" {
		return task, false, badFrame("celery_headers", "id is not a task id")
	}
	for _, field := range [...]struct {
		key string
		dst *string
	}{{"root_id", &task.rootID}, {"parent_id", &task.parentID}} {
		switch v := h[field.key].(type) {
		case nil:
		case string:
			*field.dst = v
		default:
			return task, false, badFrame("celery_headers", field.key+" is not a task id")
		}
	}
	if v := h["retries"]; v != nil {
		n, isInt := integer(v)
		if !isInt || n < 0 || n > maxCeleryRetries {
			return task, false, badFrame("celery_headers", "retries is not a count")
		}
		task.retries = n
	}
	return task, true, nil
}

// celeryControl says whether an exchange or queue carries Celery's own
// traffic: worker events (celeryev) and remote control (*.pidbox).
func celeryControl(name string) bool {
	return name == "celeryev" || strings.HasPrefix(name, "celeryev.") || strings.HasSuffix(name, ".pidbox")
}
