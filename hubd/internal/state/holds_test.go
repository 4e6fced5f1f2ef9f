package state

import (
	"context"
	"testing"
	"time"
)

// Holds tells a revision another hub wrote (in the stream, not yet in this
// view) from one no hub handed out: the first is waited for, the second
// refused.
func TestHoldsTellsRevisionsTheStreamHas(t *testing.T) {
	b1 := setup(t)
	b2 := setupOn(t, b1.srv)
	ctx := ctxT(t)
	pauseView(b1) // b1's view stays behind what b2 writes
	res, err := b2.store.Update(ctx, "", func(tx *Txn) (any, error) { return nil, tx.Put("k.written", 1) })
	if err != nil {
		t.Fatal(err)
	}
	written := res.Rev
	tests := []struct {
		name string
		rev  uint64
		want bool
	}{
		{"what the view has", b1.store.Applied(), true},
		{"written through another hub", written, true},
		{"just past the stream", written + 1, false},
		{"far ahead", 999999999999, false},
	}
	for _, tt := range tests {
		held, last, err := b1.store.Holds(ctx, tt.rev)
		if err != nil {
			t.Fatal(err)
		}
		if held != tt.want || !held && last < written {
			t.Fatalf("%s: Holds(%d) = %v (last %d), want %v and last at least %d", tt.name, tt.rev, held, last, tt.want, written)
		}
	}
	// The view, resumed, reaches the revision a waiter asked for.
	resumeView(t, b1, b1.store.Applied()+1)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b1.store.WaitApplied(wctx, written); err != nil {
		t.Fatal(err)
	}
}
