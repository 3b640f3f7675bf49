package clickhouseexporter

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	xstorage "go.opentelemetry.io/collector/extension/xextension/storage"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/correlator/records"
	"github.com/flowtrace/flowtrace/correlator/spanevent"
	"github.com/flowtrace/flowtrace/exporters/clickhouseexporter/internal/metadata"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/model/modelcodec"
	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/flowstorage"
)

// chExporter writes to the storage backend found at Start. The queue calls its
// push functions from several goroutines; each call works on its own data.
type chExporter struct {
	cfg    *Config
	logger *zap.Logger
	store  storage.Store

	// converters reuse span adapters across pushes.
	converters sync.Pool

	// id and signal name the replay guard's storage, which start opens when
	// the sending queue is persistent.
	id     component.ID
	signal string
	guard  *replayGuard

	rejected metric.Int64Counter // records, spans and samples refused as malformed
	// malformed counts span attributes of the wrong form, read as absent:
	// the spans are written all the same.
	malformed metric.Int64Counter
}

func newExporter(cfg *Config, set component.TelemetrySettings) (*chExporter, error) {
	e := &chExporter{cfg: cfg, logger: set.Logger}
	e.converters.New = func() any { return spanevent.New(cfg.Spans) }
	meter := set.MeterProvider.Meter(metadata.ScopeName)
	var err error
	e.rejected, err = meter.Int64Counter("flowtrace.exporter.rejected",
		metric.WithUnit("{item}"),
		metric.WithDescription("Records, spans and samples the ClickHouse exporter refused as malformed; never retried."))
	if err != nil {
		return nil, err
	}
	e.malformed, err = meter.Int64Counter("flowtrace.exporter.malformed_attributes",
		metric.WithUnit("{attribute}"),
		metric.WithDescription("Span attributes of the wrong form, read as absent; the spans are written."))
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (e *chExporter) start(ctx context.Context, host component.Host) error {
	store, err := flowstorage.GetStore(host, e.cfg.Backend)
	if err != nil {
		return fmt.Errorf("clickhouse exporter: %w", err)
	}
	e.store = store
	queue := e.cfg.QueueConfig.Get()
	if queue == nil || queue.StorageID == nil {
		return nil // nothing survives a restart, so nothing is replayed
	}
	ext, ok := host.GetExtensions()[*queue.StorageID].(xstorage.Extension)
	if !ok {
		return fmt.Errorf("clickhouse exporter: sending_queue::storage: %s is not a storage extension", queue.StorageID)
	}
	client, err := ext.GetClient(ctx, component.KindExporter, e.id, "replay_"+e.signal)
	if err != nil {
		return fmt.Errorf("clickhouse exporter: %w", err)
	}
	if e.guard, err = newReplayGuard(ctx, client); err != nil {
		return errors.Join(fmt.Errorf("clickhouse exporter: %w", err), client.Close(ctx))
	}
	return nil
}

func (e *chExporter) shutdown(ctx context.Context) error {
	if e.guard != nil {
		return e.guard.close(ctx)
	}
	return nil
}

// eventRows reads messaging spans into events, encoded as they are read;
// other spans are skipped. Attributes of the wrong type are read as
// absent, and counted.
func (e *chExporter) eventRows(ctx context.Context, td ptrace.Traces) (*rows, []error) {
	conv := e.converters.Get().(*spanevent.Converter)
	defer e.converters.Put(conv)
	events := section{kind: eventRows, data: make([]byte, 0, bytesPerEvent*td.SpanCount())}
	stats := conv.Convert(td, func(ev *model.Event) {
		events.data = modelcodec.AppendEvent(events.data, ev)
		events.count++
	})
	if stats.Malformed > 0 {
		e.malformed.Add(ctx, int64(stats.Malformed))
	}
	r := &rows{}
	r.addSection(events)
	return r, nil
}

// bytesPerEvent is a first guess at an event's encoded size.
const bytesPerEvent = 160

// recordRows reads hop and flow records, one by one or in batches;
// malformed ones (a batch as one) are returned apart.
func (e *chExporter) recordRows(_ context.Context, ld plog.Logs) (*rows, []error) {
	r := &rows{}
	var bad []error
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			lrs := sls.At(j).LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				lr := lrs.At(k)
				switch records.Type(lr) {
				case records.TypeHop:
					h, err := records.DecodeHop(lr)
					if err != nil {
						bad = append(bad, err)
						continue
					}
					r.hops = append(r.hops, h)
				case records.TypeFlow:
					f, err := records.DecodeFlow(lr)
					if err != nil {
						bad = append(bad, err)
						continue
					}
					r.flows = append(r.flows, f)
				case records.TypeBatch:
					b, err := records.ReadBatch(lr)
					if err != nil {
						bad = append(bad, err)
						continue
					}
					r.addSection(section{hopRows, b.HopCount, b.Hops})
					r.addSection(section{flowRows, b.FlowCount, b.Flows})
				default:
					bad = append(bad, records.ErrNotARecord)
				}
			}
		}
	}
	return r, bad
}

