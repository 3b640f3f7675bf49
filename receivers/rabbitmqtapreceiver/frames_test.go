package rabbitmqtapreceiver

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// capturedFrame is one firehose delivery kept in testdata/frames.jsonl:
// its routing key, exchange and headers, with every header value tagged
// with its AMQP field type so it reads back exactly; bodies are synthetic.
type capturedFrame struct {
	RoutingKey string          `json:"rk"`
	Exchange   string          `json:"ex"`
	Headers    json.RawMessage `json:"headers"`
	Body       string          `json:"body"`
}

// frameRecordFile holds the captured frames.
var frameRecordFile = filepath.Join("testdata", "frames.jsonl")

// loadFrames reads the captured frames.
func loadFrames(t testing.TB) []amqp.Delivery {
	t.Helper()
	f, err := os.Open(frameRecordFile)
	require.NoError(t, err)
	defer f.Close()
	var out []amqp.Delivery
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var c capturedFrame
		require.NoError(t, json.Unmarshal(sc.Bytes(), &c))
		var typed any
		require.NoError(t, json.Unmarshal(c.Headers, &typed))
		h, err := untag(typed)
		require.NoError(t, err)
		table, ok := h.(amqp.Table)
		require.True(t, ok)
		out = append(out, amqp.Delivery{Exchange: c.Exchange, RoutingKey: c.RoutingKey, Headers: table, Body: []byte(c.Body)})
	}
	require.NoError(t, sc.Err())
	return out
}

// tag writes an AMQP field value as JSON with its type: {"<type>": value}.
func tag(v any) (any, error) {
	switch x := v.(type) {
	case nil:
		return map[string]any{"V": nil}, nil
	case bool:
		return map[string]any{"t": x}, nil
	case int8:
		return map[string]any{"b": x}, nil
	case uint8:
		return map[string]any{"B": x}, nil
	case int16:
		return map[string]any{"s": x}, nil
	case uint16:
		return map[string]any{"u": x}, nil
	case int32:
		return map[string]any{"I": x}, nil
	case uint32:
		return map[string]any{"i": x}, nil
	case int64:
		return map[string]any{"l": x}, nil
	case float32:
		return map[string]any{"f": x}, nil
	case float64:
		return map[string]any{"d": x}, nil
	case string:
		return map[string]any{"S": x}, nil
	case []byte:
		return map[string]any{"x": base64.StdEncoding.EncodeToString(x)}, nil
	case time.Time:
		return map[string]any{"T": x.Unix()}, nil
	case amqp.Decimal:
		return map[string]any{"D": []int64{int64(x.Scale), int64(x.Value)}}, nil
	case amqp.Table:
		m := map[string]any{}
		for k, e := range x {
			t, err := tag(e)
			if err != nil {
				return nil, err
			}
			m[k] = t
		}
		return map[string]any{"F": m}, nil
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			t, err := tag(e)
			if err != nil {
				return nil, err
			}
			a[i] = t
		}
		return map[string]any{"A": a}, nil
	}
	return nil, fmt.Errorf("field type %T", v)
}

// untag reads a value written by tag.
func untag(v any) (any, error) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return nil, fmt.Errorf("not a tagged value: %v", v)
	}
	for k, x := range m {
		num, _ := x.(float64)
		switch k {
		case "V":
			return nil, nil
		case "t":
			b, _ := x.(bool)
			return b, nil
		case "b":
			return int8(num), nil
		case "B":
			return uint8(num), nil
		case "s":
			return int16(num), nil
		case "u":
			return uint16(num), nil
		case "I":
			return int32(num), nil
		case "i":
			return uint32(num), nil
		case "l":
			return int64(num), nil
		case "f":
			return float32(num), nil
		case "d":
			return num, nil
		case "S":
			s, _ := x.(string)
			return s, nil
		case "x":
			s, _ := x.(string)
			return base64.StdEncoding.DecodeString(s)
		case "T":
			return time.Unix(int64(num), 0), nil
		case "D":
			a, _ := x.([]any)
			if len(a) != 2 {
				return nil, fmt.Errorf("decimal %v", x)
			}
			s, _ := a[0].(float64)
			n, _ := a[1].(float64)
			return amqp.Decimal{Scale: uint8(s), Value: int32(n)}, nil
		case "F":
			fields, _ := x.(map[string]any)
			t := amqp.Table{}
			for fk, fv := range fields {
				e, err := untag(fv)
				if err != nil {
					return nil, err
				}
				t[fk] = e
			}
			return t, nil
		case "A":
			list, _ := x.([]any)
			out := make([]any, len(list))
			for i, e := range list {
				var err error
				if out[i], err = untag(e); err != nil {
					return nil, err
				}
			}
			return out, nil
		}
		return nil, fmt.Errorf("type %q", k)
	}
	return nil, nil
}

// The fuzz targets read their input as a frame in a compact binary form
// in which every byte string is some frame, so mutations explore header
// shapes and types rather than syntax errors.
//
//	frame  = string(routing key) string(exchange) value(headers) string(body)
//	string = uvarint(length) bytes
//	value  = type byte, then: S x: string; t b B: 1 byte; s u: 2; I i f: 4;
//	         l d T: 8; D: 1+4; F: uvarint(n) n×(string value); A: uvarint(n)
//	         n×value; anything else: void

