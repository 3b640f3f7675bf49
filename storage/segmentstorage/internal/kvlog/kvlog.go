// Package kvlog is a key-value store kept as an append-only log of segment
// files, with an in-memory index of where each key's value lies.
//
// It is built for the collector's persistent sending queues: every change is
// one append (one write call per batch), values are read back from the page
// cache with pread, and the queue's first-in-first-out deletes empty the
// oldest segments, which are then removed whole. Nothing is rewritten in
// place, so there is no page allocation or copy-on-write as in a B+tree.
//
// A segment is a sequence of records:
//
//	length uint32 LE | crc32c(body) uint32 LE | body
//	body: op byte (1 set, 2 delete) | uvarint key length | key | value
//
// Opening a directory replays its segments, oldest first, into the index. A
// record torn by a crash ends its segment: the rest of that segment is
// dropped (and, for the newest segment, truncated away) and reported.
package kvlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/flowtrace/flowtrace/internal/segfiles"
)

const (
	opSet    = 1
	opDelete = 2

	headerSize = 8
	suffix     = ".seg"

	// maxBody bounds one record: a length past it is corruption.
	maxBody = 1 << 30
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrClosed is returned by a Log used after Close.
var ErrClosed = errors.New("kvlog: closed")

// Options tune a Log.
type Options struct {
	// SegmentSize is the size past which appends go to a new segment.
	SegmentSize int64
	// Sync makes every batch reach the disk (fsync) before it returns; without
	// it a batch survives a crash of the process, not of the machine.
	Sync bool
	// OnError hears of failures of upkeep (starting a segment, compacting):
	// the batch that triggered it is stored, and upkeep is tried again later.
	OnError func(error)
}

// Op is one operation of a batch. Get fills Value (nil when the key is
// absent); Set stores Value; Delete removes the key.
type Op struct {
	Type  OpType
	Key   string
	Value []byte
}

// OpType says what an Op does.
type OpType int

// The operations.
const (
	Get OpType = iota
	Set
	Delete
)

// Log is the store. It is safe for concurrent use.
type Log struct {
	dir  string
	opts Options

	mu       sync.Mutex
	closed   bool
	segments []*segment // oldest first; the last is the one appended to
	index    map[string]location
	buf      []byte
	pending  map[string]*Op // a batch's own sets and deletes, for its gets
}

type segment struct {
	number uint64
	file   *os.File
	size   int64 // bytes of records
	live   int64 // bytes of records still in the index
}

// location is where a key's record lies.
type location struct {
	seg    *segment
	offset int64 // of the record
	size   int32 // of the whole record
	value  int32 // offset of the value within the record
}

// Recovery reports what Open found damaged.
type Recovery struct {
	// Dropped counts bytes of records that could not be read.
	Dropped int64
	// Segments names the segments that ended in a damaged record.
	Segments []string
}

// Open opens the store in dir, creating the directory if needed, and
// replays it. It starts a new segment for what follows.
func Open(dir string, opts Options) (*Log, Recovery, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = 64 << 20
	}
	var rec Recovery
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, rec, fmt.Errorf("kvlog: %w", err)
	}
	numbers, err := list(dir)
	if err != nil {
		return nil, rec, err
	}
	l := &Log{dir: dir, opts: opts, index: map[string]location{}, pending: map[string]*Op{}}
	for _, n := range numbers {
		seg, dropped, err := l.replay(n)
		if err != nil {
			l.closeFiles()
			return nil, rec, err
		}
		if dropped > 0 {
			rec.Dropped += dropped
			rec.Segments = append(rec.Segments, segmentName(n))
		}
		l.segments = append(l.segments, seg)
	}
	next := uint64(1)
	if len(numbers) > 0 {
		next = numbers[len(numbers)-1] + 1
	}
	if err := l.startSegment(next); err != nil {
		l.closeFiles()
		return nil, rec, err
	}
	l.removeDeadSegments()
	return l, rec, nil
}

func segmentName(n uint64) string { return fmt.Sprintf("%016d%s", n, suffix) }

func list(dir string) ([]uint64, error) {
	segments, err := segfiles.List(dir, suffix)
	if err != nil {
		return nil, fmt.Errorf("kvlog: %w", err)
	}
	return segments, nil
}

