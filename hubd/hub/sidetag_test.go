package hub

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

const sidetagHubConf = `[hub]
Plugins = sidetag_hub

[policy]
sidetag =
    # allow maximum of 10 sidetags per user for f30-build tag
    tag f30-build && compare number_of_tags <= 10 :: allow
    # forbid everything else
    all :: deny

tag =
    is_sidetag_owner :: allow
    is_sidetag_owner fromtag :: allow
    has_perm admin tag :: allow
    all :: deny
`

// sidetagHub starts a hub with the sidetag plugin, the seed's policy and
// sidetag.conf, and a base tag f30-build.
func sidetagHub(t *testing.T, sidetagConf string) *TestHub {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "sidetag.conf"), []byte(sidetagConf), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := writeHubConf(t, sidetagHubConf)
	h := StartTestHub(t, func(c *Config) { c.HubConf, c.PluginConfigDir = conf, dir })
	call(t, h.Admin, "createTag", []any{"f30-build"}, map[string]any{"arches": "x86_64 aarch64",
		"extra": map[string]any{"sidetag_debuginfo_allowed": true, "sidetag_rpm_macros_allowed": "dist* _with_*"}}, nil)
	call(t, h.Admin, "createTag", []any{"f31-build"}, nil, nil)
	return h
}

type sideTag struct {
	Name    string `json:"name"`
	ID      int64  `json:"id"`
	TaskID  *int64 `json:"task_id"`
	Request any    `json:"request"`
}

func TestSidetagPluginIsOffUnlessEnabled(t *testing.T) {
	h := StartTestHub(t, nil)
	err := h.Admin.Call(context.Background(), "createSideTag", []any{"x"}, nil, nil)
	if err == nil {
		t.Fatal("createSideTag without the plugin")
	}
	var methods []string
	call(t, h.Admin, "system.listMethods", nil, nil, &methods)
	for _, m := range methods {
		if m == "createSideTag" {
			t.Fatal("list-api shows createSideTag without the plugin")
		}
	}
}

func TestCreateSideTag(t *testing.T) {
	h := sidetagHub(t, "[sidetag]\nallowed_suffixes = test, ci\n")
	alice := h.UserClient(t, "alice")
	ctx := context.Background()
	var st sideTag
	call(t, alice, "createSideTag", []any{"f30-build"}, map[string]any{"debuginfo": true}, &st)
	if st.Name != fmt.Sprintf("f30-build-side-%d", st.ID) || st.TaskID != nil || st.Request != nil {
		t.Fatalf("created %+v", st)
	}
	var tag bus.Tag
	call(t, h.Admin, "getTag", []any{st.ID}, nil, &tag)
	if tag.Name != st.Name || tag.Arches == nil || *tag.Arches != "x86_64 aarch64" || tag.Extra["sidetag"] != true ||
		tag.Extra["sidetag_user"] != "alice" || tag.Extra["with_debuginfo"] != true {
		t.Fatalf("tag %+v", tag)
	}
	var target bus.BuildTarget
	call(t, h.Admin, "getBuildTarget", []any{st.Name}, nil, &target)
	if target.BuildTag != st.ID || target.DestTag != st.ID {
		t.Fatalf("target %+v", target)
	}
	var withSuffix sideTag
	call(t, alice, "createSideTag", []any{"f30-build"}, map[string]any{"suffix": "ci"}, &withSuffix)
	if withSuffix.Name != fmt.Sprintf("f30-build-side-%d-ci", withSuffix.ID) {
		t.Fatalf("suffix: %s", withSuffix.Name)
	}
	before := h.Store().Applied()
	for _, tc := range []struct {
		args []any
		kw   map[string]any
		code int
		msg  string
	}{
		{[]any{"f30-build"}, map[string]any{"suffix": "prod"}, bus.CodeGenericError, "prod suffix is not allowed for sidetag"},
		{[]any{"f31-build"}, nil, bus.CodeActionNotAllowed, "policy violation (sidetag)"},
		{[]any{"nosuch"}, nil, bus.CodeGenericError, "No such tagInfo: 'nosuch'"},
	} {
		err := alice.Call(ctx, "createSideTag", tc.args, tc.kw, nil)
		wantFault(t, err, tc.code, tc.msg)
	}
	if h.Store().Applied() != before {
		t.Fatal("a refused createSideTag changed state")
	}
}

