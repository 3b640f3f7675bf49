// Package tap is what every broker tap shares: an Observation of a broker
// handling one message becomes a span in the OpenTelemetry messaging
// conventions, with flowtrace's own attributes for what the conventions lack
// (delivery attempt, settlement outcome and whether it was inferred,
// dead-letter reason), so the correlator reads tap spans exactly as it reads
// application spans (correlator/README.md, "Spans into events"). Backlog
// gauges become the flowtrace.backlog.* metrics the ClickHouse exporter
// stores and the alert rules watch. Telemetry counts decode errors and gaps
// the same way for every tap, and Session keeps a broker connection alive
// with backoff, counting the time it was away.
package tap
