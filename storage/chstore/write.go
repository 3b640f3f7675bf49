package chstore

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
)

func (s *store) WriteEvents(ctx context.Context, events []model.Event) error {
	n := len(events)
	c := newColumns()
	defer c.release()
	var (
		times         = take(&c.int64s, n)
		kinds         = take(&c.strings, n)
		systems       = take(&c.strings, n)
		destinations  = take(&c.strings, n)
		partitions    = take(&c.strings, n)
		messageIDs    = take(&c.strings, n)
		operations    = take(&c.strings, n)
		attempts      = take(&c.uint16s, n)
		services      = take(&c.strings, n)
		groups        = take(&c.strings, n)
		traceIDs      = take(&c.strings, n)
		spanIDs       = take(&c.strings, n)
		parentSpanIDs = take(&c.strings, n)
		links         = take(&c.stringArrays, n)
		keyKinds      = take(&c.stringArrays, n)
		keyValues     = take(&c.stringArrays, n)
		outcomes      = take(&c.strings, n)
		reasons       = take(&c.strings, n)
		bodySizes     = take(&c.uint64s, n)
		durations     = take(&c.int64s, n)
	)
	for i := range events {
		e := &events[i]
		times[i] = nanos(e.Time)
		kinds[i] = string(e.Kind)
		systems[i] = e.System
		destinations[i] = e.Destination
		partitions[i] = e.Partition
		messageIDs[i] = e.MessageID
		operations[i] = e.Operation
		attempts[i] = e.Attempt
		services[i] = e.Service
		groups[i] = e.ConsumerGroup
		traceIDs[i] = e.TraceID
		spanIDs[i] = e.SpanID
		parentSpanIDs[i] = e.ParentSpanID
		links[i] = linkStrings(e.Links, c)
		keyKinds[i], keyValues[i] = splitKeys(e.Keys, c)
		outcomes[i] = e.Outcome
		reasons[i] = e.Reason
		bodySizes[i] = e.BodySize
		durations[i] = int64(e.Duration)
	}
	return s.insert(ctx, "events", &Block{Rows: n, Columns: []Column{
		{"time", typeTime, times},
		{"kind", typeString, kinds},
		{"system", typeString, systems},
		{"destination", typeString, destinations},
		{"partition", typeString, partitions},
		{"message_id", typeString, messageIDs},
		{"operation", typeString, operations},
		{"attempt", typeUInt16, attempts},
		{"service", typeString, services},
		{"consumer_group", typeString, groups},
		{"trace_id", typeString, traceIDs},
		{"span_id", typeString, spanIDs},
		{"parent_span_id", typeString, parentSpanIDs},
		{"links", typeStringArray, links},
		{"keys.kind", typeStringArray, keyKinds},
		{"keys.value", typeStringArray, keyValues},
		{"outcome", typeString, outcomes},
		{"reason", typeString, reasons},
		{"body_size", typeUInt64, bodySizes},
		{"duration_ns", typeInt64, durations},
	}})
}

