package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

func wantFault(t *testing.T, err error, code int, msg string) {
	t.Helper()
	var f *bus.Fault
	if !errors.As(err, &f) || f.Code != code || (msg != "" && f.Message != msg) {
		t.Fatalf("err = %v, want %s: %s", err, bus.FaultName(code), msg)
	}
}

func TestTagBuildConfigInheritance(t *testing.T) {
	h := StartTestHub(t, nil)
	a := h.Admin
	var top, mid, leaf int64
	call(t, a, "createTag", []any{"top"}, map[string]any{"arches": "x86_64 aarch64",
		"extra": map[string]any{"a": 1, "b": "top", "c": "top", "mock.new_chroot": 0}}, &top)
	call(t, a, "createTag", []any{"mid"}, map[string]any{"parent": "top", "extra": map[string]any{"b": "mid"}}, &mid)
	call(t, a, "createTag", []any{"leaf"}, map[string]any{"parent": "mid", "extra": map[string]any{"c": "leaf"}}, &leaf)

	var cfg bus.BuildConfig
	call(t, a, "getBuildConfig", []any{"leaf"}, nil, &cfg)
	if cfg.Arches == nil || *cfg.Arches != "x86_64 aarch64" {
		t.Fatalf("arches %v, want inherited from top", cfg.Arches)
	}
	want := map[string]any{"a": 1.0, "b": "mid", "c": "leaf", "mock.new_chroot": 0.0}
	if !reflect.DeepEqual(cfg.Extra, want) {
		t.Fatalf("extra %v, want %v", cfg.Extra, want)
	}
	if cfg.ConfigInheritance.Arches == nil || cfg.ConfigInheritance.Arches.Name != "top" || cfg.ConfigInheritance.Extra["b"].Name != "mid" {
		t.Fatalf("config_inheritance %+v", cfg.ConfigInheritance)
	}
	// getTag's extra is not inherited.
	var tag bus.Tag
	call(t, a, "getTag", []any{leaf}, nil, &tag)
	if !reflect.DeepEqual(tag.Extra, map[string]any{"c": "leaf"}) || tag.Name != "leaf" {
		t.Fatalf("getTag %+v", tag)
	}

	// A blocked key is neither local nor inherited.
	call(t, a, "editTag2", []any{"leaf"}, map[string]any{"block_extra": []string{"a"}}, nil)
	cfg = bus.BuildConfig{}
	call(t, a, "getBuildConfig", []any{"leaf"}, nil, &cfg)
	if _, ok := cfg.Extra["a"]; ok {
		t.Fatalf("blocked extra a still present: %v", cfg.Extra)
	}
	var blocked map[string]any
	call(t, a, "getTag", []any{"leaf"}, map[string]any{"blocked": true}, &blocked)
	if !reflect.DeepEqual(blocked["extra"], map[string]any{"a": []any{true, nil}, "c": []any{false, "leaf"}}) {
		t.Fatalf("getTag(blocked) extra %v", blocked["extra"])
	}

	// noconfig: packages yes, config no.
	call(t, a, "createTag", []any{"nocfg"}, nil, nil)
	call(t, a, "setInheritanceData", []any{"nocfg", []any{map[string]any{"parent_id": top, "priority": 0, "maxdepth": nil,
		"intransitive": false, "noconfig": true, "pkg_filter": ""}}}, nil, nil)
	cfg = bus.BuildConfig{}
	call(t, a, "getBuildConfig", []any{"nocfg"}, nil, &cfg)
	if len(cfg.Extra) != 0 || (cfg.Arches != nil && *cfg.Arches != "") {
		t.Fatalf("noconfig link passed config: arches %v extra %v", cfg.Arches, cfg.Extra)
	}

	// maxdepth 0: the parent only, not the grandparent.
	call(t, a, "createTag", []any{"shallow"}, nil, nil)
	call(t, a, "setInheritanceData", []any{"shallow", []any{map[string]any{"parent_id": leaf, "priority": 0, "maxdepth": 0,
		"intransitive": false, "noconfig": false, "pkg_filter": ""}}}, nil, nil)
	cfg = bus.BuildConfig{}
	call(t, a, "getBuildConfig", []any{"shallow"}, nil, &cfg)
	if !reflect.DeepEqual(cfg.Extra, map[string]any{"c": "leaf"}) || (cfg.Arches != nil && *cfg.Arches != "") {
		t.Fatalf("maxdepth 0: arches %v extra %v", cfg.Arches, cfg.Extra)
	}
	var full []bus.FullInheritanceLink
	call(t, a, "getFullInheritance", []any{"shallow"}, nil, &full)
	if len(full) != 1 || full[0].ParentID != leaf || full[0].NextDepth == nil || *full[0].NextDepth != 0 || full[0].CurrDepth != 1 {
		t.Fatalf("getFullInheritance(shallow) = %+v", full)
	}
	call(t, a, "getFullInheritance", []any{"leaf"}, nil, &full)
	if len(full) != 2 || full[0].Name != "mid" || full[1].Name != "top" || full[1].CurrDepth != 2 || *full[1].ChildID != mid {
		t.Fatalf("getFullInheritance(leaf) = %+v", full)
	}
	call(t, a, "getFullInheritance", []any{"top"}, map[string]any{"reverse": true}, &full)
	names := []string{}
	for _, l := range full {
		names = append(names, l.Name)
	}
	// shallow links to leaf with maxdepth 0: not a descendant of top at depth 3.
	if !reflect.DeepEqual(names, []string{"mid", "leaf", "nocfg"}) {
		t.Fatalf("reverse inheritance of top: %v", names)
	}
	var last int64
	call(t, a, "tagLastChangeEvent", []any{"leaf"}, nil, &last)
	if last == 0 {
		t.Fatal("tagLastChangeEvent = 0")
	}
}

