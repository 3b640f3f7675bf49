// Package redistapreceiver watches Redis streams, consumer groups, pub/sub
// channels and Sidekiq's queues, and emits what it sees as messaging spans
// and backlog gauges, so flows can be built from Redis traffic alone.
package redistapreceiver
