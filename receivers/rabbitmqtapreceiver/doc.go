// Package rabbitmqtapreceiver is the RabbitMQ tap: it reads RabbitMQ's
// firehose (every publish and delivery of the traced vhosts) and turns it
// into messaging spans, Celery protocol 2 tasks included, and polls the
// management API for queue backlog gauges.
package rabbitmqtapreceiver
