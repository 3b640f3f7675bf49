package records

import (
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/model/modelcodec"
)

// A batch record's body is a format byte, the hop and flow counts, then
// each hop and each flow in modelcodec's encoding.
const batchFormat = 1

// AppendBatch appends hop and flow versions as one batch record.
func AppendBatch(records plog.LogRecordSlice, hops []model.Hop, flows []model.Flow, now time.Time) {
	r := records.AppendEmpty()
	r.SetTimestamp(pcommon.NewTimestampFromTime(now))
	r.Attributes().PutStr(KeyType, TypeBatch)
	buf := make([]byte, 0, 160*len(hops)+120*len(flows)+16)
	buf = append(buf, batchFormat)
	buf = modelcodec.AppendUvarint(buf, uint64(len(hops)))
	buf = modelcodec.AppendUvarint(buf, uint64(len(flows)))
	for i := range hops {
		buf = modelcodec.AppendHop(buf, &hops[i])
	}
	for i := range flows {
		buf = modelcodec.AppendFlow(buf, &flows[i])
	}
	r.Body().SetEmptyBytes().FromRaw(buf)
}

var errBadBatch = errors.New("batch body is not a flowtrace batch")

// DecodeBatch reads a batch record's hop and flow versions, appended to
// hops and flows. A body that does not decode whole is refused whole.
func DecodeBatch(record plog.LogRecord, hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow, error) {
	if got := Type(record); got != TypeBatch {
		return hops, flows, fmt.Errorf("decode batch record: %s: want %q, got %q", KeyType, TypeBatch, got)
	}
	if record.Body().Type() != pcommon.ValueTypeBytes {
		return hops, flows, fmt.Errorf("decode batch record: body: want Bytes, got %s", record.Body().Type())
	}
	body := record.Body().Bytes().AsRaw()
	if len(body) == 0 || body[0] != batchFormat {
		return hops, flows, fmt.Errorf("decode batch record: %w", errBadBatch)
	}
	d := modelcodec.NewDecoder(body[1:])
	nHops, nFlows := d.Count(), d.Count()
	if nHops+nFlows > d.Len() {
		return hops, flows, fmt.Errorf("decode batch record: %w", modelcodec.ErrCorrupt)
	}
	keptHops, keptFlows := len(hops), len(flows)
	for range nHops {
		hops = append(hops, model.Hop{})
		d.Hop(&hops[len(hops)-1])
	}
	for range nFlows {
		flows = append(flows, model.Flow{})
		d.Flow(&flows[len(flows)-1])
	}
	if d.Err() != nil || d.Len() != 0 {
		return hops[:keptHops], flows[:keptFlows], fmt.Errorf("decode batch record: %w", modelcodec.ErrCorrupt)
	}
	return hops, flows, nil
}
