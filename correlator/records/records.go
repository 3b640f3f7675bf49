// Package records carries hop and flow versions as OpenTelemetry log
// records: the correlator connector writes them, the ClickHouse exporter
// reads them back. docs/RECORDS.md documents the attributes.
package records

import (
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowtrace/flowtrace/model"
)

// Record types, in the attribute KeyType.
const (
	TypeHop  = "hop"
	TypeFlow = "flow"
	// TypeBatch carries many hop and flow versions in its body, in
	// modelcodec's compact encoding: cheaper to write and read than one
	// record of attributes each, but opaque to other logs backends.
	TypeBatch = "batch"
)

// Attribute keys. Times are integers, nanoseconds since the epoch, 0 when
// not observed; durations are integers, nanoseconds.
const (
	KeyType = "flowtrace.record"

	KeyFlowID      = "flowtrace.flow_id"
	KeyHopID       = "flowtrace.hop_id"
	KeyVersion     = "flowtrace.version"
	KeyDeleted     = "flowtrace.deleted"
	KeyFirstSeen   = "flowtrace.first_seen"
	KeyParentHopID = "flowtrace.parent_hop_id"
	KeySystem      = "flowtrace.system"
	KeyProducer    = "flowtrace.producer"
	KeyDestination = "flowtrace.destination"
	KeyConsumer    = "flowtrace.consumer"
	KeyGroup       = "flowtrace.consumer_group"
	KeyOperation   = "flowtrace.operation"
	KeyMessageID   = "flowtrace.message_id"
	KeyTraceID     = "flowtrace.trace_id"
	KeyPublishTime = "flowtrace.publish_time"
	KeyDeliverTime = "flowtrace.deliver_time"
	KeySettleTime  = "flowtrace.settle_time"
	KeyQueueWait   = "flowtrace.queue_wait"
	KeyProcessing  = "flowtrace.processing"
	KeyAttempts    = "flowtrace.attempts"
	KeyOutcome     = "flowtrace.outcome"
	KeyReason      = "flowtrace.reason"
	KeyCounted     = "flowtrace.counted"

	KeyName         = "flowtrace.name"
	KeyStatus       = "flowtrace.status"
	KeyStart        = "flowtrace.start"
	KeyEnd          = "flowtrace.end"
	KeyDuration     = "flowtrace.duration"
	KeyHopCount     = "flowtrace.hop_count"
	KeyRetries      = "flowtrace.retries"
	KeyDeadLetters  = "flowtrace.dead_letters"
	KeyKeys         = "flowtrace.keys" // list of {kind, value} maps
	KeyCriticalPath = "flowtrace.critical_path"
)

// ErrNotARecord means a log record carries no flowtrace record type.
var ErrNotARecord = errors.New("not a flowtrace record")

// AppendHop appends a hop version as a log record.
func AppendHop(records plog.LogRecordSlice, h model.Hop, now time.Time) {
	r := records.AppendEmpty()
	r.SetTimestamp(pcommon.NewTimestampFromTime(now))
	a := r.Attributes()
	a.EnsureCapacity(24)
	a.PutStr(KeyType, TypeHop)
	a.PutStr(KeyFlowID, h.FlowID)
	a.PutStr(KeyHopID, h.HopID)
	a.PutInt(KeyVersion, int64(h.Version))
	a.PutBool(KeyDeleted, h.Deleted)
	a.PutInt(KeyFirstSeen, nanos(h.FirstSeen))
	a.PutStr(KeyParentHopID, h.ParentHopID)
	a.PutStr(KeySystem, h.System)
	a.PutStr(KeyProducer, h.Producer)
	a.PutStr(KeyDestination, h.Destination)
	a.PutStr(KeyConsumer, h.Consumer)
	a.PutStr(KeyGroup, h.ConsumerGroup)
	a.PutStr(KeyOperation, h.Operation)
	a.PutStr(KeyMessageID, h.MessageID)
	a.PutStr(KeyTraceID, h.TraceID)
	a.PutInt(KeyPublishTime, nanos(h.PublishTime))
	a.PutInt(KeyDeliverTime, nanos(h.DeliverTime))
	a.PutInt(KeySettleTime, nanos(h.SettleTime))
	a.PutInt(KeyQueueWait, int64(h.QueueWait))
	a.PutInt(KeyProcessing, int64(h.Processing))
	a.PutInt(KeyAttempts, int64(h.Attempts))
	a.PutStr(KeyOutcome, string(h.Outcome))
	a.PutStr(KeyReason, h.Reason)
	a.PutBool(KeyCounted, h.Counted)
}