func (s *store) WriteHops(ctx context.Context, hops []model.Hop) error {
	n := len(hops)
	c := newColumns()
	defer c.release()
	var (
		flowIDs      = take(&c.strings, n)
		hopIDs       = take(&c.strings, n)
		versions     = take(&c.uint64s, n)
		deleted      = take(&c.uint8s, n)
		firstSeen    = take(&c.int64s, n)
		parentHopIDs = take(&c.strings, n)
		systems      = take(&c.strings, n)
		producers    = take(&c.strings, n)
		destinations = take(&c.strings, n)
		consumers    = take(&c.strings, n)
		groups       = take(&c.strings, n)
		operations   = take(&c.strings, n)
		messageIDs   = take(&c.strings, n)
		traceIDs     = take(&c.strings, n)
		publishTimes = take(&c.int64s, n)
		deliverTimes = take(&c.int64s, n)
		settleTimes  = take(&c.int64s, n)
		queueWaits   = take(&c.int64s, n)
		processing   = take(&c.int64s, n)
		attempts     = take(&c.uint16s, n)
		outcomes     = take(&c.strings, n)
		reasons      = take(&c.strings, n)
		counted      = take(&c.uint8s, n)
	)
	for i := range hops {
		h := &hops[i]
		flowIDs[i] = h.FlowID
		hopIDs[i] = h.HopID
		versions[i] = h.Version
		deleted[i] = flag(h.Deleted)
		firstSeen[i] = nanos(h.FirstSeen)
		parentHopIDs[i] = h.ParentHopID
		systems[i] = h.System
		producers[i] = h.Producer
		destinations[i] = h.Destination
		consumers[i] = h.Consumer
		groups[i] = h.ConsumerGroup
		operations[i] = h.Operation
		messageIDs[i] = h.MessageID
		traceIDs[i] = h.TraceID
		publishTimes[i] = nanos(h.PublishTime)
		deliverTimes[i] = nanos(h.DeliverTime)
		settleTimes[i] = nanos(h.SettleTime)
		queueWaits[i] = int64(h.QueueWait)
		processing[i] = int64(h.Processing)
		attempts[i] = h.Attempts
		outcomes[i] = string(h.Outcome)
		reasons[i] = h.Reason
		counted[i] = flag(h.Counted)
	}
	return s.insert(ctx, "hops", &Block{Rows: n, Columns: []Column{
		{"flow_id", typeString, flowIDs},
		{"hop_id", typeString, hopIDs},
		{"version", typeUInt64, versions},
		{"deleted", typeUInt8, deleted},
		{"first_seen", typeTime, firstSeen},
		{"parent_hop_id", typeString, parentHopIDs},
		{"system", typeString, systems},
		{"producer", typeString, producers},
		{"destination", typeString, destinations},
		{"consumer", typeString, consumers},
		{"consumer_group", typeString, groups},
		{"operation", typeString, operations},
		{"message_id", typeString, messageIDs},
		{"trace_id", typeString, traceIDs},
		{"publish_time", typeTime, publishTimes},
		{"deliver_time", typeTime, deliverTimes},
		{"settle_time", typeTime, settleTimes},
		{"queue_wait_ns", typeInt64, queueWaits},
		{"processing_ns", typeInt64, processing},
		{"attempts", typeUInt16, attempts},
		{"outcome", typeString, outcomes},
		{"reason", typeString, reasons},
		{"counted", typeUInt8, counted},
	}})
}

func (s *store) WriteFlows(ctx context.Context, flows []model.Flow) error {
	n := len(flows)
	c := newColumns()
	defer c.release()
	var (
		ids          = take(&c.strings, n)
		versions     = take(&c.uint64s, n)
		deleted      = take(&c.uint8s, n)
		firstSeen    = take(&c.int64s, n)
		names        = take(&c.strings, n)
		statuses     = take(&c.strings, n)
		starts       = take(&c.int64s, n)
		ends         = take(&c.int64s, n)
		durations    = take(&c.int64s, n)
		hopCounts    = take(&c.uint32s, n)
		retries      = take(&c.uint32s, n)
		deadLetters  = take(&c.uint32s, n)
		keyKinds     = take(&c.stringArrays, n)
		keyValues    = take(&c.stringArrays, n)
		criticalPath = take(&c.stringArrays, n)
	)
	for i := range flows {
		f := &flows[i]
		ids[i] = f.ID
		versions[i] = f.Version
		deleted[i] = flag(f.Deleted)
		firstSeen[i] = nanos(f.FirstSeen)
		names[i] = f.Name
		statuses[i] = string(f.Status)
		starts[i] = nanos(f.Start)
		ends[i] = nanos(f.End)
		durations[i] = int64(f.Duration())
		hopCounts[i] = f.HopCount
		retries[i] = f.Retries
		deadLetters[i] = f.DeadLetters
		keyKinds[i], keyValues[i] = splitKeys(f.Keys, c)
		criticalPath[i] = f.CriticalPath
	}
	return s.insert(ctx, "flows", &Block{Rows: n, Columns: []Column{
		{"flow_id", typeString, ids},
		{"version", typeUInt64, versions},
		{"deleted", typeUInt8, deleted},
		{"first_seen", typeTime, firstSeen},
		{"name", typeString, names},
		{"status", typeString, statuses},
		{"start_time", typeTime, starts},
		{"end_time", typeTime, ends},
		{"duration_ns", typeInt64, durations},
		{"hop_count", typeUInt32, hopCounts},
		{"retries", typeUInt32, retries},
		{"dead_letters", typeUInt32, deadLetters},
		{"keys.kind", typeStringArray, keyKinds},
		{"keys.value", typeStringArray, keyValues},
		{"critical_path", typeStringArray, criticalPath},
	}})
}

