package correlator

import (
	"github.com/flowtrace/flowtrace/correlator/destpattern"
	"github.com/flowtrace/flowtrace/model"
)

// identifier computes what events are joined by: their kind after the
// destination patterns, their identity hashes and their flow-key hashes. The
// engine and Sharded's router both use it, so they agree on every identity.
// Owned by one goroutine.
type identifier struct {
	hash       hasher
	retry      []destpattern.Pattern
	deadLetter []destpattern.Pattern
	scratch    []uint64
}

// newIdentifier assumes a validated configuration.
func newIdentifier(cfg Config) identifier {
	x := identifier{hash: newHasher()}
	for _, p := range cfg.RetryDestinations {
		compiled, _ := destpattern.Compile(p, true)
		x.retry = append(x.retry, compiled)
	}
	for _, p := range cfg.DeadLetterDestinations {
		compiled, _ := destpattern.Compile(p, false)
		x.deadLetter = append(x.deadLetter, compiled)
	}
	return x
}

// normalize applies the retry and dead-letter destination patterns and
// rejects unknown kinds (returned as "").
func (x *identifier) normalize(ev *model.Event) (model.EventKind, string, uint16) {
	kind, dest, attempt := ev.Kind, ev.Destination, ev.Attempt
	if !kind.Known() {
		return "", "", 0
	}
	for _, p := range x.retry {
		if base, retry, ok := p.Match(dest); ok {
			dest, attempt = base, max(attempt, uint16(min(retry+1, 1<<16-1)))
			break
		}
	}
	if kind == model.EventPublish {
		for _, p := range x.deadLetter {
			if base, _, ok := p.Match(dest); ok {
				kind, dest = model.EventDeadLetter, base
				break
			}
		}
	}
	return kind, dest, attempt
}

func consumerSide(kind model.EventKind) bool {
	return kind != model.EventPublish && kind != model.EventBroadcast && kind != model.EventCallbackRequest
}

// isBatch reports whether a consumer-side event stands for several messages.
func isBatch(ev *model.Event, kind model.EventKind) bool {
	return consumerSide(kind) && ev.MessageID == "" && len(ev.Links) > 1
}

// identity lists the hashes of the identities an event joins its message by
// (README, "Messages"), and its smallest span reference. The slice is
// scratch, valid until the next call.
func (x *identifier) identity(ev *model.Event, consumer bool) (aliases []uint64, refTrace, refSpan string) {
	aliases = x.scratch[:0]
	addRef := func(traceID, spanID string) {
		if traceID == "" || spanID == "" {
			return
		}
		aliases = append(aliases, x.hash.strings(tagRef, traceID, spanID))
		if refTrace == "" || traceID < refTrace || traceID == refTrace && spanID < refSpan {
			refTrace, refSpan = traceID, spanID
		}
	}
	if ev.MessageID != "" {
		aliases = append(aliases, x.hash.strings(tagBroker, ev.System, ev.MessageID))
	}
	if !consumer || ev.MessageID == "" {
		// A publishing span is what consumers link to; a consumer-side span
		// without a message id is what its child spans join through.
		addRef(ev.TraceID, ev.SpanID)
	}
	if consumer {
		for _, link := range ev.Links {
			addRef(link.TraceID, link.SpanID)
		}
		if ev.MessageID == "" && len(ev.Links) == 0 {
			addRef(ev.TraceID, ev.ParentSpanID)
		}
	}
	x.scratch = aliases
	return aliases, refTrace, refSpan
}

func (x *identifier) keyHash(kind, value string) uint64 {
	return x.hash.strings(tagKey, kind, value)
}

// routingIDs appends every hash the event joins by — its identities (each
// link's, for a batch) and its flow keys — or nothing when the engine would
// ignore it.
func (x *identifier) routingIDs(ev *model.Event, buf []uint64) []uint64 {
	kind, _, _ := x.normalize(ev)
	if kind == "" {
		return buf
	}
	if isBatch(ev, kind) {
		for _, link := range ev.Links {
			buf = append(buf, x.hash.strings(tagRef, link.TraceID, link.SpanID))
		}
	} else {
		aliases, _, _ := x.identity(ev, consumerSide(kind))
		if len(aliases) == 0 {
			return buf
		}
		buf = append(buf, aliases...)
	}
	if ev.TraceID != "" {
		buf = append(buf, x.keyHash("trace_id", ev.TraceID))
	}
	for _, k := range ev.Keys {
		if k.Value != "" {
			buf = append(buf, x.keyHash(k.Kind, k.Value))
		}
	}
	return buf
}