func TestTagInheritanceValidation(t *testing.T) {
	h := StartTestHub(t, nil)
	a := h.Admin
	var p1, p2, child int64
	call(t, a, "createTag", []any{"p1"}, nil, &p1)
	call(t, a, "createTag", []any{"p2"}, nil, &p2)
	call(t, a, "createTag", []any{"child"}, map[string]any{"parent": "p1"}, &child)
	link := func(parent int64, pri int) map[string]any {
		return map[string]any{"parent_id": parent, "priority": pri, "maxdepth": nil, "intransitive": false, "noconfig": false, "pkg_filter": ""}
	}
	cases := []struct {
		name string
		args []any
		kw   map[string]any
		code int
		msg  string
	}{
		{"same priority", []any{"child", []any{link(p2, 0)}}, nil, bus.CodeGenericError,
			"Multiple parent tags ([1, 2]) cannot have the same priority value (0) on child tag 3"},
		{"cycle", []any{"p1", []any{link(child, 5)}}, nil, bus.CodeGenericError, "Inheritance loop: child already inherits from p1"},
		{"self", []any{"p1", []any{link(p1, 5)}}, nil, bus.CodeGenericError, "Inheritance loop: tag p1 cannot inherit from itself"},
		{"missing field", []any{"child", []any{map[string]any{"parent_id": p2}}}, nil, bus.CodeGenericError, "No value for priority"},
		{"unknown parent", []any{"child", []any{link(99, 3)}}, nil, bus.CodeGenericError, "No such tagInfo: 99"},
		{"unknown tag", []any{"nosuch", []any{link(p2, 3)}}, nil, bus.CodeGenericError, "No such entry in table tag: nosuch"},
		{"bad data", []any{"child", 42}, nil, bus.CodeParameterError, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.Store().Applied()
			wantFault(t, a.Call(ctxT(t), "setInheritanceData", tc.args, tc.kw, nil), tc.code, tc.msg)
			if h.Store().Applied() != before {
				t.Fatal("a refused call changed state")
			}
		})
	}
	// clear + delete link.
	call(t, a, "setInheritanceData", []any{"child", []any{link(p2, 10)}}, nil, nil)
	var data []bus.InheritanceLink
	call(t, a, "getInheritanceData", []any{"child"}, nil, &data)
	if len(data) != 2 || data[0].Name != "p1" || data[1].Name != "p2" || data[1].ChildID != child {
		t.Fatalf("inheritance %+v", data)
	}
	call(t, a, "setInheritanceData", []any{"child", []any{map[string]any{"parent_id": p1, "delete link": true}}}, nil, nil)
	call(t, a, "getInheritanceData", []any{"child"}, nil, &data)
	if len(data) != 1 || data[0].ParentID != p2 {
		t.Fatalf("after delete link: %+v", data)
	}
	call(t, a, "setInheritanceData", []any{"child", []any{link(p1, 1)}}, map[string]any{"clear": true}, nil)
	call(t, a, "getInheritanceData", []any{"child"}, nil, &data)
	if len(data) != 1 || data[0].ParentID != p1 || data[0].Priority != 1 {
		t.Fatalf("after clear: %+v", data)
	}
}