// replay reads segment n into the index. A damaged record ends it: the
// segment is truncated there, and the bytes dropped returned.
func (l *Log) replay(n uint64) (*segment, int64, error) {
	path := filepath.Join(l.dir, segmentName(n))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("kvlog: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("kvlog: %w", err)
	}
	seg := &segment{number: n, file: f}
	r := bufio.NewReaderSize(io.NewSectionReader(f, 0, info.Size()), 1<<20)
	var header [headerSize]byte
	var body []byte
	for {
		if _, err := io.ReadFull(r, header[:]); err != nil {
			break // the end, or a torn header
		}
		length := binary.LittleEndian.Uint32(header[:4])
		if length > maxBody || int64(length) > info.Size()-seg.size-headerSize {
			break
		}
		body = append(body[:0], make([]byte, length)...)
		if _, err := io.ReadFull(r, body); err != nil {
			break
		}
		if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(header[4:]) {
			break
		}
		op, key, valueAt, ok := parseBody(body)
		if !ok {
			break
		}
		size := int64(headerSize) + int64(length)
		l.forget(key)
		if op == opSet {
			l.index[key] = location{seg: seg, offset: seg.size, size: int32(size), value: int32(headerSize + valueAt)}
			seg.live += size
		}
		seg.size += size
	}
	dropped := info.Size() - seg.size
	if dropped > 0 {
		if err := f.Truncate(seg.size); err != nil {
			f.Close()
			return nil, 0, fmt.Errorf("kvlog: drop a damaged record: %w", err)
		}
	}
	return seg, dropped, nil
}

// parseBody splits a record body; ok is false for a malformed one.
func parseBody(body []byte) (op byte, key string, valueAt int, ok bool) {
	if len(body) < 1 || (body[0] != opSet && body[0] != opDelete) {
		return 0, "", 0, false
	}
	keyLen, n := binary.Uvarint(body[1:])
	if n <= 0 || keyLen > uint64(len(body)-1-n) {
		return 0, "", 0, false
	}
	start := 1 + n
	end := start + int(keyLen)
	if body[0] == opDelete && end != len(body) {
		return 0, "", 0, false
	}
	return body[0], string(body[start:end]), end, true
}

func (l *Log) startSegment(n uint64) error {
	f, err := os.OpenFile(filepath.Join(l.dir, segmentName(n)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("kvlog: %w", err)
	}
	l.segments = append(l.segments, &segment{number: n, file: f})
	return nil
}

func (l *Log) active() *segment { return l.segments[len(l.segments)-1] }

// forget drops key from the index, its record becoming dead.
func (l *Log) forget(key string) {
	if old, ok := l.index[key]; ok {
		old.seg.live -= int64(old.size)
		delete(l.index, key)
	}
}

// Batch applies ops in order, as one append: either every set and delete is
// in the log or, on error, none is. A get sees the sets and deletes before
// it in the same batch.
func (l *Log) Batch(ops []Op) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	seg := l.active()
	buf := l.buf[:0]
	clear(l.pending)
	type placed struct {
		op     *Op
		offset int64
		size   int32
		value  int32
	}
	var writes []placed
	for i := range ops {
		op := &ops[i]
		switch op.Type {
		case Get:
			if p, ok := l.pending[op.Key]; ok {
				op.Value = nil
				if p.Type == Set {
					op.Value = append([]byte{}, p.Value...)
				}
				continue
			}
			v, err := l.read(op.Key)
			if err != nil {
				return err
			}
			op.Value = v
		case Set, Delete:
			start := len(buf)
			buf = append(buf, make([]byte, headerSize)...)
			code := byte(opSet)
			if op.Type == Delete {
				code = opDelete
			}
			buf = append(buf, code)
			buf = binary.AppendUvarint(buf, uint64(len(op.Key)))
			buf = append(buf, op.Key...)
			valueAt := len(buf) - start
			if op.Type == Set {
				buf = append(buf, op.Value...)
			}
			body := buf[start+headerSize:]
			if len(body) > maxBody {
				return fmt.Errorf("kvlog: a value of %d bytes, past the limit of %d", len(op.Value), maxBody)
			}
			binary.LittleEndian.PutUint32(buf[start:], uint32(len(body)))
			binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(body, crcTable))
			writes = append(writes, placed{op: op, offset: seg.size + int64(start), size: int32(len(buf) - start), value: int32(valueAt)})
			l.pending[op.Key] = op
		default:
			return fmt.Errorf("kvlog: unknown operation %d", op.Type)
		}
	}
	l.buf = buf
	if len(writes) == 0 {
		return nil
	}
	if err := l.append(seg, buf); err != nil {
		return err
	}
	for _, w := range writes {
		l.forget(w.op.Key)
		if w.op.Type == Set {
			l.index[w.op.Key] = location{seg: seg, offset: w.offset, size: w.size, value: w.value}
			seg.live += int64(w.size)
		}
	}
	l.removeDeadSegments()
	if seg.size >= l.opts.SegmentSize {
		if err := l.rotate(); err != nil && l.opts.OnError != nil {
			l.opts.OnError(err)
		}
	}
	return nil
}

