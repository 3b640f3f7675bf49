package chstore

import (
	"context"
	"fmt"
	"strconv"

	"github.com/cespare/xxhash/v2"

	"github.com/flowtrace/flowtrace/model"
)

// Column lists, in the order the encoders below write them.
const (
	eventColumns = "time, kind, system, destination, partition, message_id, operation, attempt, service, consumer_group, " +
		"trace_id, span_id, parent_span_id, links, keys, outcome, reason, body_size, duration_ns"
	hopColumns = "flow_id, hop_id, version, deleted, first_seen, parent_hop_id, system, producer, destination, consumer, " +
		"consumer_group, operation, message_id, trace_id, publish_time, deliver_time, settle_time, queue_wait_ns, " +
		"processing_ns, attempts, outcome, reason, counted"
	flowColumns = "flow_id, version, deleted, first_seen, name, status, start_time, end_time, duration_ns, hop_count, " +
		"retries, dead_letters, `keys.kind`, `keys.value`, critical_path"
	flowKeyColumns = "key, kind, flow_id, first_seen"
	backlogColumns = "time, system, broker, destination, consumer_group, depth, unacked, lag_messages, lag_seconds, " +
		"consumers, publish_rate, deliver_rate"
)

// bytesPerRow is a first guess at a row's encoded size, to size buffers once.
const bytesPerRow = 256

func (s *store) WriteEvents(ctx context.Context, events []model.Event) error {
	rows := rowBuffer{buf: make([]byte, 0, len(events)*bytesPerRow)}
	var keyNames, keyValues []string
	for i := range events {
		e := &events[i]
		rows.timestamp(e.Time)
		rows.str(string(e.Kind))
		rows.str(e.System)
		rows.str(e.Destination)
		rows.str(e.Partition)
		rows.str(e.MessageID)
		rows.str(e.Operation)
		rows.u64(uint64(e.Attempt))
		rows.str(e.Service)
		rows.str(e.ConsumerGroup)
		rows.str(e.TraceID)
		rows.str(e.SpanID)
		rows.str(e.ParentSpanID)
		rows.strArray(e.Links)
		keyNames, keyValues = splitKeys(e.Keys, keyNames[:0], keyValues[:0])
		rows.strMap(keyNames, keyValues)
		rows.str(e.Outcome)
		rows.str(e.Reason)
		rows.u64(e.BodySize)
		rows.i64(int64(e.Duration))
		rows.endRow()
	}
	return s.insert(ctx, "events", eventColumns, &rows)
}

func (s *store) WriteHops(ctx context.Context, hops []model.Hop) error {
	rows := rowBuffer{buf: make([]byte, 0, len(hops)*bytesPerRow)}
	for i := range hops {
		h := &hops[i]
		rows.str(h.FlowID)
		rows.str(h.HopID)
		rows.u64(h.Version)
		rows.boolean(h.Deleted)
		rows.timestamp(h.FirstSeen)
		rows.str(h.ParentHopID)
		rows.str(h.System)
		rows.str(h.Producer)
		rows.str(h.Destination)
		rows.str(h.Consumer)
		rows.str(h.ConsumerGroup)
		rows.str(h.Operation)
		rows.str(h.MessageID)
		rows.str(h.TraceID)
		rows.timestamp(h.PublishTime)
		rows.timestamp(h.DeliverTime)
		rows.timestamp(h.SettleTime)
		rows.i64(int64(h.QueueWait))
		rows.i64(int64(h.Processing))
		rows.u64(uint64(h.Attempts))
		rows.str(string(h.Outcome))
		rows.str(h.Reason)
		rows.boolean(h.Counted)
		rows.endRow()
	}
	return s.insert(ctx, "hops", hopColumns, &rows)
}

func (s *store) WriteFlows(ctx context.Context, flows []model.Flow) error {
	rows := rowBuffer{buf: make([]byte, 0, len(flows)*bytesPerRow)}
	keys := rowBuffer{}
	var keyNames, keyValues []string
	for i := range flows {
		f := &flows[i]
		rows.str(f.ID)
		rows.u64(f.Version)
		rows.boolean(f.Deleted)
		rows.timestamp(f.FirstSeen)
		rows.str(f.Name)
		rows.str(string(f.Status))
		rows.timestamp(f.Start)
		rows.timestamp(f.End)
		rows.i64(int64(f.Duration()))
		rows.u64(uint64(f.HopCount))
		rows.u64(uint64(f.Retries))
		rows.u64(uint64(f.DeadLetters))
		keyNames, keyValues = splitKeys(f.Keys, keyNames[:0], keyValues[:0])
		rows.strArray(keyNames)
		rows.strArray(keyValues)
		rows.strArray(f.CriticalPath)
		rows.endRow()
		if f.Deleted {
			continue
		}
		for _, k := range f.Keys {
			keys.str(k.Value)
			keys.str(k.Kind)
			keys.str(f.ID)
			keys.timestamp(f.FirstSeen)
			keys.endRow()
		}
	}
	if err := s.insert(ctx, "flows", flowColumns, &rows); err != nil {
		return err
	}
	return s.insert(ctx, "flow_keys", flowKeyColumns, &keys)
}

func (s *store) WriteBacklog(ctx context.Context, samples []model.BacklogSample) error {
	rows := rowBuffer{buf: make([]byte, 0, len(samples)*bytesPerRow)}
	for i := range samples {
		b := &samples[i]
		rows.timestamp(b.Time)
		rows.str(b.System)
		rows.str(b.Broker)
		rows.str(b.Destination)
		rows.str(b.ConsumerGroup)
		rows.i64(b.Depth)
		rows.i64(b.Unacked)
		rows.i64(b.LagMessages)
		rows.f64(b.LagSeconds)
		rows.i64(b.Consumers)
		rows.f64(b.PublishRate)
		rows.f64(b.DeliverRate)
		rows.endRow()
	}
	return s.insert(ctx, "backlog", backlogColumns, &rows)
}

// insert writes the encoded rows in one statement. The deduplication token is
// a hash of the rows, so writing the same batch again is a no-op for as long
// as the table remembers the token (the last 1000 inserts).
func (s *store) insert(ctx context.Context, table, columns string, rows *rowBuffer) error {
	if rows.rows == 0 {
		return nil
	}
	token := table + "-" + strconv.Itoa(rows.rows) + "-" + strconv.FormatUint(xxhash.Sum64(rows.buf), 16)
	// The materialized views fed by the table deduplicate too, or a replayed
	// batch would count twice in them.
	header := "INSERT INTO " + s.schema.name(table) + " (" + columns + ") SETTINGS insert_deduplication_token = '" + token +
		"', deduplicate_blocks_in_dependent_materialized_views = 1"
	if s.schema.Cluster != "" {
		// Insert synchronously so the token reaches the replicated tables.
		header += ", distributed_foreground_insert = 1"
	}
	statement := make([]byte, 0, len(header)+len(rows.buf)+32)
	statement = append(statement, header...)
	statement = append(statement, " FORMAT TabSeparated\n"...)
	statement = append(statement, rows.buf...)
	if err := s.exec(ctx, string(statement), nil); err != nil {
		return fmt.Errorf("insert %d rows into %s: %w", rows.rows, table, err)
	}
	return nil
}

// splitKeys appends the kinds and values of keys to the given slices.
func splitKeys(keys []model.Key, kinds, values []string) ([]string, []string) {
	for _, k := range keys {
		kinds = append(kinds, k.Kind)
		values = append(values, k.Value)
	}
	return kinds, values
}
