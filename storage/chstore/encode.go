package chstore

import (
	"strconv"
	"time"
)

// rowBuffer encodes rows in ClickHouse's TabSeparated format. Fields are
// appended in column order; endRow finishes a row.
//
// Owned by one write call; not safe for concurrent use.
type rowBuffer struct {
	buf  []byte
	rows int
}

func (b *rowBuffer) sep() {
	b.buf = append(b.buf, '\t')
}

// endRow replaces the separator after the last field with a newline.
func (b *rowBuffer) endRow() {
	b.buf[len(b.buf)-1] = '\n'
	b.rows++
}

func (b *rowBuffer) str(s string) {
	b.buf = appendEscaped(b.buf, s)
	b.sep()
}

func (b *rowBuffer) u64(v uint64) {
	b.buf = strconv.AppendUint(b.buf, v, 10)
	b.sep()
}

func (b *rowBuffer) i64(v int64) {
	b.buf = strconv.AppendInt(b.buf, v, 10)
	b.sep()
}

func (b *rowBuffer) f64(v float64) {
	b.buf = strconv.AppendFloat(b.buf, v, 'g', -1, 64)
	b.sep()
}

func (b *rowBuffer) boolean(v bool) {
	if v {
		b.buf = append(b.buf, '1')
	} else {
		b.buf = append(b.buf, '0')
	}
	b.sep()
}

// minTextTimestamp is the smallest Unix time ClickHouse reads as a timestamp
// in text: shorter digit runs are taken for dates.
const minTextTimestamp = 1_000_000_000

// timestamp writes a DateTime64(9) as seconds.nanoseconds. The zero time, and
// any time before 2001-09-09 (which ClickHouse would misread), is written as
// the epoch, which the schema uses for "not observed".
func (b *rowBuffer) timestamp(t time.Time) {
	sec := t.Unix()
	if t.IsZero() || sec < minTextTimestamp {
		b.buf = append(b.buf, "1970-01-01 00:00:00"...)
		b.sep()
		return
	}
	b.buf = strconv.AppendInt(b.buf, sec, 10)
	nanos := t.Nanosecond()
	b.buf = append(b.buf, '.')
	for div := 100_000_000; div > 0; div /= 10 {
		b.buf = append(b.buf, byte('0'+nanos/div%10))
	}
	b.sep()
}

func (b *rowBuffer) strArray(values []string) {
	b.buf = append(b.buf, '[')
	for i, v := range values {
		if i > 0 {
			b.buf = append(b.buf, ',')
		}
		b.buf = appendQuoted(b.buf, v)
	}
	b.buf = append(b.buf, ']')
	b.sep()
}

// strMap writes a Map(String, String) from parallel key and value slices.
func (b *rowBuffer) strMap(keys, values []string) {
	b.buf = append(b.buf, '{')
	for i := range keys {
		if i > 0 {
			b.buf = append(b.buf, ',')
		}
		b.buf = appendQuoted(b.buf, keys[i])
		b.buf = append(b.buf, ':')
		b.buf = appendQuoted(b.buf, values[i])
	}
	b.buf = append(b.buf, '}')
	b.sep()
}

// appendEscaped writes s as a TabSeparated field. A NUL byte is escaped too:
// the embedded engine passes the statement as a C string.
func appendEscaped(buf []byte, s string) []byte {
	start := 0
	for i := 0; i < len(s); i++ {
		esc := escapeByte(s[i])
		if esc == 0 {
			continue
		}
		buf = append(buf, s[start:i]...)
		buf = append(buf, '\\', esc)
		start = i + 1
	}
	return append(buf, s[start:]...)
}

// appendQuoted writes s as a single-quoted literal inside an array or map.
func appendQuoted(buf []byte, s string) []byte {
	buf = append(buf, '\'')
	start := 0
	for i := 0; i < len(s); i++ {
		esc := escapeByte(s[i])
		if esc == 0 && s[i] == '\'' {
			esc = '\''
		}
		if esc == 0 {
			continue
		}
		buf = append(buf, s[start:i]...)
		buf = append(buf, '\\', esc)
		start = i + 1
	}
	buf = append(buf, s[start:]...)
	return append(buf, '\'')
}

// escapeByte returns the letter after the backslash that stands for c, or 0
// when c needs no escape.
func escapeByte(c byte) byte {
	switch c {
	case '\\':
		return '\\'
	case '\t':
		return 't'
	case '\n':
		return 'n'
	case '\r':
		return 'r'
	case 0:
		return '0'
	case '\b':
		return 'b'
	case '\f':
		return 'f'
	}
	return 0
}
