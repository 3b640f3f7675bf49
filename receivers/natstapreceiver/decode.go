package natstapreceiver

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"time"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// The decoders here read what NATS puts on the wire about a JetStream
// message: ack reply subjects, ack bodies and advisories. They never panic
// on bad input; each error is a fixed value, counted by reason.

var (
	errAckSubject = errors.New("malformed ack subject")
	errAckBody    = errors.New("unknown ack body")
	errAdvisory   = errors.New("malformed advisory")
)

// ackRef is what an ack reply subject says about one delivery:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<stored ns>.<pending>
//	$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<stored ns>.<pending>[.<token>...]
//
// The first form (9 tokens) is what servers send today; the second (11 or
// more tokens, domain "_" for none) is the newer form that carries the
// JetStream domain and account. The time token is when the message was
// stored, not when it was delivered.
type ackRef struct {
	V2          bool // the newer form, with domain and account
	Domain      string
	Stream      string
	Consumer    string
	Delivered   uint64 // delivery count, 1 for the first delivery
	StreamSeq   uint64
	ConsumerSeq uint64
	Stored      time.Time
	Pending     uint64
}

const (
	ackTokensV1    = 9
	ackTokensV2Min = 11
)

// parseAckSubject reads an ack reply subject in either form.
func parseAckSubject(subject string) (ackRef, error) {
	var ref ackRef
	rest, ok := strings.CutPrefix(subject, "$JS.ACK.")
	if !ok {
		return ref, errAckSubject
	}
	n := strings.Count(rest, ".") + 3
	var tokens [7]string // stream, consumer, delivered, stream seq, consumer seq, stored, pending
	switch {
	case n == ackTokensV1:
	case n >= ackTokensV2Min:
		ref.V2 = true
		ref.Domain, rest, _ = strings.Cut(rest, ".")
		if ref.Domain == "_" {
			ref.Domain = ""
		}
		_, rest, _ = strings.Cut(rest, ".") // account hash
	default:
		return ref, errAckSubject
	}
	for i := range tokens {
		tokens[i], rest, _ = strings.Cut(rest, ".")
	}
	ref.Stream, ref.Consumer = tokens[0], tokens[1]
	if ref.Stream == "" || ref.Consumer == "" {
		return ref, errAckSubject
	}
	var stored uint64
	for i, dst := range [...]*uint64{&ref.Delivered, &ref.StreamSeq, &ref.ConsumerSeq, &stored, &ref.Pending} {
		v, ok := parseUint(tokens[2+i])
		if !ok {
			return ref, errAckSubject
		}
		*dst = v
	}
	if ref.Delivered == 0 || ref.StreamSeq == 0 || stored > math.MaxInt64 {
		return ref, errAckSubject
	}
	ref.Stored = time.Unix(0, int64(stored))
	return ref, nil
}

// parseUint reads a decimal number of at most 20 digits that fits a uint64.
func parseUint(s string) (uint64, bool) {
	if s == "" || len(s) > 20 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// ackKind is what a consumer told the server about a delivery.
type ackKind uint8

const (
	ackAck      ackKind = iota + 1 // "", "+ACK", "+OK", "+NXT ..."
	ackNak                         // "-NAK", "-NAK {\"delay\": ...}"
	ackProgress                    // "+WPI"
	ackTerm                        // "+TERM", "+TERM <reason>"
)

// parseAckBody reads the body of an ack; for a terminate it also returns
// the reason given, if any.
func parseAckBody(body []byte) (ackKind, string, error) {
	switch {
	case len(body) == 0, string(body) == "+ACK", string(body) == "+OK":
		return ackAck, "", nil
	case hasVerb(body, "+NXT"):
		return ackAck, "", nil
	case hasVerb(body, "-NAK"):
		return ackNak, "", nil
	case string(body) == "+WPI":
		return ackProgress, "", nil
	case hasVerb(body, "+TERM"):
		reason := ""
		if len(body) > len("+TERM ") {
			reason = cleanReason(string(body[len("+TERM "):]))
		}
		return ackTerm, reason, nil
	}
	return 0, "", errAckBody
}

// hasVerb reports whether body is verb alone or verb, a space and more.
func hasVerb(body []byte, verb string) bool {
	return len(body) >= len(verb) && string(body[:len(verb)]) == verb &&
		(len(body) == len(verb) || body[len(verb)] == ' ')
}

// cleanReason makes a reason a consumer gave fit for a span: printable,
// valid UTF-8 of at most tap.MaxText bytes. Any text is a valid reason, so
// a changed one is not an error.
func cleanReason(s string) string {
	s, _ = tap.CleanText(strings.TrimSpace(s), tap.MaxText)
	return s
}

// The advisories and metrics the tap reads, by their type field.
const (
	advMaxDeliver = "io.nats.jetstream.advisory.v1.max_deliver"
	advTerminated = "io.nats.jetstream.advisory.v1.terminated"
	advNak        = "io.nats.jetstream.advisory.v1.nak"
	advAckMetric  = "io.nats.jetstream.metric.v1.consumer_ack"
)

// advisory is the part of a consumer advisory (or ack metric) the tap
// uses.
type advisory struct {
	Type       string    `json:"type"`
	Timestamp  time.Time `json:"timestamp"`
	Stream     string    `json:"stream"`
	Consumer   string    `json:"consumer"`
	StreamSeq  uint64    `json:"stream_seq"`
	Deliveries uint64    `json:"deliveries"`
	Reason     string    `json:"reason"`
	// AckTime is, in an ack metric, the time from delivery to ack in ns.
	AckTime int64 `json:"ack_time"`
}

// decodeAdvisory reads one advisory of the kinds above; any other type, or
// one without its stream, consumer, sequence or time, is an error.
func decodeAdvisory(data []byte) (advisory, error) {
	var a advisory
	if err := json.Unmarshal(data, &a); err != nil {
		return advisory{}, errAdvisory
	}
	switch a.Type {
	case advMaxDeliver, advTerminated, advNak, advAckMetric:
	default:
		return advisory{}, errAdvisory
	}
	if a.Stream == "" || a.Consumer == "" || a.StreamSeq == 0 || a.Timestamp.IsZero() || a.AckTime < 0 {
		return advisory{}, errAdvisory
	}
	a.Reason = cleanReason(a.Reason)
	return a, nil
}

// attempt turns a delivery count into a delivery attempt.
func attempt(deliveries uint64) int {
	return int(min(deliveries, math.MaxInt32))
}