// append writes records at the end of seg; on failure it cuts back what
// part of them reached the file, so the log stays readable.
func (l *Log) append(seg *segment, records []byte) error {
	_, err := seg.file.WriteAt(records, seg.size)
	if err == nil && l.opts.Sync {
		err = seg.file.Sync()
	}
	if err != nil {
		if truncErr := seg.file.Truncate(seg.size); truncErr != nil {
			err = errors.Join(err, truncErr)
		}
		return fmt.Errorf("kvlog: append: %w", err)
	}
	seg.size += int64(len(records))
	return nil
}

// read returns a copy of key's value, nil if absent.
func (l *Log) read(key string) ([]byte, error) {
	loc, ok := l.index[key]
	if !ok {
		return nil, nil
	}
	v := make([]byte, loc.size-loc.value)
	if _, err := loc.seg.file.ReadAt(v, loc.offset+int64(loc.value)); err != nil {
		return nil, fmt.Errorf("kvlog: read %q: %w", key, err)
	}
	return v, nil
}

// rotate starts a new segment, then moves the records still live in the
// oldest segment forward when that is cheap (a queue's oldest segment
// empties as its items are delivered, but for a key or two), or when dead
// records fill over half the disk the log takes. Then the oldest goes.
func (l *Log) rotate() error {
	if err := l.startSegment(l.active().number + 1); err != nil {
		return err
	}
	if len(l.segments) > 2 {
		var size, live int64
		for _, seg := range l.segments {
			size += seg.size
			live += seg.live
		}
		if oldest := l.segments[0]; oldest.live > 0 && (oldest.live*4 < oldest.size || live*2 < size) {
			if err := l.moveForward(oldest); err != nil {
				return err
			}
		}
	}
	l.removeDeadSegments()
	return nil
}

// moveForward appends the live records of seg to the active segment.
func (l *Log) moveForward(seg *segment) error {
	type moved struct {
		key string
		loc location
	}
	var records []byte
	var keys []moved
	for key, loc := range l.index {
		if loc.seg != seg {
			continue
		}
		record := make([]byte, loc.size)
		if _, err := seg.file.ReadAt(record, loc.offset); err != nil {
			return fmt.Errorf("kvlog: compact: %w", err)
		}
		keys = append(keys, moved{key, loc})
		records = append(records, record...)
	}
	head := l.active()
	at := head.size
	if err := l.append(head, records); err != nil {
		return err
	}
	for _, k := range keys {
		l.forget(k.key)
		l.index[k.key] = location{seg: head, offset: at, size: k.loc.size, value: k.loc.value}
		head.live += int64(k.loc.size)
		at += int64(k.loc.size)
	}
	return nil
}

// removeDeadSegments deletes the oldest segments while nothing in them is
// live. Only the oldest go, so a delete record never outlives the set it
// cancels.
func (l *Log) removeDeadSegments() {
	for len(l.segments) > 1 && l.segments[0].live == 0 {
		seg := l.segments[0]
		seg.file.Close()
		// A failed remove leaves a segment of dead records; replay skips
		// over them harmlessly.
		_ = os.Remove(seg.file.Name())
		l.segments = l.segments[1:]
	}
}

// Len returns the number of keys.
func (l *Log) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.index)
}

// Segments returns the number of segment files.
func (l *Log) Segments() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.segments)
}

// Close syncs the newest segment and closes the files.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	err := l.active().file.Sync()
	return errors.Join(err, l.closeFiles())
}

func (l *Log) closeFiles() error {
	var err error
	for _, seg := range l.segments {
		err = errors.Join(err, seg.file.Close())
	}
	return err
}