// The seed's policy: number_of_tags counts the user's live sidetags, so
// "<= 10" lets the 11th through and refuses the 12th.
func TestSidetagPolicyLimit(t *testing.T) {
	h := sidetagHub(t, "")
	bob := h.UserClient(t, "bob")
	for i := 0; i < 11; i++ {
		call(t, bob, "createSideTag", []any{"f30-build"}, nil, nil)
	}
	err := bob.Call(context.Background(), "createSideTag", []any{"f30-build"}, nil, nil)
	wantFault(t, err, bus.CodeActionNotAllowed, "policy violation (sidetag)")
	// another user has their own count
	call(t, h.UserClient(t, "carol"), "createSideTag", []any{"f30-build"}, nil, nil)
}

func TestConcurrentCreateSideTagNamesAreTheirIDs(t *testing.T) {
	h := sidetagHub(t, "")
	var wg sync.WaitGroup
	results := make(chan sideTag, 40)
	for u := 0; u < 4; u++ {
		c := h.UserClient(t, fmt.Sprintf("user%d", u))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				var st sideTag
				if err := c.Call(context.Background(), "createSideTag", []any{"f30-build"}, nil, &st); err != nil {
					t.Error(err)
					return
				}
				results <- st
			}
		}()
	}
	wg.Wait()
	close(results)
	seen := map[string]bool{}
	for st := range results {
		if seen[st.Name] || st.Name != fmt.Sprintf("f30-build-side-%d", st.ID) {
			t.Fatalf("sidetag %+v (duplicate: %v)", st, seen[st.Name])
		}
		seen[st.Name] = true
		var tag bus.Tag
		call(t, h.Admin, "getTag", []any{st.Name}, nil, &tag)
		if tag.ID != st.ID {
			t.Fatalf("%s has id %d, name says %d", st.Name, tag.ID, st.ID)
		}
	}
	if len(seen) != 40 {
		t.Fatalf("%d sidetags", len(seen))
	}
}

func TestRemoveListAndEditSideTag(t *testing.T) {
	h := sidetagHub(t, "")
	alice := h.UserClient(t, "alice")
	bob := h.UserClient(t, "bob")
	sidetagAdmin := h.UserClient(t, "sam", "sidetag_admin")
	ctx := context.Background()
	var a1, a2, b1 sideTag
	call(t, alice, "createSideTag", []any{"f30-build"}, nil, &a1)
	call(t, alice, "createSideTag", []any{"f30-build"}, nil, &a2)
	call(t, bob, "createSideTag", []any{"f30-build"}, nil, &b1)

	var rows []map[string]any
	call(t, bob, "listSideTags", nil, map[string]any{"user": "alice"}, &rows)
	if len(rows) != 2 || rows[0]["name"] != a1.Name || rows[0]["user_id"] == nil || rows[0]["user_name"] != "alice" {
		t.Fatalf("listSideTags(user=alice) %v", rows)
	}
	if _, isString := rows[0]["user_id"].(string); !isString {
		t.Fatalf("user_id %#v: Koji returns a string", rows[0]["user_id"])
	}
	call(t, bob, "listSideTags", nil, map[string]any{"basetag": "f30-build"}, &rows)
	if len(rows) != 3 {
		t.Fatalf("listSideTags(basetag) %v", rows)
	}

	wantFault(t, bob.Call(ctx, "removeSideTag", []any{a1.Name}, nil, nil), bus.CodeActionNotAllowed, "This is not your sidetag")
	wantFault(t, alice.Call(ctx, "removeSideTag", []any{"f30-build"}, nil, nil), bus.CodeGenericError, "Not a sidetag: f30-build")
	wantFault(t, bob.Call(ctx, "editSideTag", []any{a1.Name}, map[string]any{"debuginfo": true}, nil), bus.CodeActionNotAllowed, "This is not your sidetag")

	// edit: debuginfo and macros by the parent's rules; extra only for sidetag_admin/admin
	call(t, alice, "editSideTag", []any{a1.Name}, map[string]any{"debuginfo": true, "rpm_macros": map[string]any{"dist": ".fc30~side"}}, nil)
	var tag bus.Tag
	call(t, h.Admin, "getTag", []any{a1.Name}, nil, &tag)
	if tag.Extra["with_debuginfo"] != true || tag.Extra["rpm.macro.dist"] != ".fc30~side" {
		t.Fatalf("after edit: %v", tag.Extra)
	}
	for _, tc := range []struct {
		kw  map[string]any
		msg string
	}{
		{map[string]any{"rpm_macros": map[string]any{"optflags": "-O0"}}, "RPM macro optflags editing is not allowed via parent tag"},
		{map[string]any{"rpm_macros": map[string]any{"9x": "y"}}, "Invalid macro name '9x'"},
		{map[string]any{"extra": map[string]any{"k": "v"}}, "Extra can be modified only with sidetag_admin or admin permissions."},
	} {
		wantFault(t, alice.Call(ctx, "editSideTag", []any{a1.Name}, tc.kw, nil), bus.CodeGenericError, tc.msg)
	}
	// sidetag_admin edits extra of their own sidetags; others' need admin
	var s1 sideTag
	call(t, sidetagAdmin, "createSideTag", []any{"f30-build"}, nil, &s1)
	call(t, sidetagAdmin, "editSideTag", []any{s1.Name}, map[string]any{"extra": map[string]any{"k": "v"}}, nil)
	wantFault(t, sidetagAdmin.Call(ctx, "editSideTag", []any{a1.Name}, map[string]any{"extra": map[string]any{"k": "v"}}, nil),
		bus.CodeActionNotAllowed, "This is not your sidetag")
	call(t, h.Admin, "editSideTag", []any{a1.Name}, map[string]any{"extra": map[string]any{"k": "v"}}, nil)
	// both removals the caller asks for apply (Koji drops remove_extra then)
	call(t, h.Admin, "editSideTag", []any{a1.Name}, map[string]any{"remove_rpm_macros": []any{"dist"}, "remove_extra": []any{"k"}}, nil)
	tag = bus.Tag{} // json merges into a map it decodes into
	call(t, h.Admin, "getTag", []any{a1.Name}, nil, &tag)
	if _, has := tag.Extra["rpm.macro.dist"]; has || tag.Extra["k"] != nil {
		t.Fatalf("after removals: %v", tag.Extra)
	}

	// removal untags builds with their events; admin may remove anyone's
	call(t, h.Admin, "packageListAdd", []any{"f30-build", "bash"}, map[string]any{"owner": "kojiadmin"}, nil)
	id := newBuild(t, h, "bash", "1", "1")
	call(t, alice, "tagBuild", []any{a2.Name, id}, nil, nil)
	w := watchEvents(t, h)
	call(t, h.Admin, "removeSideTag", []any{a2.Name}, nil, nil)
	if ev := w.next(t, "build.untag"); ev.Props["tag"] != a2.Name {
		t.Fatalf("untag event %v", ev.Props)
	}
	if ev := w.next(t, "sidetag.remove"); ev.Props["tag"] != a2.Name {
		t.Fatalf("sidetag.remove %v", ev.Props)
	}
	var gone *bus.Tag
	call(t, h.Admin, "getTag", []any{a2.Name}, nil, &gone)
	var goneTarget *bus.BuildTarget
	call(t, h.Admin, "getBuildTarget", []any{a2.Name}, nil, &goneTarget)
	if gone != nil || goneTarget != nil {
		t.Fatalf("left behind: %v %v", gone, goneTarget)
	}
}

