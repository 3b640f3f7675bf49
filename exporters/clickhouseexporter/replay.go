package clickhouseexporter

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.uber.org/zap"
)

// replayGuard keeps a replay of the persistent sending queue, after the
// process died, from writing anything twice.
//
// ClickHouse drops a repeated insert only when it holds the same rows as
// the first (the deduplication token is a hash of them). After a restart
// the queue hands back every item it had not marked done, and its batcher
// groups them anew: an item already written would be written again inside
// another batch. So, in the queue's own storage, each batch is recorded
// with its rows before it is written (an intent), and the items it held
// once it is (the done list). After a restart the intents left are written
// again exactly as they were, which ClickHouse drops where they had been
// written, and the items the queue hands back that are done are left out.
//
// Items are known by a hash of their queued bytes, so this holds for
// batches of whole items: with sending_queue::batch::max_size set, an item
// cut across two batches can still be written twice by a replay.
type replayGuard struct {
	client storage.Client

	mu sync.Mutex
	// intents are the batches recorded and not yet written, by key.
	intents map[string]struct{}
	// done are the items of recently written batches, oldest first, and
	// as a set.
	done    []uint64
	doneSet map[uint64]struct{}
	// recovered is set once the intents found at start are written.
	recovered bool
}

// Keys in the queue's storage.
const (
	intentsKey   = "replay_intents" // the keys of the intents, one per line
	intentPrefix = "replay_intent_"
	doneKey      = "replay_done" // the done list: 8 bytes an item
)

// maxDone bounds the done list. After a restart the queue hands back only
// what was in flight: a few batches of items.
const maxDone = 1 << 12

func newReplayGuard(ctx context.Context, client storage.Client) (*replayGuard, error) {
	g := &replayGuard{client: client, intents: map[string]struct{}{}, doneSet: map[uint64]struct{}{}}
	keys, err := client.Get(ctx, intentsKey)
	if err != nil {
		return nil, fmt.Errorf("read replay intents: %w", err)
	}
	for _, key := range strings.Fields(string(keys)) {
		g.intents[key] = struct{}{}
	}
	done, err := client.Get(ctx, doneKey)
	if err != nil {
		return nil, fmt.Errorf("read replay done list: %w", err)
	}
	for i := 0; i+8 <= len(done); i += 8 {
		g.markDone(binary.LittleEndian.Uint64(done[i:]))
	}
	return g, nil
}

// recover writes, once, the batches recorded before a restart and not
// known to be written: each exactly as it was, so that ClickHouse drops
// whatever of it was written already. Until it has, no batch is written:
// it returns the error of a write that failed, to be retried. A record
// that does not decode, or rows that can never be written, are given up
// (logged): their items are not marked written, so the queue's replay
// writes them, at worst twice, rather than not at all.
func (g *replayGuard) recover(ctx context.Context, write func(context.Context, *rows) error, logger *zap.Logger) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.recovered {
		return nil
	}
	for _, key := range slices.Sorted(maps.Keys(g.intents)) {
		value, err := g.client.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("read replay intent: %w", err)
		}
		items, r, err := decodeIntent(value)
		if err == nil {
			err = write(ctx, r)
			if err != nil && !consumererror.IsPermanent(err) {
				return err
			}
		}
		if err != nil {
			logger.Error("A batch recorded before the restart is given up; the queue's replay writes its items", zap.String("intent", key), zap.Error(err))
			items = nil
		}
		if err := g.finishLocked(ctx, key, items); err != nil {
			return err
		}
	}
	g.recovered = true
	return nil
}

// dropDone leaves out of r the items already written, and the second of
// two the same (a client that sent a request again, not told the first
// was taken before the restart: both were in the queue).
func (g *replayGuard) dropDone(r *rows) *rows {
	g.mu.Lock()
	defer g.mu.Unlock()
	seen := map[uint64]struct{}{}
	return r.without(func(item uint64) bool {
		_, done := g.doneSet[item]
		_, again := seen[item]
		seen[item] = struct{}{}
		return done || again
	})
}

// begin records r, about to be written, with the items of the request it
// was made from (those it left out as written included); it returns the
// intent's key.
func (g *replayGuard) begin(ctx context.Context, r *rows, items []uint64) (string, error) {
	encoded, err := rowsEncoding{}.Marshal(ctx, r)
	if err != nil {
		return "", err
	}
	value := binary.AppendUvarint(nil, uint64(len(items)))
	for _, item := range items {
		value = binary.LittleEndian.AppendUint64(value, item)
	}
	value = append(value, encoded...)
	key := intentPrefix + strconv.FormatUint(xxhash.Sum64(encoded), 16)

	g.mu.Lock()
	defer g.mu.Unlock()
	g.intents[key] = struct{}{}
	if err := g.client.Batch(ctx, storage.SetOperation(key, value), storage.SetOperation(intentsKey, g.intentKeys())); err != nil {
		delete(g.intents, key)
		return "", fmt.Errorf("record a batch before writing it: %w", err)
	}
	return key, nil
}

// finish notes that the batch recorded under key is written.
func (g *replayGuard) finish(ctx context.Context, key string, items []uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.finishLocked(ctx, key, items)
}

func (g *replayGuard) finishLocked(ctx context.Context, key string, items []uint64) error {
	for _, item := range items {
		g.markDone(item)
	}
	delete(g.intents, key)
	done := make([]byte, 0, 8*len(g.done))
	for _, item := range g.done {
		done = binary.LittleEndian.AppendUint64(done, item)
	}
	err := g.client.Batch(ctx, storage.DeleteOperation(key), storage.SetOperation(intentsKey, g.intentKeys()), storage.SetOperation(doneKey, done))
	if err != nil {
		return fmt.Errorf("note a written batch: %w", err)
	}
	return nil
}

func (g *replayGuard) markDone(item uint64) {
	if _, ok := g.doneSet[item]; ok {
		return
	}
	if len(g.done) == maxDone {
		delete(g.doneSet, g.done[0])
		g.done = g.done[1:]
	}
	g.done = append(g.done, item)
	g.doneSet[item] = struct{}{}
}

func (g *replayGuard) intentKeys() []byte {
	var b []byte
	for _, key := range slices.Sorted(maps.Keys(g.intents)) {
		b = append(append(b, key...), '\n')
	}
	return b
}

func (g *replayGuard) close(ctx context.Context) error {
	return g.client.Close(ctx)
}

var errBadIntent = errors.New("a replay intent that does not decode")

// decodeIntent reads an intent: its items, then its rows.
func decodeIntent(value []byte) ([]uint64, *rows, error) {
	n, size := binary.Uvarint(value)
	if size <= 0 || n > uint64(len(value))/8 {
		return nil, nil, errBadIntent
	}
	value = value[size:]
	items := make([]uint64, n)
	for i := range items {
		items[i] = binary.LittleEndian.Uint64(value[8*i:])
	}
	_, req, err := rowsEncoding{}.Unmarshal(value[8*n:])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errBadIntent, err)
	}
	r := req.(*rows)
	r.item = 0 // the rows of a batch, not an item the queue holds
	return items, r, nil
}
