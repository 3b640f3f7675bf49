// Package natstapreceiver is a broker tap for NATS: it reads what JetStream
// stored, which consumers acked, nacked or terminated it and which hit their
// delivery limit, and what was published on core subjects, and emits it as
// messaging spans, with consumer backlog as gauges.
package natstapreceiver
