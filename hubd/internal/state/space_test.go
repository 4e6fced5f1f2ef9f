package state

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestIsNoSpace(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"insufficient resources", fmt.Errorf("state: commit: %w", &jetstream.APIError{Code: 503, ErrorCode: 10023, Description: "insufficient resources"}), true},
		{"storage resources exceeded", &jetstream.APIError{Code: 500, ErrorCode: 10047, Description: "storage resources exceeded"}, true},
		{"ENOSPC", fmt.Errorf("write: %w", syscall.ENOSPC), true},
		{"other API error", &jetstream.APIError{Code: 400, ErrorCode: 10071, Description: "wrong last sequence"}, false},
		{"timeout", errors.New("nats: timeout waiting for ack"), false},
		{"nil", nil, false},
	} {
		if got := IsNoSpace(tc.err); got != tc.want {
			t.Errorf("%s: IsNoSpace(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}