func TestTagGroupsInheritedAndBlocked(t *testing.T) {
	h := StartTestHub(t, nil)
	a := h.Admin
	call(t, a, "createTag", []any{"base"}, nil, nil)
	call(t, a, "createTag", []any{"derived"}, map[string]any{"parent": "base"}, nil)
	call(t, a, "groupListAdd", []any{"base", "build"}, nil, nil)
	for _, p := range []string{"bash", "coreutils"} {
		call(t, a, "groupPackageListAdd", []any{"base", "build", p}, nil, nil)
	}
	pkgs := func(tag string, kw map[string]any) ([]bus.TagGroup, []string) {
		var gs []bus.TagGroup
		call(t, a, "getTagGroups", []any{tag}, kw, &gs)
		var names []string
		for _, g := range gs {
			for _, p := range g.PackageList {
				names = append(names, p.Package)
			}
		}
		return gs, names
	}
	gs, names := pkgs("derived", nil)
	if len(gs) != 1 || gs[0].Name != "build" || gs[0].DisplayName != "build" || !gs[0].Exported || !gs[0].UserVisible ||
		!reflect.DeepEqual(names, []string{"bash", "coreutils"}) || gs[0].PackageList[0].Type != "mandatory" {
		t.Fatalf("inherited groups %+v", gs)
	}
	call(t, a, "groupPackageListBlock", []any{"derived", "build", "bash"}, nil, nil)
	if _, names = pkgs("derived", nil); !reflect.DeepEqual(names, []string{"coreutils"}) {
		t.Fatalf("after block: %v", names)
	}
	if _, names = pkgs("derived", map[string]any{"incl_blocked": true}); !reflect.DeepEqual(names, []string{"bash", "coreutils"}) {
		t.Fatalf("incl_blocked: %v", names)
	}
	if _, names = pkgs("base", nil); !reflect.DeepEqual(names, []string{"bash", "coreutils"}) {
		t.Fatalf("parent changed by child's block: %v", names)
	}
	if _, names = pkgs("derived", map[string]any{"inherit": false}); len(names) != 0 {
		t.Fatalf("inherit=False: %v", names)
	}
	// Adding a blocked package back needs force.
	wantFault(t, a.Call(ctxT(t), "groupPackageListAdd", []any{"derived", "build", "bash"}, nil, nil),
		bus.CodeGenericError, "package bash blocked in group build, tag derived")
	call(t, a, "groupPackageListUnblock", []any{"derived", "build", "bash"}, nil, nil)
	if _, names = pkgs("derived", nil); !reflect.DeepEqual(names, []string{"bash", "coreutils"}) {
		t.Fatalf("after unblock: %v", names)
	}
	call(t, a, "groupListBlock", []any{"derived", "build"}, nil, nil)
	if gs, _ = pkgs("derived", nil); len(gs) != 0 {
		t.Fatalf("blocked group listed: %+v", gs)
	}
	wantFault(t, a.Call(ctxT(t), "groupPackageListAdd", []any{"derived", "build", "gcc"}, nil, nil),
		bus.CodeGenericError, "group build is blocked in tag derived")
	call(t, a, "groupListUnblock", []any{"derived", "build"}, nil, nil)
	if gs, _ = pkgs("derived", nil); len(gs) != 1 {
		t.Fatalf("after unblocking the group: %+v", gs)
	}
	wantFault(t, a.Call(ctxT(t), "groupPackageListAdd", []any{"derived", "srpm-build", "rpm"}, nil, nil),
		bus.CodeGenericError, "No such entry in table groups: srpm-build")
	call(t, a, "groupListAdd", []any{"base", "srpm-build"}, map[string]any{"description": "srpm", "is_default": true}, nil)
	call(t, a, "groupReqListAdd", []any{"derived", "srpm-build", "build"}, nil, nil)
	gs, _ = pkgs("derived", nil)
	if len(gs) != 2 || gs[1].Name != "srpm-build" || len(gs[1].GroupList) != 1 || gs[1].GroupList[0].Name != "build" ||
		gs[1].Description == nil || *gs[1].Description != "srpm" {
		t.Fatalf("groups with requirement: %+v", gs)
	}
	// The repo domain's helper sees the same.
	_ = h.Store().Read(func(v state.View) error {
		var id int64
		_, _ = v.GetJSON(tagNameKey("derived"), &id)
		if got := readTagGroups(v, id, true, false); len(got) != 2 {
			t.Errorf("readTagGroups = %+v", got)
		}
		return nil
	})
}

