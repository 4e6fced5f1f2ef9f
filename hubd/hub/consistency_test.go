package hub

import (
	"context"
	"fmt"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

// A client reads its own writes whichever of two hubs answers: each reply
// carries the answering hub's state revision and the next request asks for
// at least that much.
func TestReadYourWritesAcrossHubs(t *testing.T) {
	h := StartTestHub(t, nil)
	startSecondHub(t, h)
	ctx := context.Background()
	for i := 0; i < 100; i++ {
		name := fmt.Sprintf("ryw-%d", i)
		var id int64
		call(t, h.Admin, "createTag", []any{name}, nil, &id)
		var tag *bus.Tag
		if err := h.Admin.Call(ctx, "getTag", []any{id}, nil, &tag); err != nil || tag == nil || tag.Name != name {
			t.Fatalf("write %d not read back: %v %v", i, tag, err)
		}
	}
}

// startSecondHub starts another hub on h's NATS server: API calls are then
// answered by either.
func startSecondHub(t *testing.T, h *TestHub) *Server {
	t.Helper()
	h2, err := New(Config{DataDir: t.TempDir(), NATSURLs: []string{h.URL()}, NATSUser: bus.RoleHub,
		NATSPass: h.Embedded().Secrets[bus.RoleHub], Logger: h.log})
	if err != nil {
		t.Fatal(err)
	}
	if err := h2.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h2.Stop)
	return h2
}
