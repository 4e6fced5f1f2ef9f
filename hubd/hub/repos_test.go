package hub

import (
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

func TestRepoRegeneratedAfterTagChange(t *testing.T) {
	h := StartTestHub(t, nil)
	setupTag(t, h, "f40-build", nil, map[string]any{"repo.auto": true}, "bash")
	w := watchEvents(t, h)
	id := newBuild(t, h, "bash", "5.2", "1")
	call(t, h.Admin, "tagBuild", []any{"f40-build", id}, nil, nil)
	var last int64
	call(t, h.Admin, "tagLastChangeEvent", []any{"f40-build"}, nil, &last)

	// the waiter: subscription only, no polling
	var init, done *bus.Event
	for {
		init = w.next(t, "repo.init")
		var body struct {
			Event int64 `json:"event"`
		}
		_ = json.Unmarshal(init.Body, &body)
		if body.Event >= last {
			break
		}
	}
	for {
		done = w.next(t, "repo.done")
		if done.Props["repo_id"] == init.Props["repo_id"] {
			break
		}
	}
	if done.Props["type"] != "RepoDone" || done.Props["tag"] != "f40-build" {
		t.Fatalf("repo.done props %v", done.Props)
	}
	var repo *bus.Repo
	call(t, h.Admin, "repo.get", []any{"f40-build"}, map[string]any{"min_event": last}, &repo)
	if repo == nil || repo.State != bus.RepoReady || repo.CreateEvent < last || repo.TagName != "f40-build" {
		t.Fatalf("repo.get = %+v", repo)
	}
	obj, err := h.js.ObjectStore(ctxT(t), bus.RepoStore)
	if err != nil {
		t.Fatal(err)
	}
	data, err := obj.GetBytes(ctxT(t), repoContentPath("f40-build", repo.ID))
	if err != nil {
		t.Fatal(err)
	}
	var content bus.RepoContent
	if err := json.Unmarshal(data, &content); err != nil {
		t.Fatal(err)
	}
	if content.RepoID != repo.ID || content.Event != repo.CreateEvent || len(content.Builds) != 1 || content.Builds[0].NVR != "bash-5.2-1" {
		t.Fatalf("repo.json = %+v", content)
	}

	// a request for the current state is answered by that repo, no new request
	var res bus.RepoRequestResult
	call(t, h.Admin, "repo.request", []any{"f40-build"}, nil, &res)
	if res.Repo == nil || res.Repo.ID != repo.ID || res.Request != nil {
		t.Fatalf("repo.request = %+v", res)
	}
	// newRepo forces a new one; the older READY repo expires
	var reqID int64
	call(t, h.Admin, "newRepo", []any{"f40-build"}, nil, &reqID)
	done = w.next(t, "repo.done")
	var check bus.RepoCheck
	call(t, h.Admin, "repo.checkRequest", []any{reqID}, nil, &check)
	if check.Repo == nil || check.Request.Active || check.Repo.ID == repo.ID {
		t.Fatalf("checkRequest after newRepo: %+v / %+v", check.Request, check.Repo)
	}
	var old *bus.Repo
	call(t, h.Admin, "repoInfo", []any{repo.ID}, nil, &old)
	if old.State != bus.RepoExpired {
		t.Fatalf("old repo state %d, want EXPIRED", old.State)
	}
	var latest *bus.Repo
	call(t, h.Admin, "getRepo", []any{"f40-build"}, nil, &latest)
	if latest == nil || latest.ID != check.Repo.ID {
		t.Fatalf("getRepo = %+v", latest)
	}
	var rows []map[string]any
	call(t, h.Admin, "repo.query", []any{[][]any{{"tag_id", "=", repo.TagID}, {"state", "=", bus.RepoExpired}, {"id", "IN", []int64{repo.ID, check.Repo.ID}}}}, nil, &rows)
	if len(rows) != 1 {
		t.Fatalf("repo.query = %v", rows)
	}

	alice := h.UserClient(t, "alice")
	assertRefused(t, h, []badCall{
		{name: "conflicting events", method: "repo.request", args: []any{"f40-build"}, kwargs: map[string]any{"min_event": 1, "at_event": 1}, code: bus.CodeParameterError, msg: "The min_event and at_event options conflict"},
		{name: "future event", method: "repo.request", args: []any{"f40-build"}, kwargs: map[string]any{"min_event": 1 << 40}, code: bus.CodeParameterError},
		{name: "bad opts", method: "repo.request", args: []any{"f40-build"}, kwargs: map[string]any{"opts": map[string]any{"bogus": true}}, code: bus.CodeParameterError, msg: "Invalid repo option: bogus"},
		{name: "no such tag", method: "repo.request", args: []any{"nope"}, code: bus.CodeGenericError, msg: "No such tagInfo: 'nope'"},
		{name: "high priority", client: alice, method: "repo.request", args: []any{"f40-build"}, kwargs: map[string]any{"priority": -5}, code: bus.CodeActionNotAllowed, msg: "only admins may create high-priority requests"},
		{name: "newRepo perm", client: alice, method: "newRepo", args: []any{"f40-build"}, code: bus.CodeActionNotAllowed},
		{name: "anonymous request", client: h.Anonymous(), method: "repo.request", args: []any{"f40-build"}, code: bus.CodeActionNotAllowed},
		{name: "no such request", method: "repo.checkRequest", args: []any{999}, code: bus.CodeGenericError, msg: "No such request"},
		{name: "strict repoInfo", method: "repoInfo", args: []any{999}, kwargs: map[string]any{"strict": true}, code: bus.CodeGenericError, msg: "No such repo: 999"},
	})
}

func TestRepoRequestForTagWithoutAuto(t *testing.T) {
	h := StartTestHub(t, nil)
	setupTag(t, h, "side", nil, nil, "bash")
	w := watchEvents(t, h)
	var res bus.RepoRequestResult
	call(t, h.Admin, "repo.request", []any{"side"}, nil, &res)
	if res.Request == nil || res.Repo != nil || !res.Request.Active || res.Request.Priority != 20 || res.Request.TagName != "side" {
		t.Fatalf("repo.request = %+v", res)
	}
	var dup bus.RepoRequestResult
	call(t, h.Admin, "repo.request", []any{"side"}, nil, &dup)
	if !dup.Duplicate && dup.Repo == nil {
		t.Fatalf("second request: %+v", dup)
	}
	done := w.next(t, "repo.done")
	if done.Props["tag"] != "side" {
		t.Fatalf("repo.done props %v", done.Props)
	}
	var check bus.RepoCheck
	call(t, h.Admin, "repo.checkRequest", []any{res.Request.ID}, nil, &check)
	if check.Repo == nil || check.Request.Active || check.Request.RepoID == nil || *check.Request.RepoID != check.Repo.ID {
		t.Fatalf("checkRequest: %+v %+v", check.Request, check.Repo)
	}
}

func TestBuildroots(t *testing.T) {
	h := StartTestHub(t, nil)
	setupTag(t, h, "br-tag", nil, nil)
	var res bus.RepoRequestResult
	call(t, h.Admin, "repo.request", []any{"br-tag"}, nil, &res)
	w := watchEvents(t, h)
	_ = w
	call(t, h.Admin, "addHost", []any{"b1", []string{"x86_64"}}, nil, nil)
	var creds bus.HostCredentials
	call(t, h.Admin, "createHostCredentials", []any{"b1"}, nil, &creds)
	hc := h.Anonymous()
	if err := hc.Login(ctxT(t), creds.User, creds.Password); err != nil {
		t.Fatal(err)
	}
	var repo *bus.Repo
	for repo == nil {
		ev := w.next(t, "repo.done")
		_ = ev
		call(t, h.Admin, "repo.get", []any{"br-tag"}, nil, &repo)
	}
	var brID int64
	call(t, hc, "host.newBuildRoot", []any{repo.ID, "x86_64"}, nil, &brID)
	var br *bus.Buildroot
	call(t, h.Admin, "getBuildroot", []any{brID}, nil, &br)
	if br == nil || br.HostName != "b1" || br.TagName != "br-tag" || br.RepoID != repo.ID || br.State != bus.BuildrootInit || br.Arch != "x86_64" {
		t.Fatalf("getBuildroot = %+v", br)
	}
	call(t, hc, "host.setBuildRootState", []any{brID, "BUILDING"}, nil, nil)
	var list []bus.Buildroot
	call(t, h.Admin, "listBuildroots", nil, map[string]any{"hostID": br.HostID, "state": bus.BuildrootBuilding}, &list)
	if len(list) != 1 || list[0].ID != brID {
		t.Fatalf("listBuildroots = %+v", list)
	}
	call(t, hc, "host.setBuildRootState", []any{brID, bus.BuildrootExpired}, nil, nil)
	call(t, h.Admin, "getBuildroot", []any{brID}, nil, &br)
	if br.State != bus.BuildrootExpired || br.RetireEventID == nil {
		t.Fatalf("expired buildroot %+v", br)
	}
	assertRefused(t, h, []badCall{
		{name: "not a host", method: "host.newBuildRoot", args: []any{repo.ID, "x86_64"}, code: bus.CodeActionNotAllowed},
		{name: "no such repo", client: hc, method: "host.newBuildRoot", args: []any{999, "x86_64"}, code: bus.CodeGenericError, msg: "No such repo: 999"},
		{name: "back to init", client: hc, method: "host.setBuildRootState", args: []any{brID, 0}, code: bus.CodeGenericError, msg: "Cannot change buildroot state to INIT"},
		{name: "expired", client: hc, method: "host.setBuildRootState", args: []any{brID, "BUILDING"}, code: bus.CodeGenericError, msg: "buildroot " + itoa(brID) + " is EXPIRED"},
		{name: "strict get", method: "getBuildroot", args: []any{999}, kwargs: map[string]any{"strict": true}, code: bus.CodeGenericError, msg: "No such buildroot: 999"},
	})
}

func TestRepoGenerationWithTwoHubs(t *testing.T) {
	h := StartTestHub(t, nil)
	startSecondHub(t, h)
	setupTag(t, h, "dual", nil, map[string]any{"repo.auto": true}, "bash")
	w := watchEvents(t, h)
	for i, v := range []string{"1", "2", "3"} {
		id := newBuild(t, h, "bash", v, "1")
		call(t, h.Admin, "tagBuild", []any{"dual", id}, nil, nil)
		_ = i
	}
	var last int64
	call(t, h.Admin, "tagLastChangeEvent", []any{"dual"}, nil, &last)
	for {
		ev := w.next(t, "repo.done")
		var body struct {
			Repo bus.Repo `json:"repo"`
		}
		if err := json.Unmarshal(ev.Body, &body); err != nil {
			t.Fatal(err)
		}
		if body.Repo.CreateEvent >= last {
			break
		}
	}
	var rows []bus.Repo
	call(t, h.Admin, "repo.query", []any{[][]any{{"tag_id", ">", 0}}}, map[string]any{"fields": "**"}, &rows)
	ready, events := 0, map[int64]bool{}
	for _, r := range rows {
		if r.State == bus.RepoInit {
			// a generation still finishing is fine only if it is newer than the READY one
			continue
		}
		if r.State == bus.RepoReady {
			ready++
		}
		if events[r.CreateEvent] {
			t.Fatalf("two repos generated from event %d: %+v", r.CreateEvent, rows)
		}
		events[r.CreateEvent] = true
	}
	if ready != 1 {
		t.Fatalf("%d READY repos, want 1: %+v", ready, rows)
	}
}

// The view's indexes that the repo machinery reads (tags that may set
// repo.auto, children by parent, repos by tag and while INIT, active
// requests) give what a scan of every key gives, through creates, edits,
// link removals, generation and deletes.
func TestRepoIndexesAgreeWithAScan(t *testing.T) {
	h := StartTestHub(t, nil)
	w := watchEvents(t, h)
	ids := func(v state.View, kind string) []int64 {
		var out []int64
		for _, k := range v.Keys(kind, kind+".") {
			if id, err := strconv.ParseInt(strings.TrimPrefix(k, kind+"."), 10, 64); err == nil {
				out = append(out, id)
			}
		}
		return out
	}
	check := func(step string) {
		t.Helper()
		_ = h.store.Read(func(v state.View) error {
			auto := v.Group("tag", groupRepoAuto)
			for _, id := range ids(v, "tag") {
				tag, _ := tagByID(v, id)
				if _, has := tag.Extra["repo.auto"]; has && !slices.Contains(auto, tagKey(id)) {
					t.Errorf("%s: tag %s sets repo.auto but is not in its group %v", step, tag.Name, auto)
				}
				var children []descendantLink
				for _, child := range ids(v, "taginh") {
					for _, l := range readInheritance(v, child) {
						if l.ParentID == id {
							children = append(children, descendantLink{inheritanceRecord: l, TagID: child})
						}
					}
				}
				sort.SliceStable(children, func(i, j int) bool { return children[i].Priority < children[j].Priority })
				if got := readDescendants(v, id); !reflect.DeepEqual(got, children) {
					t.Errorf("%s: children of %s %+v, a scan finds %+v", step, tag.Name, got, children)
				}
				var repos []*repoRecord
				for _, r := range readRepos(v, 0) {
					if r.TagID == id {
						repos = append(repos, r)
					}
				}
				if got := readRepos(v, id); !reflect.DeepEqual(got, repos) {
					t.Errorf("%s: repos of %s %v, a scan finds %v", step, tag.Name, got, repos)
				}
			}
			var init []string
			for _, r := range readRepos(v, 0) {
				if r.State == bus.RepoInit {
					init = append(init, repoKey(r.ID))
				}
			}
			sort.Strings(init)
			if got := v.Group("repo", groupRepoInit); !slices.Equal(got, init) {
				t.Errorf("%s: INIT repos %v, a scan finds %v", step, got, init)
			}
			var active []int64
			for _, id := range ids(v, "repoqueue") {
				if r, ok := readRequest(v, id); ok && r.Active {
					active = append(active, id)
				}
			}
			var got []int64
			for _, r := range activeRequests(v) {
				got = append(got, r.ID)
			}
			slices.Sort(active)
			slices.Sort(got)
			if !slices.Equal(got, active) {
				t.Errorf("%s: active requests %v, a scan finds %v", step, got, active)
			}
			return nil
		})
	}
	setupTag(t, h, "base", nil, map[string]any{"repo.auto": true})
	setupTag(t, h, "other", nil, nil)
	setupTag(t, h, "child", "base", nil)
	setupTag(t, h, "grandchild", "child", nil)
	var base, other map[string]any
	call(t, h.Admin, "getTag", []any{"base"}, nil, &base)
	call(t, h.Admin, "getTag", []any{"other"}, nil, &other)
	link := func(parent map[string]any, priority int, del bool) map[string]any {
		l := map[string]any{"parent_id": parent["id"], "priority": priority, "maxdepth": nil, "intransitive": false, "noconfig": false, "pkg_filter": ""}
		if del {
			l["delete link"] = true
		}
		return l
	}
	call(t, h.Admin, "setInheritanceData", []any{"child", []any{link(other, 10, false)}}, nil, nil)
	check("created, child of two parents")
	w.next(t, "repo.init")
	check("an automatic repo being generated")
	var req bus.RepoRequestResult
	call(t, h.Admin, "repo.request", []any{"other"}, nil, &req)
	check("requested")
	call(t, h.Admin, "setInheritanceData", []any{"child", []any{link(base, 0, true)}}, nil, nil)
	call(t, h.Admin, "editTag2", []any{"base"}, map[string]any{"remove_extra": []string{"repo.auto"}}, nil)
	check("a link removed, repo.auto removed")
	for {
		if done := w.next(t, "repo.done"); done.Props["tag"] == "other" {
			break
		}
	}
	check("the request done")
	call(t, h.Admin, "deleteTag", []any{"grandchild"}, nil, nil)
	call(t, h.Admin, "deleteTag", []any{"child"}, nil, nil)
	check("deleted")
}