func TestTagPackageLists(t *testing.T) {
	h := StartTestHub(t, nil)
	a := h.Admin
	ev := watchEvents(t, h)
	call(t, a, "createTag", []any{"dist"}, nil, nil)
	call(t, a, "createTag", []any{"dist-updates"}, map[string]any{"parent": "dist"}, nil)
	call(t, a, "packageListAdd", []any{"dist", "bash"}, map[string]any{"owner": "kojiadmin"}, nil)
	e := ev.next(t, "package.add")
	if e.Props["type"] != "PackageListChange" || e.Props["tag"] != "dist" || e.Props["package"] != "bash" ||
		e.Props["action"] != "add" || e.Props["user"] != "kojiadmin" {
		t.Fatalf("package.add props %v", e.Props)
	}
	var body map[string]any
	_ = json.Unmarshal(e.Body, &body)
	if body["owner"] != 1.0 || body["block"] != false || body["tag"].(map[string]any)["name"] != "dist" {
		t.Fatalf("package.add body %v", body)
	}
	call(t, a, "packageListAdd", []any{"dist", "zsh"}, map[string]any{"owner": "kojiadmin", "extra_arches": "s390x"}, nil)
	var list []bus.TagPackage
	call(t, a, "listPackages", nil, map[string]any{"tagID": "dist-updates", "inherited": true}, &list)
	if len(list) != 2 || list[0].PackageName != "bash" || list[0].TagName != "dist" || *list[0].OwnerName != "kojiadmin" {
		t.Fatalf("inherited list %+v", list)
	}
	call(t, a, "packageListBlock", []any{"dist-updates", "zsh"}, nil, nil)
	e = ev.next(t, "package.block")
	if e.Props["tag"] != "dist-updates" {
		t.Fatalf("package.block props %v", e.Props)
	}
	call(t, a, "listPackages", nil, map[string]any{"tagID": "dist-updates", "inherited": true, "with_blocked": false}, &list)
	if len(list) != 1 || list[0].PackageName != "bash" {
		t.Fatalf("with_blocked=False %+v", list)
	}
	wantFault(t, a.Call(ctxT(t), "packageListAdd", []any{"dist-updates", "zsh"}, map[string]any{"block": false}, nil), bus.CodeGenericError,
		"package zsh is blocked in tag dist-updates")
	call(t, a, "packageListUnblock", []any{"dist-updates", "zsh"}, nil, nil)
	ev.next(t, "package.unblock")
	call(t, a, "listPackages", nil, map[string]any{"tagID": "dist-updates", "inherited": true, "with_blocked": false}, &list)
	if len(list) != 2 {
		t.Fatalf("after unblock %+v", list)
	}
	call(t, a, "packageListSetArches", []any{"dist", "bash", "ppc64le"}, nil, nil)
	ev.next(t, "package.update")
	call(t, a, "listPackages", nil, map[string]any{"tagID": "dist", "pkgID": "bash"}, &list)
	if len(list) != 1 || list[0].ExtraArches == nil || *list[0].ExtraArches != "ppc64le" {
		t.Fatalf("set arches %+v", list)
	}
	call(t, a, "packageListRemove", []any{"dist", "bash"}, nil, nil)
	ev.next(t, "package.remove")
	var pkg bus.Package
	call(t, a, "getPackage", []any{"bash"}, nil, &pkg)
	if pkg.Name != "bash" || pkg.ID == 0 {
		t.Fatalf("getPackage %+v", pkg)
	}
	var tags []map[string]any
	call(t, a, "listTags", nil, map[string]any{"package": "zsh"}, &tags)
	if len(tags) != 1 || tags[0]["name"] != "dist" || tags[0]["owner_name"] != "kojiadmin" {
		t.Fatalf("listTags(package) %v", tags)
	}
	call(t, a, "listTags", nil, map[string]any{"pattern": "dist-*"}, &tags)
	if len(tags) != 1 || tags[0]["name"] != "dist-updates" {
		t.Fatalf("listTags(pattern) %v", tags)
	}
	wantFault(t, a.Call(ctxT(t), "packageListAdd", []any{"dist", "vim"}, nil, nil), bus.CodeGenericError, "owner not specified")
}