type fuzzReader struct {
	b     []byte
	depth int
}

func (r *fuzzReader) bytes(n int) []byte {
	n = min(n, len(r.b))
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *fuzzReader) uvarint() int {
	n, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.b = nil
		return 0
	}
	r.b = r.b[k:]
	return int(min(n, uint64(len(r.b))))
}

func (r *fuzzReader) str() string { return string(r.bytes(r.uvarint())) }

func (r *fuzzReader) fixed(n int) uint64 {
	var b [8]byte
	copy(b[8-n:], r.bytes(n))
	return binary.BigEndian.Uint64(b[:])
}

func (r *fuzzReader) value() any {
	if len(r.b) == 0 {
		return nil
	}
	t := r.bytes(1)[0]
	switch t {
	case 'S':
		return r.str()
	case 'x':
		return []byte(r.str())
	case 't':
		return r.fixed(1) != 0
	case 'b':
		return int8(r.fixed(1))
	case 'B':
		return uint8(r.fixed(1))
	case 's':
		return int16(r.fixed(2))
	case 'u':
		return uint16(r.fixed(2))
	case 'I':
		return int32(r.fixed(4))
	case 'i':
		return uint32(r.fixed(4))
	case 'f':
		return math.Float32frombits(uint32(r.fixed(4)))
	case 'l':
		return int64(r.fixed(8))
	case 'd':
		return math.Float64frombits(r.fixed(8))
	case 'T':
		return time.Unix(int64(r.fixed(8))%(1<<40), 0)
	case 'D':
		return amqp.Decimal{Scale: uint8(r.fixed(1)), Value: int32(r.fixed(4))}
	case 'F':
		if r.depth > 8 {
			return nil
		}
		r.depth++
		defer func() { r.depth-- }()
		n := r.uvarint()
		t := amqp.Table{}
		for i := 0; i < n && len(r.b) > 0; i++ {
			k := r.str()
			t[k] = r.value()
		}
		return t
	case 'A':
		if r.depth > 8 {
			return nil
		}
		r.depth++
		defer func() { r.depth-- }()
		n := r.uvarint()
		var a []any
		for i := 0; i < n && len(r.b) > 0; i++ {
			a = append(a, r.value())
		}
		return a
	}
	return nil
}

// readFuzzFrame reads a frame in the fuzz form.
func readFuzzFrame(data []byte) (routingKey, exchange string, headers amqp.Table, body []byte) {
	r := &fuzzReader{b: data}
	routingKey, exchange = r.str(), r.str()
	headers, _ = r.value().(amqp.Table)
	return routingKey, exchange, headers, []byte(r.str())
}

type fuzzWriter struct{ b []byte }

func (w *fuzzWriter) str(s string) {
	w.b = binary.AppendUvarint(w.b, uint64(len(s)))
	w.b = append(w.b, s...)
}

func (w *fuzzWriter) value(v any) {
	switch x := v.(type) {
	case string:
		w.b = append(w.b, 'S')
		w.str(x)
	case []byte:
		w.b = append(w.b, 'x')
		w.str(string(x))
	case bool:
		w.b = append(w.b, 't', 0)
		if x {
			w.b[len(w.b)-1] = 1
		}
	case int8:
		w.b = append(w.b, 'b', byte(x))
	case uint8:
		w.b = append(w.b, 'B', x)
	case int16:
		w.b = binary.BigEndian.AppendUint16(append(w.b, 's'), uint16(x))
	case uint16:
		w.b = binary.BigEndian.AppendUint16(append(w.b, 'u'), x)
	case int32:
		w.b = binary.BigEndian.AppendUint32(append(w.b, 'I'), uint32(x))
	case uint32:
		w.b = binary.BigEndian.AppendUint32(append(w.b, 'i'), x)
	case float32:
		w.b = binary.BigEndian.AppendUint32(append(w.b, 'f'), math.Float32bits(x))
	case int64:
		w.b = binary.BigEndian.AppendUint64(append(w.b, 'l'), uint64(x))
	case float64:
		w.b = binary.BigEndian.AppendUint64(append(w.b, 'd'), math.Float64bits(x))
	case time.Time:
		w.b = binary.BigEndian.AppendUint64(append(w.b, 'T'), uint64(x.Unix()))
	case amqp.Decimal:
		w.b = binary.BigEndian.AppendUint32(append(w.b, 'D', x.Scale), uint32(x.Value))
	case amqp.Table:
		w.b = append(w.b, 'F')
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		w.b = binary.AppendUvarint(w.b, uint64(len(keys)))
		for _, k := range keys {
			w.str(k)
			w.value(x[k])
		}
	case []any:
		w.b = append(w.b, 'A')
		w.b = binary.AppendUvarint(w.b, uint64(len(x)))
		for _, e := range x {
			w.value(e)
		}
	default:
		w.b = append(w.b, 'V')
	}
}

// fuzzFrame writes a frame in the fuzz form.
func fuzzFrame(d *amqp.Delivery) []byte {
	w := &fuzzWriter{}
	w.str(d.RoutingKey)
	w.str(d.Exchange)
	w.value(d.Headers)
	w.str(string(d.Body))
	return w.b
}

// fuzzTable writes a table in the fuzz form.
func fuzzTable(t amqp.Table) []byte {
	w := &fuzzWriter{}
	w.value(t)
	return w.b
}
