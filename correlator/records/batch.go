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

// Batch is a batch record's hop and flow versions, still encoded: Hops and
// Flows hold HopCount and FlowCount versions in modelcodec's encoding, one
// after another.
type Batch struct {
	HopCount, FlowCount int
	Hops, Flows         []byte
}

// ReadBatch checks that a batch record's body decodes whole and returns its
// versions still encoded, for a consumer that stores them as they are: the
// check allocates nothing and costs a fraction of decoding. Hops and Flows
// share one copy of the record's body.
func ReadBatch(record plog.LogRecord) (Batch, error) {
	body, err := batchBody(record)
	if err != nil {
		return Batch{}, err
	}
	c := modelcodec.NewChecker(body)
	b := Batch{HopCount: c.Count(), FlowCount: c.Count()}
	if b.HopCount+b.FlowCount > c.Len() {
		return Batch{}, fmt.Errorf("decode batch record: %w", modelcodec.ErrCorrupt)
	}
	hopsAt := len(body) - c.Len()
	var hop model.Hop
	for range b.HopCount {
		c.Hop(&hop)
	}
	flowsAt := len(body) - c.Len()
	var flow model.Flow
	for range b.FlowCount {
		c.Flow(&flow)
	}
	if c.Err() != nil || c.Len() != 0 {
		return Batch{}, fmt.Errorf("decode batch record: %w", modelcodec.ErrCorrupt)
	}
	b.Hops, b.Flows = body[hopsAt:flowsAt:flowsAt], body[flowsAt:]
	return b, nil
}

// DecodeBatch reads a batch record's hop and flow versions, appended to
// hops and flows. A body that does not decode whole is refused whole.
func DecodeBatch(record plog.LogRecord, hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow, error) {
	body, err := batchBody(record)
	if err != nil {
		return hops, flows, err
	}
	d := modelcodec.NewDecoder(body)
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

// batchBody is a batch record's body after its format byte.
func batchBody(record plog.LogRecord) ([]byte, error) {
	if got := Type(record); got != TypeBatch {
		return nil, fmt.Errorf("decode batch record: %s: want %q, got %q", KeyType, TypeBatch, got)
	}
	if record.Body().Type() != pcommon.ValueTypeBytes {
		return nil, fmt.Errorf("decode batch record: body: want Bytes, got %s", record.Body().Type())
	}
	body := record.Body().Bytes().AsRaw()
	if len(body) == 0 || body[0] != batchFormat {
		return nil, fmt.Errorf("decode batch record: %w", errBadBatch)
	}
	return body[1:], nil
}