func TestTagTargets(t *testing.T) {
	h := StartTestHub(t, nil)
	a := h.Admin
	ev := watchEvents(t, h)
	call(t, a, "createTag", []any{"f30-build"}, map[string]any{"arches": "x86_64"}, nil)
	call(t, a, "createTag", []any{"f30"}, nil, nil)
	call(t, a, "createBuildTarget", []any{"f30-candidate", "f30-build", "f30"}, nil, nil)
	e := ev.next(t, "target.create")
	if e.Props["target"] != "f30-candidate" || e.Props["type"] != "TargetCreate" {
		t.Fatalf("target.create props %v", e.Props)
	}
	var tgt map[string]any
	call(t, a, "getBuildTarget", []any{"f30-candidate"}, nil, &tgt)
	want := map[string]any{"build_tag": 1.0, "build_tag_name": "f30-build", "dest_tag": 2.0, "dest_tag_name": "f30", "id": 1.0, "name": "f30-candidate"}
	if !reflect.DeepEqual(tgt, want) {
		t.Fatalf("getBuildTarget = %v", tgt)
	}
	var tgts []bus.BuildTarget
	call(t, a, "getBuildTargets", nil, map[string]any{"buildTagID": "f30-build"}, &tgts)
	if len(tgts) != 1 || tgts[0].Name != "f30-candidate" {
		t.Fatalf("getBuildTargets %+v", tgts)
	}
	call(t, a, "getBuildTargets", nil, map[string]any{"destTagID": "f30-build"}, &tgts)
	if len(tgts) != 0 {
		t.Fatalf("getBuildTargets(destTagID) %+v", tgts)
	}
	call(t, a, "editBuildTarget", []any{"f30-candidate", "f30-cand", "f30-build", "f30-build"}, nil, nil)
	ev.next(t, "target.edit")
	var bt bus.BuildTarget
	call(t, a, "getBuildTarget", []any{1}, nil, &bt)
	if bt.Name != "f30-cand" || bt.DestTagName != "f30-build" {
		t.Fatalf("after edit %+v", bt)
	}
	call(t, a, "deleteBuildTarget", []any{"f30-cand"}, nil, nil)
	ev.next(t, "target.delete")
	var none *bus.BuildTarget
	call(t, a, "getBuildTarget", []any{"f30-cand"}, nil, &none)
	if none != nil {
		t.Fatalf("deleted target still there: %+v", none)
	}
	wantFault(t, a.Call(ctxT(t), "getBuildTarget", []any{"f30-cand"}, map[string]any{"strict": true}, nil),
		bus.CodeGenericError, "No such build target: f30-cand")
}