// backlogRows reads the flowtrace.backlog.* metrics into samples; other
// metrics are skipped, malformed points returned apart.
func (e *chExporter) backlogRows(_ context.Context, md pmetric.Metrics) (*rows, []error) {
	samples, bad := backlogSamples(md)
	return &rows{backlog: samples}, bad
}

// push writes a batch of rows. A retried batch rewrites what an earlier
// attempt wrote; storage drops the repeated blocks. With a persistent
// queue, the replay guard sees that a replay after a restart does too.
func (e *chExporter) push(ctx context.Context, req xexporterhelper.Request) error {
	r := req.(*rows)
	if e.guard == nil {
		return e.write(ctx, r)
	}
	if err := e.guard.recover(ctx, e.write, e.logger); err != nil {
		return err
	}
	if r.items == nil { // before any gather; a retry finds them here
		r.items = r.itemHashes()
	}
	batch := e.guard.dropDone(r)
	if batch.ItemsCount() == 0 {
		return nil
	}
	if err := e.gather(ctx, batch); err != nil {
		return err
	}
	key, err := e.guard.begin(ctx, batch, r.items)
	if err != nil {
		return err
	}
	if err := e.write(ctx, batch); err != nil {
		return err
	}
	return e.guard.finish(ctx, key, r.items)
}

// gather puts a batch's rows together; one that cannot be is refused.
func (e *chExporter) gather(ctx context.Context, r *rows) error {
	if err := r.gather(); err != nil {
		e.rejected.Add(ctx, int64(r.ItemsCount()))
		return consumererror.NewPermanent(err)
	}
	return nil
}

// write writes a batch of rows, table by table.
func (e *chExporter) write(ctx context.Context, r *rows) error {
	if err := e.gather(ctx, r); err != nil {
		return err
	}
	if len(r.events) > 0 {
		if err := e.store.WriteEvents(ctx, r.events); err != nil {
			return err
		}
	}
	if len(r.hops) > 0 {
		if err := e.store.WriteHops(ctx, r.hops); err != nil {
			return err
		}
	}
	if len(r.flows) > 0 {
		if err := e.store.WriteFlows(ctx, r.flows); err != nil {
			return err
		}
	}
	if len(r.backlog) > 0 {
		return e.store.WriteBacklog(ctx, r.backlog)
	}
	return nil
}

// enqueue hands rows to the sending queue through consume, which passes
// them in the context to queued; nothing is queued for no rows. Malformed
// items are refused once the rest is queued.
func (e *chExporter) enqueue(ctx context.Context, r *rows, bad []error, consume func(context.Context) error) error {
	if r.ItemsCount() > 0 {
		if err := consume(context.WithValue(ctx, rowsKey{}, r)); err != nil {
			return err // retryable or not, as the queue says; the client sends all again
		}
	}
	return e.refuse(ctx, bad)
}

type rowsKey struct{}

// queued is the exporter helper's converter: the rows enqueue read.
func queued[T any](ctx context.Context, _ T) (xexporterhelper.Request, error) {
	r, ok := ctx.Value(rowsKey{}).(*rows)
	if !ok {
		return nil, errors.New("clickhouse exporter: data reached the queue unread")
	}
	return r, nil
}

// refuse counts malformed items and reports them as a permanent error, so
// the queue neither retries them nor drops them silently.
func (e *chExporter) refuse(ctx context.Context, bad []error) error {
	if len(bad) == 0 {
		return nil
	}
	e.rejected.Add(ctx, int64(len(bad)))
	e.logger.Warn("Refused malformed items", zap.Int("count", len(bad)), zap.Error(bad[0]))
	return consumererror.NewPermanent(fmt.Errorf("%d malformed, the first: %w", len(bad), bad[0]))
}
