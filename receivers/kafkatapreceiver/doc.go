// Package kafkatapreceiver taps Kafka topics without joining a consumer
// group and watches consumer groups' committed offsets, emitting a span per
// record published, retried or dead-lettered, a span per record a group's
// commit passed, and consumer lag in messages and seconds.
package kafkatapreceiver