func (s *store) WriteBacklog(ctx context.Context, samples []model.BacklogSample) error {
	n := len(samples)
	c := newColumns()
	defer c.release()
	var (
		times        = take(&c.int64s, n)
		systems      = take(&c.strings, n)
		brokers      = take(&c.strings, n)
		destinations = take(&c.strings, n)
		groups       = take(&c.strings, n)
		depths       = take(&c.int64s, n)
		unacked      = take(&c.int64s, n)
		lagMessages  = take(&c.int64s, n)
		lagSeconds   = take(&c.float64s, n)
		consumers    = take(&c.int64s, n)
		publishRates = take(&c.float64s, n)
		deliverRates = take(&c.float64s, n)
	)
	for i := range samples {
		b := &samples[i]
		times[i] = nanos(b.Time)
		systems[i] = b.System
		brokers[i] = b.Broker
		destinations[i] = b.Destination
		groups[i] = b.ConsumerGroup
		depths[i] = b.Depth
		unacked[i] = b.Unacked
		lagMessages[i] = b.LagMessages
		lagSeconds[i] = b.LagSeconds
		consumers[i] = b.Consumers
		publishRates[i] = b.PublishRate
		deliverRates[i] = b.DeliverRate
	}
	return s.insert(ctx, "backlog", &Block{Rows: n, Columns: []Column{
		{"time", typeTime, times},
		{"system", typeString, systems},
		{"broker", typeString, brokers},
		{"destination", typeString, destinations},
		{"consumer_group", typeString, groups},
		{"depth", typeInt64, depths},
		{"unacked", typeInt64, unacked},
		{"lag_messages", typeInt64, lagMessages},
		{"lag_seconds", typeFloat64, lagSeconds},
		{"consumers", typeInt64, consumers},
		{"publish_rate", typeFloat64, publishRates},
		{"deliver_rate", typeFloat64, deliverRates},
	}})
}

// insert writes a block in one INSERT. The deduplication token is a hash of
// the block's content, so writing the same batch again is a no-op for as long
// as the table remembers the token (its last 1000 inserts).
func (s *store) insert(ctx context.Context, table string, block *Block) error {
	if block.Rows == 0 {
		return nil
	}
	buf, _ := nativeBuffers.Get().(*[]byte)
	if buf == nil {
		buf = new([]byte)
	}
	native, err := block.AppendNative(slices.Grow((*buf)[:0], block.Rows*bytesPerRow))
	defer func() {
		*buf = native[:0]
		nativeBuffers.Put(buf)
	}()
	if err != nil {
		return fmt.Errorf("insert into %s: %w", table, err)
	}
	token := table + "-" + strconv.Itoa(block.Rows) + "-" + strconv.FormatUint(xxhash.Sum64(native), 16)
	settings := []Setting{
		{"insert_deduplication_token", token},
		// The materialized views fed by the table deduplicate too, or a
		// replayed batch would count twice in them.
		{"deduplicate_blocks_in_dependent_materialized_views", "1"},
		// Tables are partitioned by day of the rows' own times, and a batch
		// with spans from clients with bad clocks, or a backfill, can span
		// more than the 100 partitions ClickHouse allows an insert by
		// default: refused, it would be retried and then dropped whole.
		{"max_partitions_per_insert_block", "0"},
	}
	if s.schema.Cluster != "" {
		// Insert synchronously so the token reaches the replicated tables.
		settings = append(settings, Setting{"distributed_foreground_insert", "1"})
	}
	if s.closed.Load() {
		return storage.ErrClosed
	}
	err = s.conn.Insert(ctx, &Insert{Table: s.schema.name(table), Block: block, Native: native, Settings: settings})
	if err != nil {
		return fmt.Errorf("insert %d rows into %s: %w", block.Rows, table, err)
	}
	return nil
}

// bytesPerRow is a first guess at a row's encoded size, to size buffers once.
const bytesPerRow = 200

// nativeBuffers are the buffers inserts encode their blocks into, reused:
// a block of 40,000 events takes megabytes, and a new buffer for each was a
// twentieth of all the bytes the process allocated under load, in memory
// the kernel had to fault in afresh.
var nativeBuffers sync.Pool // of *[]byte

func flag(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// linkStrings writes span refs as "<trace id>-<span id>".
func linkStrings(links []model.SpanRef, c *columns) []string {
	if len(links) == 0 {
		return nil
	}
	out := take(&c.strings, len(links))
	for i, l := range links {
		out[i] = l.String()
	}
	return out
}

// splitKeys returns the kinds and values of keys as parallel slices.
func splitKeys(keys []model.Key, c *columns) (kinds, values []string) {
	if len(keys) == 0 {
		return nil, nil
	}
	kinds, values = take(&c.strings, len(keys)), take(&c.strings, len(keys))
	for i, k := range keys {
		kinds[i], values[i] = k.Kind, k.Value
	}
	return kinds, values
}
