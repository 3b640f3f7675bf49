// Package wal is the correlator connector's write-ahead log: every batch of
// events is appended before the engine sees it and before the spans are
// acknowledged, so a crash loses no accepted event. A checkpoint of the
// engine makes the log's older segments unnecessary.
//
// The log is a directory of segment files, <number>.wal. A record is a
// little-endian length, a CRC-32C of the payload, then the payload: the
// batch's processing time and its events. A torn last record (a crash
// mid-write) ends a segment's replay.
package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/flowtrace/flowtrace/internal/segfiles"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/model/modelcodec"
)

// maxRecord bounds one record: a length past it is corruption, not a batch.
// Append splits larger batches. A variable so tests can lower it.
var maxRecord = 256 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrTooLarge means an event does not fit in a record.
var ErrTooLarge = errors.New("event too large for the write-ahead log")

// ErrCorrupt means a record failed its checksum or could not be decoded.
var ErrCorrupt = errors.New("corrupt write-ahead log record")

// Log appends to the newest segment. Not safe for concurrent use: the
// connector calls it under its lock.
type Log struct {
	dir     string
	segment uint64
	file    *os.File
	w       *bufio.Writer
	buf     []byte // encoded events of the batch being appended
	ends    []int  // where each of them ends in buf
}

// Open opens the log in dir, creating it, and starts a new segment after
// the existing ones.
func Open(dir string) (*Log, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("open write-ahead log: %w", err)
	}
	segments, err := list(dir)
	if err != nil {
		return nil, err
	}
	l := &Log{dir: dir}
	next := uint64(1)
	if len(segments) > 0 {
		next = segments[len(segments)-1] + 1
	}
	if err := l.open(next); err != nil {
		return nil, err
	}
	return l, nil
}

func (l *Log) path(segment uint64) string {
	return filepath.Join(l.dir, strconv.FormatUint(segment, 10)+".wal")
}

func (l *Log) open(segment uint64) error {
	f, err := os.OpenFile(l.path(segment), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open write-ahead log segment: %w", err)
	}
	l.segment, l.file, l.w = segment, f, bufio.NewWriterSize(f, 1<<20)
	return nil
}

// Segment is the number of the segment being appended to.
func (l *Log) Segment() uint64 { return l.segment }

// Append writes one batch, as one record or, past maxRecord, several. It
// returns once the batch is in the operating system's hands: a crash of the
// process loses nothing written. A batch with an event too large for any
// record is refused whole (ErrTooLarge), with nothing written.
func (l *Log) Append(now time.Time, events []model.Event) error {
	// Encode every event first, noting where each ends, so records can be
	// cut on event boundaries and nothing is written if one cannot fit.
	body, ends := l.buf[:0], l.ends[:0]
	for i := range events {
		body = modelcodec.AppendEvent(body, &events[i])
		ends = append(ends, len(body))
	}
	l.buf, l.ends = body, ends
	limit := maxRecord - 2*binary.MaxVarintLen64 // room for the time and count
	start := 0
	for i, end := range ends {
		if end-start > limit {
			return fmt.Errorf("%w: event %d encodes to %d bytes, past %d", ErrTooLarge, i, end-start, limit)
		}
		start = end
	}

	for first, start := 0, 0; first < len(events); {
		last := first + 1 // one event always fits, checked above
		for last < len(events) && ends[last]-start <= limit {
			last++
		}
		if err := l.writeRecord(now, last-first, body[start:ends[last-1]]); err != nil {
			return err
		}
		first, start = last, ends[last-1]
	}
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("append to write-ahead log: %w", err)
	}
	return nil
}

// writeRecord buffers one record: its length and checksum, the time, the
// number of events, and the encoded events.
func (l *Log) writeRecord(now time.Time, count int, events []byte) error {
	var prefix [2 * binary.MaxVarintLen64]byte
	p := binary.AppendVarint(prefix[:0], now.UnixNano())
	p = binary.AppendUvarint(p, uint64(count))
	var header [8]byte
	binary.LittleEndian.PutUint32(header[:4], uint32(len(p)+len(events)))
	binary.LittleEndian.PutUint32(header[4:], crc32.Update(crc32.Checksum(p, crcTable), crcTable, events))
	for _, part := range [][]byte{header[:], p, events} {
		if _, err := l.w.Write(part); err != nil {
			return fmt.Errorf("append to write-ahead log: %w", err)
		}
	}
	return nil
}

// Rotate starts a new segment and returns its number: what a checkpoint
// taken now needs replayed after it.
func (l *Log) Rotate() (uint64, error) {
	if err := l.Close(); err != nil {
		return 0, err
	}
	if err := l.open(l.segment + 1); err != nil {
		return 0, err
	}
	return l.segment, nil
}

// Close flushes and closes the current segment.
func (l *Log) Close() error {
	if l.file == nil {
		return nil
	}
	err := errors.Join(l.w.Flush(), l.file.Close())
	l.file = nil
	return err
}

// Remove deletes the segments before from, which a checkpoint covers.
func (l *Log) Remove(from uint64) error {
	segments, err := list(l.dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range segments {
		if s < from {
			errs = append(errs, os.Remove(l.path(s)))
		}
	}
	return errors.Join(errs...)
}

// Replay reads the segments from from on, oldest first, up to the current
// one (excluded), calling fn for each event at its batch's processing time.
// It returns how many records it could not read (a torn or corrupt record
// ends its segment).
func (l *Log) Replay(from uint64, fn func(now time.Time, ev *model.Event)) (int, error) {
	segments, err := list(l.dir)
	if err != nil {
		return 0, err
	}
	bad := 0
	for _, s := range segments {
		if s < from || s >= l.segment {
			continue
		}
		n, err := replaySegment(l.path(s), fn)
		if err != nil {
			return bad, err
		}
		bad += n
	}
	return bad, nil
}

func replaySegment(path string, fn func(time.Time, *model.Event)) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("replay write-ahead log: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var header [8]byte
	var payload []byte
	var ev model.Event
	for {
		if _, err := io.ReadFull(r, header[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return 0, nil
			}
			return 1, nil // torn header
		}
		size := binary.LittleEndian.Uint32(header[:4])
		if int64(size) > int64(maxRecord) {
			return 1, nil
		}
		payload = append(payload[:0], make([]byte, size)...)
		if _, err := io.ReadFull(r, payload); err != nil {
			return 1, nil // torn payload
		}
		if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(header[4:]) {
			return 1, nil
		}
		if err := decodeBatch(payload, &ev, fn); err != nil {
			return 1, nil
		}
	}
}

func decodeBatch(payload []byte, ev *model.Event, fn func(time.Time, *model.Event)) error {
	d := modelcodec.NewDecoder(payload)
	now := time.Unix(0, d.Varint()).UTC()
	n := d.Count()
	if d.Err() != nil {
		return ErrCorrupt
	}
	for range n {
		d.Event(ev)
		if d.Err() != nil {
			return ErrCorrupt
		}
		fn(now, ev)
	}
	return nil
}

// list returns the segment numbers in dir, ascending.
func list(dir string) ([]uint64, error) {
	segments, err := segfiles.List(dir, ".wal")
	if err != nil {
		return nil, fmt.Errorf("list write-ahead log: %w", err)
	}
	return segments, nil
}