// AppendFlow appends a flow version as a log record.
func AppendFlow(records plog.LogRecordSlice, f model.Flow, now time.Time) {
	r := records.AppendEmpty()
	r.SetTimestamp(pcommon.NewTimestampFromTime(now))
	a := r.Attributes()
	a.EnsureCapacity(16)
	a.PutStr(KeyType, TypeFlow)
	a.PutStr(KeyFlowID, f.ID)
	a.PutInt(KeyVersion, int64(f.Version))
	a.PutBool(KeyDeleted, f.Deleted)
	a.PutInt(KeyFirstSeen, nanos(f.FirstSeen))
	a.PutStr(KeyName, f.Name)
	a.PutStr(KeyStatus, string(f.Status))
	a.PutInt(KeyStart, nanos(f.Start))
	a.PutInt(KeyEnd, nanos(f.End))
	a.PutInt(KeyDuration, int64(f.Duration()))
	a.PutInt(KeyHopCount, int64(f.HopCount))
	a.PutInt(KeyRetries, int64(f.Retries))
	a.PutInt(KeyDeadLetters, int64(f.DeadLetters))
	keys := a.PutEmptySlice(KeyKeys)
	keys.EnsureCapacity(len(f.Keys))
	for _, k := range f.Keys {
		m := keys.AppendEmpty().SetEmptyMap()
		m.PutStr("kind", k.Kind)
		m.PutStr("value", k.Value)
	}
	path := a.PutEmptySlice(KeyCriticalPath)
	path.EnsureCapacity(len(f.CriticalPath))
	for _, id := range f.CriticalPath {
		path.AppendEmpty().SetStr(id)
	}
}

// Type returns the record's type, TypeHop, TypeFlow or TypeBatch, or "".
func Type(r plog.LogRecord) string {
	if v, ok := r.Attributes().Get(KeyType); ok {
		return v.Str()
	}
	return ""
}

// reader reads typed attributes and remembers the first problem.
type reader struct {
	attrs pcommon.Map
	err   error
}

func (r *reader) value(key string, want pcommon.ValueType) (pcommon.Value, bool) {
	v, ok := r.attrs.Get(key)
	if !ok {
		return v, false
	}
	if v.Type() != want {
		if r.err == nil {
			r.err = fmt.Errorf("%s: want %s, got %s", key, want, v.Type())
		}
		return v, false
	}
	return v, true
}

func (r *reader) str(key string) string {
	if v, ok := r.value(key, pcommon.ValueTypeStr); ok {
		return v.Str()
	}
	return ""
}

func (r *reader) int(key string) int64 {
	if v, ok := r.value(key, pcommon.ValueTypeInt); ok {
		return v.Int()
	}
	return 0
}

// uint reads a non-negative integer of at most limit.
func (r *reader) uint(key string, limit uint64) uint64 {
	n := r.int(key)
	if n < 0 || uint64(n) > limit {
		if r.err == nil {
			r.err = fmt.Errorf("%s: %d out of range [0, %d]", key, n, limit)
		}
		return 0
	}
	return uint64(n)
}

func (r *reader) boolean(key string) bool {
	if v, ok := r.value(key, pcommon.ValueTypeBool); ok {
		return v.Bool()
	}
	return false
}

func (r *reader) time(key string) time.Time {
	if ns := r.int(key); ns > 0 {
		return time.Unix(0, ns).UTC()
	}
	return time.Time{}
}

func (r *reader) require(keys ...string) {
	for _, k := range keys {
		if _, ok := r.attrs.Get(k); !ok && r.err == nil {
			r.err = fmt.Errorf("%s: missing", k)
		}
	}
}

func (r *reader) checkType(want string) {
	if got := r.str(KeyType); got != want && r.err == nil {
		if got == "" {
			r.err = ErrNotARecord
		} else {
			r.err = fmt.Errorf("%s: want %q, got %q", KeyType, want, got)
		}
	}
}