func TestTagBadInputChangesNothing(t *testing.T) {
	h := StartTestHub(t, nil)
	a := h.Admin
	call(t, a, "createTag", []any{"t1"}, map[string]any{"extra": map[string]any{"k": 1}}, nil)
	call(t, a, "createTag", []any{"t2"}, nil, nil)
	call(t, a, "createBuildTarget", []any{"tgt", "t1", "t2"}, nil, nil)
	call(t, a, "groupListAdd", []any{"t1", "build"}, nil, nil)
	cases := []struct {
		method string
		args   []any
		kw     map[string]any
		code   int
		msg    string
	}{
		{"createTag", nil, nil, bus.CodeParameterError, "createTag() missing 1 required positional argument: 'name'"},
		{"createTag", []any{42}, nil, bus.CodeParameterError, "createTag(): parameter 'name' must be a string"},
		{"createTag", []any{"t1"}, nil, bus.CodeGenericError, "A tag with the name 't1' already exists"},
		{"createTag", []any{"bad name"}, nil, bus.CodeGenericError, "Name bad name does not match RegexNameInternal value"},
		{"createTag", []any{"t3"}, map[string]any{"parent": "nosuch"}, bus.CodeGenericError, "Parent tag 'nosuch' could not be found"},
		{"createTag", []any{"t3"}, map[string]any{"arches": "x86_64,i?86"}, bus.CodeGenericError, "Architecture can be only [a-zA-Z0-9_-]"},
		{"createTag", []any{"t3"}, map[string]any{"perm": "nosuch"}, bus.CodeGenericError, "No such entry in table permissions: nosuch"},
		{"createTag", []any{"t3"}, map[string]any{"maven_support": true}, bus.CodeGenericError, "Maven support not enabled"},
		{"createTag", []any{"t3"}, map[string]any{"extra": "x"}, bus.CodeParameterError, "createTag(): parameter 'extra' must be a dict"},
		{"getTag", []any{"nosuch"}, map[string]any{"strict": true}, bus.CodeGenericError, "No such tagInfo: 'nosuch'"},
		{"getTag", []any{[]int{1}}, nil, bus.CodeParameterError, "getTag(): parameter 'tagInfo' must be an id or a name"},
		{"editTag2", []any{"nosuch"}, map[string]any{"locked": true}, bus.CodeGenericError, "No such tagInfo: 'nosuch'"},
		{"editTag2", []any{"t1"}, map[string]any{"name": "t2"}, bus.CodeGenericError, "Name t2 already taken by tag 2"},
		{"editTag2", []any{"t1"}, map[string]any{"remove_extra": []string{"nope"}}, bus.CodeGenericError, "Tag: t1 doesn't have extra: nope"},
		{"editTag2", []any{"t1"}, map[string]any{"extra": map[string]any{"k": 2}, "remove_extra": []string{"k"}}, bus.CodeGenericError,
			"Can not both add/update and remove tag-extra: 'k'"},
		{"editTag2", []any{"t1"}, map[string]any{"locked": "yes"}, bus.CodeParameterError, "editTag2(): parameter 'locked' must be a boolean"},
		{"deleteTag", []any{99}, nil, bus.CodeGenericError, "No such tagInfo: 99"},
		{"createBuildTarget", []any{"tgt", "t1", "t2"}, nil, bus.CodeGenericError, "A build target with the name 'tgt' already exists"},
		{"createBuildTarget", []any{"tgt2", "nosuch", "t2"}, nil, bus.CodeGenericError, "build tag 'nosuch' does not exist"},
		{"createBuildTarget", []any{"tgt2", "t1", 77}, nil, bus.CodeGenericError, "destination tag '77' does not exist"},
		{"editBuildTarget", []any{"nosuch", "x", "t1", "t2"}, nil, bus.CodeGenericError, "No such build target: nosuch"},
		{"deleteBuildTarget", []any{"nosuch"}, nil, bus.CodeGenericError, "No such build target: nosuch"},
		{"groupListAdd", []any{"t1", "build"}, map[string]any{"exported": "x"}, bus.CodeParameterError, "groupListAdd(): parameter 'exported' must be a boolean"},
		{"groupListRemove", []any{"t2", "build"}, nil, bus.CodeGenericError, "No group: build found for tag: t2"},
		{"groupListUnblock", []any{"t1", "build"}, nil, bus.CodeGenericError, "group build is NOT blocked in tag t1"},
		{"groupPackageListAdd", []any{"t2", "build", "bash"}, nil, bus.CodeGenericError, "group build not present in tag t2"},
		{"groupPackageListAdd", []any{"nosuch", "build", "bash"}, nil, bus.CodeGenericError, "No such entry in table tag: nosuch"},
		{"groupPackageListUnblock", []any{"t1", "build", "bash"}, nil, bus.CodeGenericError, "package bash is NOT blocked in group 1, tag 1"},
		{"packageListAdd", []any{"nosuch", "bash"}, map[string]any{"owner": "kojiadmin"}, bus.CodeGenericError, "No such tagInfo: 'nosuch'"},
		{"packageListAdd", []any{"t1", 999}, map[string]any{"owner": "kojiadmin"}, bus.CodeGenericError, "No such package: 999"},
		{"packageListAdd", []any{"t1", "bash"}, map[string]any{"owner": "nobody"}, bus.CodeGenericError, "No such user: 'nobody'"},
		{"packageListAdd", []any{"t1", "bash"}, map[string]any{"owner": "kojiadmin", "update": true}, bus.CodeGenericError,
			"cannot update: tag t1 has no data for package bash"},
		{"packageListBlock", []any{"t1", "nosuchpkg"}, nil, bus.CodeGenericError, "No such entry in table package: nosuchpkg"},
		{"listPackages", nil, map[string]any{"tagID": "nosuch"}, bus.CodeGenericError, "No such entry in table tag: nosuch"},
		{"getFullInheritance", []any{"t1"}, map[string]any{"stops": map[string]any{"1": 1}}, bus.CodeParameterError, "stops option has been removed since 1.26"},
		{"listTags", nil, map[string]any{"package": "nosuch"}, bus.CodeGenericError, "invalid package: nosuch"},
		{"listTags", nil, map[string]any{"build": "nosuch-1-1"}, bus.CodeGenericError, "invalid build: nosuch-1-1"},
		{"listTags", nil, map[string]any{"build": 99999}, bus.CodeGenericError, "invalid build: 99999"},
	}
	for _, tc := range cases {
		t.Run(tc.method+"/"+tc.msg, func(t *testing.T) {
			before := h.Store().Applied()
			wantFault(t, a.Call(ctxT(t), tc.method, tc.args, tc.kw, nil), tc.code, tc.msg)
			if h.Store().Applied() != before {
				t.Fatal("a refused call changed state")
			}
		})
	}
}

