package storage

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Queue is the protonmsg bridge's fallback queue (Koji's proton_queue
// table): messages no broker accepted, kept in order on disk until one does.
//
//	'q' seq -> JSON QueueEntry   (seq: 8-byte big-endian, the event's stream sequence)
type Queue struct {
	db *pebble.DB
}

// QueueEntry is one queued message.
type QueueEntry struct {
	Seq     uint64         `json:"seq"` // KOJI_EVENTS stream sequence: the queue's order
	Address string         `json:"address"`
	Props   map[string]any `json:"props"`
	Body    string         `json:"body"`
	ID      string         `json:"id"`
	Created time.Time      `json:"created"`
}

const prefixQueue = 'q'

// OpenQueue opens (creating it if needed) the queue in dir.
func OpenQueue(dir string, log *slog.Logger) (*Queue, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log.With("component", "bridge-queue")}})
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return &Queue{db: db}, nil
}

// Close closes the queue.
func (q *Queue) Close() error { return q.db.Close() }

func queueKey(seq uint64) []byte {
	k := make([]byte, 9)
	k[0] = prefixQueue
	binary.BigEndian.PutUint64(k[1:], seq)
	return k
}

// Append stores entries durably (fsynced); an entry already there is
// overwritten with the same content, so a retried append is harmless.
func (q *Queue) Append(entries []QueueEntry) error {
	b := q.db.NewBatch()
	defer b.Close()
	for i := range entries {
		v, err := json.Marshal(&entries[i])
		if err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		if err := b.Set(queueKey(entries[i].Seq), v, nil); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// Peek returns up to n entries, oldest first.
func (q *Queue) Peek(n int) ([]QueueEntry, error) {
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixQueue}, UpperBound: []byte{prefixQueue + 1}})
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	defer it.Close()
	var out []QueueEntry
	for ok := it.First(); ok && len(out) < n; ok = it.Next() {
		var e QueueEntry
		if err := json.Unmarshal(it.Value(), &e); err != nil {
			return nil, fmt.Errorf("queue: entry %x: %w", it.Key(), err)
		}
		out = append(out, e)
	}
	return out, it.Error()
}

// Delete removes entries by sequence (fsynced).
func (q *Queue) Delete(seqs []uint64) error {
	b := q.db.NewBatch()
	defer b.Close()
	for _, s := range seqs {
		if err := b.Delete(queueKey(s), nil); err != nil {
			return fmt.Errorf("queue: %w", err)
		}
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("queue: %w", err)
	}
	return nil
}

// DropOlderThan removes the entries created before cutoff and returns them
// (protonmsg's max_age; the caller counts and logs them).
func (q *Queue) DropOlderThan(cutoff time.Time) ([]QueueEntry, error) {
	var old []QueueEntry
	for {
		batch, err := q.Peek(256)
		if err != nil {
			return old, err
		}
		var seqs []uint64
		for _, e := range batch {
			if !e.Created.Before(cutoff) {
				break
			}
			old = append(old, e)
			seqs = append(seqs, e.Seq)
		}
		if len(seqs) == 0 {
			return old, nil
		}
		if err := q.Delete(seqs); err != nil {
			return old, err
		}
		if len(seqs) < len(batch) {
			return old, nil
		}
	}
}

// Stats returns the number of entries and the oldest one's creation time.
func (q *Queue) Stats() (int, time.Time, error) {
	it, err := q.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixQueue}, UpperBound: []byte{prefixQueue + 1}})
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("queue: %w", err)
	}
	defer it.Close()
	n := 0
	var oldest time.Time
	for ok := it.First(); ok; ok = it.Next() {
		if n == 0 {
			var e QueueEntry
			if err := json.Unmarshal(it.Value(), &e); err != nil {
				return 0, time.Time{}, errors.Join(fmt.Errorf("queue: oldest entry"), err)
			}
			oldest = e.Created
		}
		n++
	}
	return n, oldest, it.Error()
}
