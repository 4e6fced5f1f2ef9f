package state

import (
	"context"
	"fmt"
	"testing"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
)

// BenchmarkCommit measures one transaction: a single key, and a key plus
// its event, at both durability settings: each is one message.
func BenchmarkCommit(b *testing.B) {
	for _, d := range []bus.Durability{bus.DurabilityInterval, bus.DurabilitySync} {
		srv := bustest.StartServer(b, bustest.Options{Durability: d})
		nc, js := srv.Connect(b)
		st := New(nc, js, nil)
		if err := st.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		for _, withEvent := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/event=%v", d, withEvent), func(b *testing.B) {
				ctx := context.Background()
				for i := 0; i < b.N; i++ {
					_, err := st.Update(ctx, "", func(tx *Txn) (any, error) {
						_ = tx.Put(fmt.Sprintf("bench.%d", i%64), i)
						if withEvent {
							tx.Emit("bench.put", nil, i)
						}
						return nil, nil
					})
					if err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		st.Stop()
	}
}