func TestTagPermissionsAndLocks(t *testing.T) {
	h := StartTestHub(t, nil)
	alice := h.UserClient(t, "alice")
	bob := h.UserClient(t, "bob", "tag")
	call(t, h.Admin, "createTag", []any{"locked-tag"}, map[string]any{"locked": true}, nil)
	cases := []struct {
		who    *bus.Client
		method string
		args   []any
		kw     map[string]any
		msg    string
	}{
		{alice, "createTag", []any{"mine"}, nil, "tag permission required (logged in as alice)"},
		{alice, "createBuildTarget", []any{"x", "locked-tag", "locked-tag"}, nil, "target permission required (logged in as alice)"},
		{alice, "groupListAdd", []any{"locked-tag", "build"}, nil, "tag permission required (logged in as alice)"},
		{alice, "packageListAdd", []any{"locked-tag", "bash"}, map[string]any{"owner": "alice"},
			"policy violation (package_list): Only admin/tag can do this via default policy"},
		{h.Anonymous(), "packageListAdd", []any{"locked-tag", "bash"}, nil, "you must be logged in for this operation"},
		{bob, "packageListAdd", []any{"locked-tag", "bash"}, map[string]any{"owner": "bob"}, "Tag locked-tag is locked"},
		{bob, "groupListAdd", []any{"locked-tag", "build"}, nil, "Tag locked-tag is locked"},
		{bob, "editTag2", []any{"locked-tag"}, map[string]any{"arches": "x86_64"}, "Tag locked-tag is locked"},
	}
	for _, tc := range cases {
		t.Run(tc.method+"/"+tc.msg, func(t *testing.T) {
			before := h.Store().Applied()
			wantFault(t, tc.who.Call(ctxT(t), tc.method, tc.args, tc.kw, nil), bus.CodeActionNotAllowed, tc.msg)
			if h.Store().Applied() != before {
				t.Fatal("a refused call changed state")
			}
		})
	}
	// bob holds tag: he may create tags, unlock, and then change content.
	call(t, bob, "createTag", []any{"bobs"}, nil, nil)
	call(t, bob, "editTag2", []any{"locked-tag"}, map[string]any{"locked": false}, nil)
	call(t, bob, "packageListAdd", []any{"locked-tag", "bash"}, map[string]any{"owner": "bob"}, nil)
	// admin may change a locked tag.
	call(t, h.Admin, "editTag2", []any{"bobs"}, map[string]any{"locked": true}, nil)
	call(t, h.Admin, "packageListAdd", []any{"bobs", "bash"}, map[string]any{"owner": "bob"}, nil)
}

