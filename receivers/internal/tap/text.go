package tap

import (
	"strings"
	"unicode/utf8"
)

// MaxText bounds a broker-supplied string put on a span: an id, a key, a
// dead-letter reason.
const MaxText = 256

// CleanText makes broker-supplied text fit for a span attribute: valid
// UTF-8 (invalid bytes become U+FFFD) without control characters, cut to at
// most max bytes on a rune boundary. ok is false when it had to change s,
// for a tap that counts such input.
func CleanText(s string, max int) (clean string, ok bool) {
	ok = utf8.ValidString(s) && len(s) <= max
	if ok {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] == 0x7f {
				ok = false
				break
			}
		}
	}
	if ok {
		return s, true
	}
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if r < 0x20 || r == 0x7f {
			r = ' '
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r)
	}
	return b.String(), false
}
