// Package segmentstorage is the segment_storage extension: a storage
// extension (the collector's xextension/storage API) that keeps each
// client's keys and values in append-only segment files. Sending queues use
// it as they use file_storage; it suits their write-once, read-once,
// delete-in-order traffic at a fraction of a B+tree's cost.
package segmentstorage
