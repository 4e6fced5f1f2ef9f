package hub

import (
	"slices"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

// setupTag creates a tag (with parent and extra when given) and adds packages to its list.
func setupTag(t *testing.T, h *TestHub, name string, parent any, extra map[string]any, pkgs ...string) {
	t.Helper()
	kw := map[string]any{"arches": "x86_64"}
	if parent != nil {
		kw["parent"] = parent
	}
	if extra != nil {
		kw["extra"] = extra
	}
	call(t, h.Admin, "createTag", []any{name}, kw, nil)
	for _, p := range pkgs {
		call(t, h.Admin, "packageListAdd", []any{name, p}, map[string]any{"owner": "kojiadmin"}, nil)
	}
}

func newBuild(t *testing.T, h *TestHub, name, version, release string) int64 {
	t.Helper()
	var id int64
	call(t, h.Admin, "createEmptyBuild", []any{name, version, release, nil}, nil, &id)
	return id
}

func TestTagAndUntagEmitEvents(t *testing.T) {
	h := StartTestHub(t, nil)
	setupTag(t, h, "f40", nil, nil, "bash")
	w := watchEvents(t, h)
	id := newBuild(t, h, "bash", "5.2", "1.fc40")
	if ev := w.next(t, "build.complete"); ev.Props["name"] != "bash" || ev.Props["new"] != "COMPLETE" || ev.Props["old"] != nil {
		t.Fatalf("build.complete props %v", ev.Props)
	}
	var b *bus.Build
	call(t, h.Admin, "getBuild", []any{"bash-5.2-1.fc40"}, nil, &b)
	if b == nil || b.ID != id || b.State != bus.BuildComplete || b.OwnerName != "kojiadmin" || b.NVR != "bash-5.2-1.fc40" || b.CreationEventID == 0 {
		t.Fatalf("getBuild = %+v", b)
	}
	var last0 int64
	call(t, h.Admin, "tagLastChangeEvent", []any{"f40"}, nil, &last0)
	call(t, h.Admin, "tagBuild", []any{"f40", id}, nil, nil)
	ev := w.next(t, "build.tag")
	want := map[string]any{"type": "Tag", "tag": "f40", "name": "bash", "version": "5.2", "release": "1.fc40", "user": "kojiadmin"}
	for k, v := range want {
		if ev.Props[k] != v {
			t.Fatalf("build.tag prop %s = %v, want %v (all: %v)", k, ev.Props[k], v, ev.Props)
		}
	}
	var last1 int64
	call(t, h.Admin, "tagLastChangeEvent", []any{"f40"}, nil, &last1)
	if last1 <= last0 {
		t.Fatalf("tagging did not touch the tag: %d -> %d", last0, last1)
	}
	var tagged []bus.TaggedBuild
	call(t, h.Admin, "listTagged", []any{"f40"}, nil, &tagged)
	if len(tagged) != 1 || tagged[0].NVR != "bash-5.2-1.fc40" || tagged[0].TagName != "f40" || tagged[0].CreateEvent == 0 {
		t.Fatalf("listTagged = %+v", tagged)
	}

	alice := h.UserClient(t, "alice")
	newBuild(t, h, "zsh", "5.9", "1")
	newBuild(t, h, "bash", "5.3", "0.1")
	var building int64
	var bb bus.Build
	call(t, h.Admin, "importBuild", []any{map[string]any{"name": "bash", "version": "6", "release": "1", "epoch": nil, "state": "BUILDING"}}, nil, &bb)
	building = bb.ID
	if bb.State != bus.BuildBuilding {
		t.Fatalf("importBuild state %d", bb.State)
	}
	assertRefused(t, h, []badCall{
		{name: "already tagged", method: "tagBuild", args: []any{"f40", id}, code: bus.CodeTagError, msg: "build bash-5.2-1.fc40 already tagged (f40)"},
		{name: "not in list", method: "tagBuild", args: []any{"f40", "zsh-5.9-1"}, code: bus.CodeTagError, msg: "Package zsh not in list for f40"},
		{name: "not complete", method: "tagBuild", args: []any{"f40", building}, code: bus.CodeTagError, msg: "build bash-6-1 not complete: state BUILDING"},
		{name: "no such tag", method: "tagBuild", args: []any{"nope", id}, code: bus.CodeGenericError, msg: "No such tagInfo: 'nope'"},
		{name: "no such build", method: "tagBuild", args: []any{"f40", "bash-9-9"}, code: bus.CodeGenericError, msg: "No such build: 'bash-9-9'"},
		{name: "bad nvr", method: "getBuild", args: []any{"bash"}, code: bus.CodeGenericError, msg: "invalid format: bash"},
		{name: "policy", client: alice, method: "tagBuild", args: []any{"f40", "bash-5.3-0.1"}, code: bus.CodeActionNotAllowed, msg: "policy violation (tag)"},
		{name: "untag policy", client: alice, method: "untagBuild", args: []any{"f40", id}, code: bus.CodeActionNotAllowed, msg: "policy violation (tag)"},
		{name: "anonymous", client: h.Anonymous(), method: "tagBuild", args: []any{"f40", id}, code: bus.CodeActionNotAllowed},
		{name: "duplicate build", method: "createEmptyBuild", args: []any{"bash", "5.2", "1.fc40", nil}, code: bus.CodeGenericError},
		{name: "bad version", method: "createEmptyBuild", args: []any{"bash", "5-2", "1", nil}, code: bus.CodeGenericError, msg: "Invalid build version: 5-2"},
		{name: "import needs admin", client: alice, method: "importBuild", args: []any{map[string]any{"name": "x", "version": "1", "release": "1", "epoch": nil}}, code: bus.CodeActionNotAllowed},
		{name: "import unknown owner", method: "importBuild", args: []any{map[string]any{"name": "x", "version": "1", "release": "1", "epoch": nil, "owner": "nobody"}}, code: bus.CodeGenericError, msg: "No such user: 'nobody'"},
		{name: "strict getBuild", method: "getBuild", args: []any{12345}, kwargs: map[string]any{"strict": true}, code: bus.CodeGenericError, msg: "No such build: 12345"},
	})

	call(t, h.Admin, "untagBuild", []any{"f40", "bash-5.2-1.fc40"}, nil, nil)
	ev = w.next(t, "build.untag")
	if ev.Props["type"] != "Untag" || ev.Props["tag"] != "f40" || ev.Props["name"] != "bash" {
		t.Fatalf("build.untag props %v", ev.Props)
	}
	assertRefused(t, h, []badCall{
		{name: "untag not tagged", method: "untagBuild", args: []any{"f40", id}, code: bus.CodeTagError, msg: "build bash-5.2-1.fc40 not in tag f40"},
	})
	before := h.Store().Applied()
	call(t, h.Admin, "untagBuild", []any{"f40", id}, map[string]any{"strict": false}, nil)
	if h.Store().Applied() != before {
		t.Fatal("a non-strict untag of an untagged build changed state")
	}
	// force by an admin adds the package to the list
	call(t, h.Admin, "tagBuild", []any{"f40", "zsh-5.9-1"}, map[string]any{"force": true}, nil)
	call(t, h.Admin, "listTagged", []any{"f40"}, map[string]any{"package": "zsh"}, &tagged)
	if len(tagged) != 1 {
		t.Fatalf("forced tag: %+v", tagged)
	}
	var builds []bus.Build
	call(t, h.Admin, "listBuilds", nil, map[string]any{"packageID": "bash", "state": bus.BuildComplete}, &builds)
	if len(builds) != 2 {
		t.Fatalf("listBuilds(bash, COMPLETE) = %d builds", len(builds))
	}
}

func TestListTaggedInheritanceAndLatest(t *testing.T) {
	h := StartTestHub(t, nil)
	setupTag(t, h, "base", nil, nil, "bash", "zsh", "fish")
	setupTag(t, h, "child", "base", nil)
	b1 := newBuild(t, h, "bash", "1", "1")
	b2 := newBuild(t, h, "bash", "2", "1")
	z1 := newBuild(t, h, "zsh", "1", "1")
	b3 := newBuild(t, h, "bash", "3", "1")
	f1 := newBuild(t, h, "fish", "1", "1")
	for _, id := range []int64{b1, b2, z1, f1} {
		call(t, h.Admin, "tagBuild", []any{"base", id}, nil, nil)
	}
	call(t, h.Admin, "tagBuild", []any{"child", b3}, nil, nil)
	// fish is blocked in the child: inherited builds of it disappear there
	call(t, h.Admin, "packageListBlock", []any{"child", "fish"}, nil, nil)

	nvrs := func(list []bus.TaggedBuild) []string {
		var out []string
		for _, b := range list {
			out = append(out, b.NVR+"@"+b.TagName)
		}
		return out
	}
	var got []bus.TaggedBuild
	call(t, h.Admin, "listTagged", []any{"child"}, nil, &got)
	if s := nvrs(got); len(s) != 1 || s[0] != "bash-3-1@child" {
		t.Fatalf("child without inherit: %v", s)
	}
	call(t, h.Admin, "listTagged", []any{"child"}, map[string]any{"inherit": true}, &got)
	if s := nvrs(got); len(s) != 4 || s[0] != "bash-3-1@child" || s[1] != "zsh-1-1@base" || s[2] != "bash-2-1@base" || s[3] != "bash-1-1@base" {
		t.Fatalf("child with inherit: %v", s)
	}
	call(t, h.Admin, "listTagged", []any{"child"}, map[string]any{"inherit": true, "latest": true}, &got)
	if s := nvrs(got); len(s) != 2 || s[0] != "bash-3-1@child" || s[1] != "zsh-1-1@base" {
		t.Fatalf("child latest: %v", s)
	}
	call(t, h.Admin, "getLatestBuilds", []any{"base"}, nil, &got)
	if s := nvrs(got); len(s) != 3 || s[0] != "fish-1-1@base" || s[1] != "zsh-1-1@base" || s[2] != "bash-2-1@base" {
		t.Fatalf("base latest: %v", s)
	}
	call(t, h.Admin, "getLatestBuilds", []any{"child"}, map[string]any{"package": "bash"}, &got)
	if s := nvrs(got); len(s) != 1 || s[0] != "bash-3-1@child" {
		t.Fatalf("child latest bash: %v", s)
	}
	// retagging an older build with force makes it the latest
	call(t, h.Admin, "tagBuild", []any{"base", b1}, map[string]any{"force": true}, nil)
	call(t, h.Admin, "getLatestBuilds", []any{"base"}, map[string]any{"package": "bash"}, &got)
	if s := nvrs(got); len(s) != 1 || s[0] != "bash-1-1@base" {
		t.Fatalf("after retag: %v", s)
	}
	call(t, h.Admin, "listTagged", []any{"base"}, map[string]any{"prefix": "Z"}, &got)
	if s := nvrs(got); len(s) != 1 || s[0] != "zsh-1-1@base" {
		t.Fatalf("prefix: %v", s)
	}
	var none []bus.TaggedBuild
	call(t, h.Admin, "listTagged", []any{"nope"}, map[string]any{"strict": false}, &none)
	if len(none) != 0 {
		t.Fatalf("non-strict unknown tag: %v", none)
	}
}

// TestListTagsOfABuild: listTags(build=...) answers the tags the build is
// in (by id or NVR), through tagging and untagging, from the views' index
// of tagged builds by build.
func TestListTagsOfABuild(t *testing.T) {
	h := StartTestHub(t, nil)
	for _, tag := range []string{"f40", "f41", "f42"} {
		setupTag(t, h, tag, nil, nil, "bash")
	}
	id := newBuild(t, h, "bash", "5.2", "1.fc40")
	other := newBuild(t, h, "bash", "5.3", "1.fc40")
	call(t, h.Admin, "tagBuild", []any{"f42", id}, nil, nil)
	call(t, h.Admin, "tagBuild", []any{"f40", id}, nil, nil)
	call(t, h.Admin, "tagBuild", []any{"f41", other}, nil, nil)
	names := func(build any) []string {
		t.Helper()
		var rows []map[string]any
		call(t, h.Admin, "listTags", nil, map[string]any{"build": build, "queryOpts": map[string]any{"order": "name"}}, &rows)
		out := []string{}
		for _, r := range rows {
			out = append(out, r["name"].(string))
		}
		return out
	}
	for _, ref := range []any{id, "bash-5.2-1.fc40"} {
		if got := names(ref); !slices.Equal(got, []string{"f40", "f42"}) {
			t.Fatalf("listTags(build=%v) = %v, want f40 and f42", ref, got)
		}
	}
	call(t, h.Admin, "untagBuild", []any{"f40", id}, nil, nil)
	if got := names(id); !slices.Equal(got, []string{"f42"}) {
		t.Fatalf("after untagging from f40: %v", got)
	}
	if got := names(other); !slices.Equal(got, []string{"f41"}) {
		t.Fatalf("the other build: %v", got)
	}
}

// TestListBuildsOfAPackageOrTaskAgreesWithAScan: listBuilds of a package or
// of a task reads the views' index of builds; it answers what filtering
// every build does, through a failed build recreated under another task.
func TestListBuildsOfAPackageOrTaskAgreesWithAScan(t *testing.T) {
	h := StartTestHub(t, nil)
	imp := func(name, version string, task any, state string) {
		t.Helper()
		call(t, h.Admin, "importBuild", []any{map[string]any{"name": name, "version": version, "release": "1", "epoch": nil, "state": state, "task_id": task}}, nil, nil)
	}
	imp("bash", "1", nil, "COMPLETE")
	imp("bash", "2", 7, "COMPLETE")
	imp("zsh", "1", 7, "COMPLETE")
	imp("zsh", "2", 9, "FAILED")
	check := func(step string) {
		t.Helper()
		var all []bus.Build
		call(t, h.Admin, "listBuilds", nil, nil, &all)
		for _, kw := range []map[string]any{{"packageID": "bash"}, {"packageID": "zsh"}, {"taskID": 7}, {"taskID": 9}, {"taskID": 11}, {"packageID": "zsh", "taskID": 7}} {
			want := []string{}
			for _, b := range all {
				if p, ok := kw["packageID"]; ok && b.Name != p {
					continue
				}
				if task, ok := kw["taskID"]; ok && (b.TaskID == nil || *b.TaskID != int64(task.(int))) {
					continue
				}
				want = append(want, b.NVR)
			}
			var got []bus.Build
			call(t, h.Admin, "listBuilds", nil, kw, &got)
			nvrs := []string{}
			for _, b := range got {
				nvrs = append(nvrs, b.NVR)
			}
			if !slices.Equal(nvrs, want) {
				t.Errorf("%s: listBuilds(%v) = %v, want %v", step, kw, nvrs, want)
			}
		}
	}
	check("imported")
	imp("zsh", "2", 11, "COMPLETE") // the failed build is recreated by task 11
	check("recreated")
}
