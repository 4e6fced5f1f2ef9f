package hub

import (
	"context"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

// TestTagBuildBypass: no package list and no policy; a retag or a locked
// tag needs force; the tag permission is required.
func TestTagBuildBypass(t *testing.T) {
	h := StartTestHub(t, nil)
	setupTag(t, h, "f40", nil, nil) // no packages listed
	setupTag(t, h, "locked", nil, nil)
	call(t, h.Admin, "editTag2", []any{"locked"}, map[string]any{"locked": true}, nil)
	id := newBuild(t, h, "bash", "5.2", "1.fc40")
	alice := h.UserClient(t, "alice")
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		client *bus.Client
		args   []any
		kw     map[string]any
		code   int
		msg    string
	}{
		{"not in the package list", h.Admin, []any{"f40", id}, nil, 0, ""},
		{"retag", h.Admin, []any{"f40", id}, nil, bus.CodeTagError, "build bash-5.2-1.fc40 already tagged (f40)"},
		{"retag forced", h.Admin, []any{"f40", "bash-5.2-1.fc40"}, map[string]any{"force": true}, 0, ""},
		{"locked", h.Admin, []any{"locked", id}, nil, bus.CodeTagError, "Tag locked is locked"},
		{"locked forced", h.Admin, []any{"locked", id}, map[string]any{"force": true, "notify": true}, 0, ""},
		{"no permission", alice, []any{"f40", id}, map[string]any{"force": true}, bus.CodeActionNotAllowed, ""},
		{"no such tag", h.Admin, []any{"nope", id}, nil, bus.CodeGenericError, "No such tagInfo: 'nope'"},
		{"no such build", h.Admin, []any{"f40", "bash-9-9"}, nil, bus.CodeGenericError, "No such build: 'bash-9-9'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.client.Call(ctx, "tagBuildBypass", tc.args, tc.kw, nil)
			if tc.code == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantFault(t, err, tc.code, tc.msg)
		})
	}
	// tagged though its package is in no list (listTagged shows listed packages only)
	var tags []bus.Tag
	call(t, h.Admin, "listTags", nil, map[string]any{"build": id}, &tags)
	if len(tags) != 2 || tags[0].Name != "f40" || tags[1].Name != "locked" {
		t.Fatalf("listTags(build) = %+v", tags)
	}
}
