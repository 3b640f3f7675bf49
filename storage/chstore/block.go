package chstore

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// Block is a batch of rows held in columns, the way ClickHouse stores and
// ships them. Writes build one Block per table.
type Block struct {
	Rows    int
	Columns []Column
}

// Column is one column of a Block. Data is a slice with one element per row:
// []string, []uint8, []uint16, []uint32, []uint64, []int64, []float64, or
// [][]string for Array(String).
type Column struct {
	Name string
	// Type is the ClickHouse type the data is sent as. It may differ from the
	// table's column type where ClickHouse converts on insert (String into
	// LowCardinality(String)).
	Type string
	Data any
}

// Column types the writes send.
const (
	typeString      = "String"
	typeStringArray = "Array(String)"
	typeTime        = "DateTime64(9, 'UTC')" // Data is []int64 nanoseconds since the epoch
	typeUInt8       = "UInt8"
	typeUInt16      = "UInt16"
	typeUInt32      = "UInt32"
	typeUInt64      = "UInt64"
	typeInt64       = "Int64"
	typeFloat64     = "Float64"
)

// IsTime reports whether the column holds DateTime64(9) nanoseconds.
func (c Column) IsTime() bool { return c.Type == typeTime }

// Names lists the column names, comma separated, for an INSERT statement.
func (b *Block) Names() string {
	names := make([]byte, 0, 16*len(b.Columns))
	for i, c := range b.Columns {
		if i > 0 {
			names = append(names, ", "...)
		}
		names = append(names, '`')
		names = append(names, c.Name...)
		names = append(names, '`')
	}
	return string(names)
}

// AppendNative appends the block in ClickHouse's Native format: column and
// row counts, then each column's name, type and values.
func (b *Block) AppendNative(buf []byte) ([]byte, error) {
	buf = binary.AppendUvarint(buf, uint64(len(b.Columns)))
	buf = binary.AppendUvarint(buf, uint64(b.Rows))
	for _, c := range b.Columns {
		buf = appendString(buf, c.Name)
		buf = appendString(buf, c.Type)
		var n int
		switch data := c.Data.(type) {
		case []string:
			n = len(data)
			for _, s := range data {
				buf = appendString(buf, s)
			}
		case [][]string:
			n = len(data)
			var offset uint64
			for _, values := range data {
				offset += uint64(len(values))
				buf = binary.LittleEndian.AppendUint64(buf, offset)
			}
			for _, values := range data {
				for _, s := range values {
					buf = appendString(buf, s)
				}
			}
		case []uint8:
			n = len(data)
			buf = append(buf, data...)
		case []uint16:
			n = len(data)
			for _, v := range data {
				buf = binary.LittleEndian.AppendUint16(buf, v)
			}
		case []uint32:
			n = len(data)
			for _, v := range data {
				buf = binary.LittleEndian.AppendUint32(buf, v)
			}
		case []uint64:
			n = len(data)
			for _, v := range data {
				buf = binary.LittleEndian.AppendUint64(buf, v)
			}
		case []int64:
			n = len(data)
			for _, v := range data {
				buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
			}
		case []float64:
			n = len(data)
			for _, v := range data {
				buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(v))
			}
		default:
			return nil, fmt.Errorf("column %s: unsupported data %T", c.Name, c.Data)
		}
		if n != b.Rows {
			return nil, fmt.Errorf("column %s: %d values for %d rows", c.Name, n, b.Rows)
		}
	}
	return buf, nil
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// nanos is how a time is stored: nanoseconds since the epoch, with 0 (the
// epoch itself) for "not observed" and for times before it.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(t.UnixNano(), 0)
}