func TestTagEvents(t *testing.T) {
	h := StartTestHub(t, nil)
	a := h.Admin
	ev := watchEvents(t, h)
	var id int64
	call(t, a, "createTag", []any{"evt"}, map[string]any{"arches": "x86_64"}, &id)
	e := ev.next(t, "tag.create")
	if e.Props["type"] != "TagCreate" || e.Props["tag"] != "evt" || e.Props["user"] != "kojiadmin" {
		t.Fatalf("tag.create props %v", e.Props)
	}
	var last1, last2 int64
	call(t, a, "tagLastChangeEvent", []any{"evt"}, nil, &last1)
	if last1 != int64(e.ID) {
		t.Fatalf("a new tag's tagLastChangeEvent is %d, want its creation event %d", last1, e.ID)
	}
	call(t, a, "editTag2", []any{"evt"}, map[string]any{"extra": map[string]any{"mock.new_chroot": 1}}, nil)
	e = ev.next(t, "tag.edit")
	if e.Props["tag"] != "evt" {
		t.Fatalf("tag.edit props %v", e.Props)
	}
	call(t, a, "tagLastChangeEvent", []any{"evt"}, nil, &last2)
	if last2 <= last1 {
		t.Fatalf("tagLastChangeEvent did not advance: %d -> %d", last1, last2)
	}
	call(t, a, "createTag", []any{"evt-child"}, nil, nil)
	call(t, a, "setInheritanceData", []any{"evt-child", []any{map[string]any{"parent_id": id, "priority": 0, "maxdepth": nil,
		"intransitive": false, "noconfig": false, "pkg_filter": ""}}}, nil, nil)
	e = ev.next(t, "tag.inheritance")
	if e.Props["tag"] != "evt-child" || e.Props["type"] != "TagInheritance" {
		t.Fatalf("tag.inheritance props %v", e.Props)
	}
	call(t, a, "groupListAdd", []any{"evt", "build"}, nil, nil)
	e = ev.next(t, "group.add")
	if e.Props["group"] != "build" || e.Props["tag"] != "evt" || e.Props["user"] != "kojiadmin" {
		t.Fatalf("group.add props %v", e.Props)
	}
	call(t, a, "groupPackageListAdd", []any{"evt", "build", "bash"}, nil, nil)
	e = ev.next(t, "group.package.add")
	if e.Props["package"] != "bash" {
		t.Fatalf("group.package.add props %v", e.Props)
	}
	// Parent content changes move the child's last change too.
	var child1, child2 int64
	call(t, a, "tagLastChangeEvent", []any{"evt-child"}, nil, &child1)
	call(t, a, "groupPackageListAdd", []any{"evt", "build", "coreutils"}, nil, nil)
	call(t, a, "tagLastChangeEvent", []any{"evt-child"}, nil, &child2)
	if child2 <= child1 {
		t.Fatalf("child's tagLastChangeEvent did not follow its parent: %d -> %d", child1, child2)
	}
	call(t, a, "deleteTag", []any{"evt"}, nil, nil)
	e = ev.next(t, "tag.delete")
	if e.Props["tag"] != "evt" {
		t.Fatalf("tag.delete props %v", e.Props)
	}
	var data []bus.InheritanceLink
	call(t, a, "getInheritanceData", []any{"evt-child"}, nil, &data)
	if len(data) != 0 {
		t.Fatalf("link to a deleted tag remains: %+v", data)
	}
	var gone *bus.Tag
	call(t, a, "getTag", []any{"evt"}, nil, &gone)
	if gone != nil {
		t.Fatalf("deleted tag still there: %+v", gone)
	}
}

// listTags pages with queryOpts, with and without perms (whose rows are
// converted after the page is cut).
func TestListTagsPagesWithQueryOpts(t *testing.T) {
	h := StartTestHub(t, nil)
	var names []string
	for i := range 5 {
		name := fmt.Sprintf("page-%d", i)
		call(t, h.Admin, "createTag", []any{name}, nil, nil)
		names = append(names, name)
	}
	tests := []struct {
		name string
		kw   map[string]any
		want []string
	}{
		{"limit and offset", map[string]any{"queryOpts": map[string]any{"limit": 2, "offset": 1}}, names[1:3]},
		{"last short page", map[string]any{"queryOpts": map[string]any{"limit": 2, "offset": 4}}, names[4:]},
		{"past the end", map[string]any{"queryOpts": map[string]any{"limit": 2, "offset": 9}}, nil},
		{"without perms", map[string]any{"perms": false, "queryOpts": map[string]any{"limit": 3}}, names[:3]},
		{"ordered", map[string]any{"queryOpts": map[string]any{"order": "-id", "limit": 2}}, []string{names[4], names[3]}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.kw["pattern"] = "page-*"
			var rows []map[string]any
			call(t, h.Admin, "listTags", nil, tt.kw, &rows)
			var got []string
			for _, r := range rows {
				got = append(got, r["name"].(string))
				if _, ok := r["perm_id"]; ok == (tt.kw["perms"] == false) {
					t.Fatalf("row %v: perm_id present %v with perms=%v", r, ok, tt.kw["perms"])
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	var n int
	call(t, h.Admin, "listTags", nil, map[string]any{"pattern": "page-*", "queryOpts": map[string]any{"countOnly": true}}, &n)
	if n != len(names) {
		t.Fatalf("countOnly %d, want %d", n, len(names))
	}
}