func TestRemoveEmptySidetag(t *testing.T) {
	h := sidetagHub(t, "[sidetag]\nremove_empty = true\n")
	alice := h.UserClient(t, "alice")
	call(t, h.Admin, "packageListAdd", []any{"f30-build", "bash"}, map[string]any{"owner": "kojiadmin"}, nil)
	b1, b2 := newBuild(t, h, "bash", "1", "1"), newBuild(t, h, "bash", "1", "2")
	var st sideTag
	call(t, alice, "createSideTag", []any{"f30-build"}, nil, &st)
	call(t, alice, "tagBuild", []any{st.Name, b1}, nil, nil)
	call(t, alice, "tagBuild", []any{st.Name, b2}, nil, nil)
	call(t, alice, "untagBuild", []any{st.Name, b1}, nil, nil)
	var tag *bus.Tag
	call(t, h.Admin, "getTag", []any{st.Name}, nil, &tag)
	if tag == nil {
		t.Fatal("removed with a build left")
	}
	call(t, alice, "untagBuild", []any{st.Name, b2}, nil, nil)
	call(t, h.Admin, "getTag", []any{st.Name}, nil, &tag)
	if tag != nil {
		t.Fatal("empty sidetag not removed")
	}
}

func TestSidetagCleanup(t *testing.T) {
	// 0.00002 days: about 1.7 s
	h := sidetagHub(t, "[sidetag]\ncleanup = true\ncleanup_empty_days = 0.00002\n")
	alice := h.UserClient(t, "alice")
	w := watchEvents(t, h)
	var st sideTag
	call(t, alice, "createSideTag", []any{"f30-build"}, nil, &st)
	ev := w.next(t, "sidetag.remove")
	if ev.Props["tag"] != st.Name || ev.Props["reason"] != "empty" {
		t.Fatalf("clean-up event %v", ev.Props)
	}
}
