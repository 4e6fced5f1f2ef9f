package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus"
)

const sidetagIntegrationConf = `[hub]
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

// kojictl drives the sidetag plugin of a real hubd: names from the
// template with suffixes, the seed's policy, ownership, edit rules, and
// add-sidetag --wait returning when the first repo is ready.
func TestSidetagsWithKojictl(t *testing.T) {
	dir := t.TempDir()
	hubConf := filepath.Join(dir, "hub.conf")
	if err := os.WriteFile(hubConf, []byte(sidetagIntegrationConf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sidetag.conf"), []byte("[sidetag]\nallowed_suffixes = test\nname_template = {basetag}-side-{tag_id}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := StartHub(t, "--config", hubConf, "--plugin-config-dir", dir)
	admin := h.AdminClient(t)
	ctx := t.Context()
	for _, u := range []string{"alice", "bob"} {
		if err := admin.Call(ctx, "createUser", []any{u}, map[string]any{"password": u + "-pw"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := admin.Call(ctx, "createTag", []any{"f30-build"}, map[string]any{"arches": "x86_64",
		"extra": map[string]any{"sidetag_debuginfo_allowed": true}}, nil); err != nil {
		t.Fatal(err)
	}
	alice, bob := h.WriteProfile(t, "alice", "alice-pw"), h.WriteProfile(t, "bob", "bob-pw")
	ctl := func(profile string, args ...string) (string, string, int) {
		return RunCtl(t, append([]string{"-c", profile}, args...)...)
	}
	out, errOut, code := ctl(alice, "add-sidetag", "f30-build")
	first := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(first, "f30-build-side-") {
		t.Fatalf("add-sidetag: %d %q %s", code, out, errOut)
	}
	var id int64
	fmt.Sscanf(first, "f30-build-side-%d", &id)
	var tag map[string]any
	if err := admin.Call(ctx, "getTag", []any{first}, nil, &tag); err != nil || tag["id"] != float64(id) {
		t.Fatalf("the name's id %d is not the tag's: %v %v", id, tag["id"], err)
	}
	if out, _, code := ctl(alice, "add-sidetag", "--suffix", "test", "f30-build"); code != 0 || !strings.HasSuffix(strings.TrimSpace(out), "-test") {
		t.Fatalf("suffix: %d %q", code, out)
	}
	if _, errOut, code := ctl(alice, "add-sidetag", "--suffix", "prod", "f30-build"); code == 0 || !strings.Contains(errOut, "prod suffix is not allowed for sidetag") {
		t.Fatalf("disallowed suffix: %d %s", code, errOut)
	}
	// the seed's policy: number_of_tags counts live sidetags, "<= 10" lets an 11th through
	for i := 2; i < 11; i++ {
		if _, errOut, code := ctl(alice, "-q", "add-sidetag", "f30-build"); code != 0 {
			t.Fatalf("sidetag %d: %s", i+1, errOut)
		}
	}
	if _, errOut, code := ctl(alice, "add-sidetag", "f30-build"); code != 2 || !strings.Contains(errOut, "Policy violation") {
		t.Fatalf("12th sidetag: %d %s", code, errOut)
	}
	out, _, _ = ctl(alice, "list-sidetags", "--mine")
	if n := len(strings.Fields(out)); n != 11 {
		t.Fatalf("list-sidetags --mine: %d\n%s", n, out)
	}
	if _, errOut, code := ctl(bob, "remove-sidetag", first); code == 0 || !strings.Contains(errOut, "This is not your sidetag") {
		t.Fatalf("bob removing alice's: %d %s", code, errOut)
	}
	if _, errOut, code := ctl(alice, "edit-sidetag", "--debuginfo", first); code != 0 {
		t.Fatalf("edit-sidetag: %s", errOut)
	}
	if _, errOut, code := ctl(alice, "edit-sidetag", "--rpm-macro", "dist=.x", first); code == 0 || !strings.Contains(errOut, "RPM macros change is not allowed in parent tag.") {
		t.Fatalf("edit-sidetag macro: %d %s", code, errOut)
	}
	if _, errOut, code := ctl(alice, "remove-sidetag", first); code != 0 {
		t.Fatalf("remove-sidetag: %s", errOut)
	}
	// --wait requests the first repo and returns once it is ready
	out, errOut, code = ctl(bob, "add-sidetag", "--wait", "f30-build")
	if code != 0 || !strings.Contains(out, "f30-build-side-") || !strings.Contains(out+errOut, "Got repo") {
		t.Fatalf("add-sidetag --wait: %d\n%s%s", code, out, errOut)
	}
}

// Through kojictl too: several add-sidetag at once get distinct names that
// are their tags' ids; remove_empty removes a sidetag when its last build is
// untagged; the clean-up removes an empty sidetag after a short configured age.
func TestSidetagsConcurrentRemoveEmptyAndCleanup(t *testing.T) {
	dir := t.TempDir()
	hubConf := filepath.Join(dir, "hub.conf")
	if err := os.WriteFile(hubConf, []byte(sidetagIntegrationConf), 0o644); err != nil {
		t.Fatal(err)
	}
	// 0.00015 days: about 13 s, well after the remove_empty steps
	if err := os.WriteFile(filepath.Join(dir, "sidetag.conf"), []byte("[sidetag]\nremove_empty = true\ncleanup = true\ncleanup_empty_days = 0.00015\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := StartHub(t, "--config", hubConf, "--plugin-config-dir", dir)
	admin := h.AdminClient(t)
	events := watchEvents(t, h)
	ctx := t.Context()
	if err := admin.Call(ctx, "createTag", []any{"f30-build"}, map[string]any{"arches": "x86_64"}, nil); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	names := make(chan string, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, errOut, code := h.Ctl(t, "add-sidetag", "f30-build")
			if code != 0 {
				t.Errorf("add-sidetag: %s", errOut)
				return
			}
			names <- strings.TrimSpace(out)
		}()
	}
	wg.Wait()
	close(names)
	seen := map[string]bool{}
	for n := range names {
		var tag map[string]any
		var id int64
		fmt.Sscanf(n, "f30-build-side-%d", &id)
		if err := admin.Call(ctx, "getTag", []any{n}, nil, &tag); err != nil || seen[n] || tag["id"] != float64(id) {
			t.Fatalf("sidetag %s: id %v, seen %v, %v", n, tag["id"], seen[n], err)
		}
		seen[n] = true
	}
	if len(seen) != 8 {
		t.Fatalf("%d distinct sidetags, want 8", len(seen))
	}

	// remove_empty
	out, _, _ := h.Ctl(t, "add-sidetag", "f30-build")
	st := strings.TrimSpace(out)
	if _, errOut, code := h.Ctl(t, "add-pkg", "--owner", "kojiadmin", "f30-build", "bash"); code != 0 {
		t.Fatal(errOut)
	}
	if err := admin.Call(ctx, "createEmptyBuild", []any{"bash", "5.2", "1", nil}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := h.Ctl(t, "tag-build", "--nowait", st, "bash-5.2-1"); code != 0 {
		t.Fatalf("tag-build: %s", errOut)
	}
	if _, errOut, code := h.Ctl(t, "untag-build", st, "bash-5.2-1"); code != 0 {
		t.Fatalf("untag-build: %s", errOut)
	}
	if _, _, code := h.Ctl(t, "taginfo", st); code == 0 {
		t.Fatalf("%s still exists after its last build was untagged", st)
	}

	// clean-up: every remaining (empty) sidetag goes after about 13 s, each
	// removal announced by a sidetag.remove event.
	deadline := time.After(60 * time.Second)
	for len(seen) > 0 {
		select {
		case m := <-events.ch:
			ev, err := bus.EventFromMsg(m)
			if err != nil {
				t.Fatal(err)
			}
			tag := m.Header.Get(bus.HeaderPropPrefix + "tag")
			if ev.Address != "sidetag.remove" || !seen[tag] {
				continue
			}
			if why := m.Header.Get(bus.HeaderPropPrefix + "reason"); why != "empty" {
				t.Fatalf("%s removed with reason %q, want empty", tag, why)
			}
			delete(seen, tag)
		case <-deadline:
			t.Fatalf("sidetags not removed by the clean-up: %v", seen)
		}
	}
	if out, _, _ := h.Ctl(t, "list-sidetags"); strings.TrimSpace(out) != "" {
		t.Fatalf("sidetags left after the clean-up:\n%s", out)
	}
}