// DecodeHop reads a hop version back; an error names the attribute at fault.
func DecodeHop(record plog.LogRecord) (model.Hop, error) {
	r := reader{attrs: record.Attributes()}
	r.checkType(TypeHop)
	r.require(KeyFlowID, KeyHopID, KeyVersion)
	h := model.Hop{
		FlowID:        r.str(KeyFlowID),
		HopID:         r.str(KeyHopID),
		Version:       r.uint(KeyVersion, 1<<63-1),
		Deleted:       r.boolean(KeyDeleted),
		FirstSeen:     r.time(KeyFirstSeen),
		ParentHopID:   r.str(KeyParentHopID),
		System:        r.str(KeySystem),
		Producer:      r.str(KeyProducer),
		Destination:   r.str(KeyDestination),
		Consumer:      r.str(KeyConsumer),
		ConsumerGroup: r.str(KeyGroup),
		Operation:     r.str(KeyOperation),
		MessageID:     r.str(KeyMessageID),
		TraceID:       r.str(KeyTraceID),
		PublishTime:   r.time(KeyPublishTime),
		DeliverTime:   r.time(KeyDeliverTime),
		SettleTime:    r.time(KeySettleTime),
		QueueWait:     time.Duration(r.int(KeyQueueWait)),
		Processing:    time.Duration(r.int(KeyProcessing)),
		Attempts:      uint16(r.uint(KeyAttempts, 1<<16-1)),
		Outcome:       model.HopOutcome(r.str(KeyOutcome)),
		Reason:        r.str(KeyReason),
		Counted:       r.boolean(KeyCounted),
	}
	if r.err != nil {
		return model.Hop{}, fmt.Errorf("decode hop record: %w", r.err)
	}
	return h, nil
}

// DecodeFlow reads a flow version back; an error names the attribute at
// fault.
func DecodeFlow(record plog.LogRecord) (model.Flow, error) {
	r := reader{attrs: record.Attributes()}
	r.checkType(TypeFlow)
	r.require(KeyFlowID, KeyVersion)
	f := model.Flow{
		ID:          r.str(KeyFlowID),
		Version:     r.uint(KeyVersion, 1<<63-1),
		Deleted:     r.boolean(KeyDeleted),
		FirstSeen:   r.time(KeyFirstSeen),
		Name:        r.str(KeyName),
		Status:      model.FlowStatus(r.str(KeyStatus)),
		Start:       r.time(KeyStart),
		End:         r.time(KeyEnd),
		HopCount:    uint32(r.uint(KeyHopCount, 1<<32-1)),
		Retries:     uint32(r.uint(KeyRetries, 1<<32-1)),
		DeadLetters: uint32(r.uint(KeyDeadLetters, 1<<32-1)),
	}
	if v, ok := r.value(KeyKeys, pcommon.ValueTypeSlice); ok {
		for i := 0; i < v.Slice().Len(); i++ {
			item := v.Slice().At(i)
			if item.Type() != pcommon.ValueTypeMap {
				r.err = fmt.Errorf("%s[%d]: want Map, got %s", KeyKeys, i, item.Type())
				break
			}
			kr := reader{attrs: item.Map()}
			k := model.Key{Kind: kr.str("kind"), Value: kr.str("value")}
			if kr.err != nil {
				r.err = fmt.Errorf("%s[%d]: %w", KeyKeys, i, kr.err)
				break
			}
			f.Keys = append(f.Keys, k)
		}
	}
	if v, ok := r.value(KeyCriticalPath, pcommon.ValueTypeSlice); ok {
		for i := 0; i < v.Slice().Len(); i++ {
			item := v.Slice().At(i)
			if item.Type() != pcommon.ValueTypeStr {
				r.err = fmt.Errorf("%s[%d]: want Str, got %s", KeyCriticalPath, i, item.Type())
				break
			}
			f.CriticalPath = append(f.CriticalPath, item.Str())
		}
	}
	if r.err != nil {
		return model.Flow{}, fmt.Errorf("decode flow record: %w", r.err)
	}
	return f, nil
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
