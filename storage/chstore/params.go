package chstore

// escapeParam puts a String value in the escaped text form ClickHouse parses
// query parameters in.
func escapeParam(s string) string {
	return string(appendEscaped(nil, s))
}

// arrayParam writes an Array(String) parameter value.
func arrayParam(values []string) string {
	buf := []byte{'['}
	for i, v := range values {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = appendQuoted(buf, v)
	}
	return string(append(buf, ']'))
}

// appendEscaped writes s escaped as in TabSeparated.
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

// appendQuoted writes s as a single-quoted literal inside an array.
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
