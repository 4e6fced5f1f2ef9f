package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Keys of the build part of the state bucket.
//
//	build.<id>                   bus.Build (creation_event_id is the revision of buildnvr.<nvr>)
//	buildnvr.<nvr>               build id
//	tagged.<tag id>.<build id>   taggedRecord: the build is tagged (Koji's active tag_listing row);
//	                             the key's revision is the tagging event (create_event)
//	seq.build                    the build id sequence
//
// Packages (package.<id>, packagename.<name>) are the package list's (packages.go / tags.go).
//
// kojibus differs from Koji on purpose in one place: tagBuild tags the build
// at once and returns None instead of creating a tagBuild task (Koji's task
// never did more than the checks this call makes itself).

func buildKey(id int64) string      { return "build." + strconv.FormatInt(id, 10) }
func buildNVRKey(nvr string) string { return "buildnvr." + state.EscapeKey(nvr) }
func taggedKey(tagID, buildID int64) string {
	return "tagged." + strconv.FormatInt(tagID, 10) + "." + strconv.FormatInt(buildID, 10)
}
func taggedPrefix(tagID int64) string { return "tagged." + strconv.FormatInt(tagID, 10) + "." }

// taggedBuildGroup files tagged.<tag id>.<build id> under the build's id
// (state.Indexer of the tagged kind), so the tags of a build are found
// without reading every tagging of every build.
func taggedBuildGroup(key string, _ []byte) []string {
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		return []string{key[i+1:]}
	}
	return nil
}

// buildGroups files a build (state.Indexer of the build kind) under its
// package and under the task that built it, so that listBuilds of a
// package or of a task reads those builds only, not every build.
func buildGroups(_ string, val []byte) []string {
	var b struct {
		PackageID int64  `json:"package_id"`
		TaskID    *int64 `json:"task_id"`
	}
	if json.Unmarshal(val, &b) != nil {
		return nil
	}
	groups := []string{buildPackageGroup(b.PackageID)}
	if b.TaskID != nil {
		groups = append(groups, buildTaskGroup(*b.TaskID))
	}
	return groups
}

func buildPackageGroup(id int64) string { return "pkg." + strconv.FormatInt(id, 10) }
func buildTaskGroup(id int64) string    { return "task." + strconv.FormatInt(id, 10) }

// tagIDsOfBuild returns the ids of the tags a build is tagged in, ascending.
func tagIDsOfBuild(v state.View, buildID int64) []int64 {
	var ids []int64
	for _, k := range v.Group("tagged", strconv.FormatInt(buildID, 10)) {
		parts := strings.Split(k, ".")
		if len(parts) != 3 {
			continue
		}
		if id, err := strconv.ParseInt(parts[1], 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

// tagsOfBuild answers listTags(build=...): the ids of the tags the build
// (an id, an NVR or a build map) is tagged in; false when there is no such
// build.
func tagsOfBuild(v state.View, raw json.RawMessage) ([]int64, bool) {
	ref, err := buildRefFromRaw(raw)
	if err != nil {
		return nil, false
	}
	b, ok := findBuild(v, ref)
	if !ok {
		return nil, false
	}
	return tagIDsOfBuild(v, b.ID), true
}

// taggedRecord is a build's membership of a tag.
type taggedRecord struct {
	TagID   int64   `json:"tag_id"`
	BuildID int64   `json:"build_id"`
	UserID  int64   `json:"user_id"`
	TS      float64 `json:"ts"`
}

func init() {
	domainRegistrars = append(domainRegistrars, (*Server).registerBuilds)
	tagDeleteHooks = append(tagDeleteHooks, untagAllTx)
}

// untagAllTx removes a deleted tag's listings (Koji revokes tag_listing rows;
// kojibus emits no build.untag for them, as Koji does not).
func untagAllTx(tx *state.Txn, tagID int64) error {
	for _, k := range tx.Keys("tagged", taggedPrefix(tagID)) {
		tx.Delete(k)
	}
	return nil
}

// kojiTime renders a timestamp as Koji's *_time fields do.
func kojiTime(ts float64) string {
	sec := int64(ts)
	return time.Unix(sec, int64((ts-float64(sec))*1e9)).UTC().Format("2006-01-02 15:04:05.000000+00:00")
}

func stateName(names []string, st int) string {
	if st >= 0 && st < len(names) {
		return names[st]
	}
	return strconv.Itoa(st)
}

// buildByID reads a build with its creation event.
func buildByID(v state.View, id int64) (*bus.Build, bool) {
	var b bus.Build
	if ok, err := v.GetJSON(buildKey(id), &b); !ok || err != nil {
		return nil, false
	}
	if _, rev, ok := v.Get(buildNVRKey(b.NVR)); ok {
		b.CreationEventID = int64(rev)
	}
	return &b, true
}

// buildRef is getBuild's buildInfo: an id, or an NVR.
type buildRef struct {
	id   int64
	nvr  string
	repr string // Python's %r of the argument, for error texts
}

// parseNVR splits name-version-release (koji.parse_NVR).
func parseNVR(s string) (name, version, release string, err error) {
	i := strings.LastIndex(s, "-")
	if i <= 0 {
		return "", "", "", bus.GenericError("invalid format: %s", s)
	}
	j := strings.LastIndex(s[:i], "-")
	if j <= 0 {
		return "", "", "", bus.GenericError("invalid format: %s", s)
	}
	name, version, release = s[:j], s[j+1:i], s[i+1:]
	if k := strings.Index(name, ":"); k >= 0 { // epoch:name
		name = name[k+1:]
	}
	return name, version, release, nil
}

// readBuildRef decodes an int id, an NVR string or a {name, version, release} (or {id}) dict.
func readBuildRef(c *registry.Call, param string) (buildRef, error) {
	var raw json.RawMessage
	if err := c.Decode(param, &raw); err != nil {
		return buildRef{}, err
	}
	return buildRefFromRaw(raw)
}

func buildRefFromRaw(raw json.RawMessage) (buildRef, error) {
	var n json.Number
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if dec.Decode(&n) == nil {
		id, err := n.Int64()
		if err != nil {
			return buildRef{}, bus.GenericError("Invalid type for argument: %s", n)
		}
		return buildRef{id: id, repr: n.String()}, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		name, version, release, err := parseNVR(s)
		if err != nil {
			return buildRef{}, err
		}
		return buildRef{nvr: name + "-" + version + "-" + release, repr: "'" + s + "'"}, nil
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) == nil && m != nil {
		if id, ok := m["id"].(float64); ok {
			return buildRef{id: int64(id), repr: string(raw)}, nil
		}
		name, ok1 := m["name"].(string)
		version, ok2 := m["version"].(string)
		release, ok3 := m["release"].(string)
		if !ok1 || !ok2 || !ok3 {
			return buildRef{}, bus.GenericError("did not provide name, version, and release")
		}
		return buildRef{nvr: name + "-" + version + "-" + release, repr: string(raw)}, nil
	}
	return buildRef{}, bus.GenericError("Invalid type for argument: %s", string(raw))
}

func findBuild(v state.View, r buildRef) (*bus.Build, bool) {
	id := r.id
	if r.nvr != "" {
		if ok, err := v.GetJSON(buildNVRKey(r.nvr), &id); !ok || err != nil {
			return nil, false
		}
	}
	return buildByID(v, id)
}

func getBuildStrict(v state.View, r buildRef) (*bus.Build, error) {
	b, ok := findBuild(v, r)
	if !ok {
		return nil, bus.GenericError("No such build: %s", r.repr)
	}
	return b, nil
}

// buildEventProps are protonmsg's properties of build.<state>.
func buildStateEvent(tx *state.Txn, b *bus.Build, old *int) {
	var oldName any
	var oldVal any
	if old != nil {
		oldName, oldVal = stateName(bus.BuildStateNames, *old), *old
	}
	newName := stateName(bus.BuildStateNames, b.State)
	tx.Emit("build."+strings.ToLower(newName),
		map[string]any{"type": "BuildStateChange", "name": b.Name, "version": b.Version, "release": b.Release,
			"attribute": "state", "old": oldName, "new": newName},
		map[string]any{"attribute": "state", "old": oldVal, "new": b.State, "info": b, "btypes": map[string]any{}})
}

// newBuildData is what new_build takes.
type newBuildData struct {
	Name         string
	Version      string
	Release      string
	Epoch        *int64
	Source       *string
	Owner        *registry.Ref
	State        int
	Extra        map[string]any
	TaskID       *int64
	StartTS      *float64
	CompletionTS *float64
	Draft        bool
}

func (s *Server) validateBuildData(d *newBuildData) error {
	if err := s.hubConf.Limits.checkExtra("build", d.Extra); err != nil {
		return err
	}
	if d.Name == "" {
		return bus.GenericError("No name or package id provided for build")
	}
	if err := validateName(d.Name, "package"); err != nil {
		return err
	}
	for _, f := range []struct{ what, val string }{{"version", d.Version}, {"release", d.Release}} {
		if f.val == "" {
			return bus.GenericError("No %s value for build", f.what)
		}
		if strings.ContainsAny(f.val, "- \t\n") {
			return bus.GenericError("Invalid build %s: %s", f.what, f.val)
		}
	}
	if d.State < 0 || d.State >= len(bus.BuildStateNames) {
		return bus.GenericError("Invalid build state: %d", d.State)
	}
	return nil
}

// newBuildTx is Koji's new_build inside a transaction: creates the package if
// missing, recycles a FAILED or CANCELED build of the same NVR, emits build.<state>.
func (s *Server) newBuildTx(tx *state.Txn, c *registry.Call, d *newBuildData) (*bus.Build, error) {
	ownerID := c.Caller.UserID
	if d.Owner != nil {
		u, ok := lookupUser(tx.View, *d.Owner)
		if !ok {
			return nil, bus.GenericError("No such user: %s", *d.Owner)
		}
		ownerID = u.ID
	}
	owner, ok := lookupUser(tx.View, registry.Ref{ID: ownerID})
	if !ok {
		return nil, bus.GenericError("No such user: %d", ownerID)
	}
	now := nowTS()
	nvr := d.Name + "-" + d.Version + "-" + d.Release
	var old *bus.Build
	if !d.Draft {
		if prev, ok := findBuild(tx.View, buildRef{nvr: nvr}); ok {
			switch prev.State {
			case bus.BuildBuilding:
				if d.State == bus.BuildBuilding && d.TaskID != nil && prev.TaskID != nil && *d.TaskID == *prev.TaskID {
					return prev, nil
				}
				task := int64(0)
				if prev.TaskID != nil {
					task = *prev.TaskID
				}
				return nil, bus.GenericError("Build already in progress (task %d)", task)
			case bus.BuildFailed, bus.BuildCanceled:
				if len(tagIDsOfBuild(tx.View, prev.ID)) > 0 {
					return nil, bus.GenericError("Build already exists (id=%d, state=%s): %s", prev.ID, stateName(bus.BuildStateNames, prev.State), nvr)
				}
				old = prev
			default:
				return nil, bus.GenericError("Build already exists (id=%d, state=%s): %s", prev.ID, stateName(bus.BuildStateNames, prev.State), nvr)
			}
		}
	}
	pkgID, err := ensurePackageTx(tx, d.Name)
	if err != nil {
		return nil, err
	}
	b := &bus.Build{
		PackageID: pkgID, PackageName: d.Name, Name: d.Name, Version: d.Version, Release: d.Release,
		Epoch: d.Epoch, Draft: d.Draft, State: d.State, TaskID: d.TaskID, OwnerID: owner.ID, OwnerName: owner.Name,
		VolumeName: "DEFAULT", CreationTime: kojiTime(now), CreationTS: now, Source: d.Source, Extra: d.Extra,
	}
	if err := s.applyVolumePolicy(tx.View, b); err != nil {
		return nil, err
	}
	start := now
	if d.StartTS != nil {
		start = *d.StartTS
	}
	b.StartTS, b.StartTime = &start, ptr(kojiTime(start))
	if d.State != bus.BuildBuilding {
		done := now
		if d.CompletionTS != nil {
			done = *d.CompletionTS
		}
		b.CompletionTS, b.CompletionTime = &done, ptr(kojiTime(done))
	}
	var oldState *int
	if old != nil {
		b.ID = old.ID
		oldState = &old.State
	} else {
		b.ID = tx.NextID("build")
	}
	b.BuildID = b.ID
	if d.Draft {
		b.Release = fmt.Sprintf("%s,draft_%d", d.Release, b.ID)
	}
	b.NVR = b.Name + "-" + b.Version + "-" + b.Release
	if d.Draft {
		if _, taken := findBuild(tx.View, buildRef{nvr: b.NVR}); taken {
			return nil, bus.GenericError("The build already exists: %s", b.NVR)
		}
	}
	if err := tx.Put(buildKey(b.ID), b); err != nil {
		return nil, err
	}
	if old == nil {
		if err := tx.Put(buildNVRKey(b.NVR), b.ID); err != nil {
			return nil, err
		}
	}
	buildStateEvent(tx, b, oldState)
	return b, nil
}

func ptr[T any](v T) *T { return &v }

func (s *Server) registerBuilds() {
	s.reg.Register(
		registry.Method{
			Name: "importBuild", Doc: "kojibus: record a build from a dict (name, version, release, epoch, source, owner, state, extra, task_id, start_ts, completion_ts, draft); returns the build",
			Params: []registry.Param{registry.P("data")}, Perm: "admin", Write: true,
			Handler: s.importBuild,
		},
		registry.Method{
			Name: "createEmptyBuild", Doc: "Create an empty build entry; returns the build id",
			Params: []registry.Param{registry.P("name"), registry.P("version"), registry.P("release"), registry.P("epoch"),
				registry.Opt("owner", nil), registry.Opt("draft", false)},
			Perm: "admin", Write: true,
			Handler: s.createEmptyBuild,
		},
		registry.Method{
			Name: "getBuild", Doc: "Return information about a build (id, NVR or {name, version, release})",
			Params:  []registry.Param{registry.P("buildInfo"), registry.Opt("strict", false)},
			Handler: s.getBuild,
		},
		registry.Method{
			Name: "listBuilds", Doc: "Return a list of builds that match the given parameters",
			Params: []registry.Param{registry.Opt("packageID", nil), registry.Opt("userID", nil), registry.Opt("taskID", nil),
				registry.Opt("prefix", nil), registry.Opt("state", nil), registry.Opt("volumeID", nil), registry.Opt("source", nil),
				registry.Opt("createdBefore", nil), registry.Opt("createdAfter", nil), registry.Opt("completeBefore", nil),
				registry.Opt("completeAfter", nil), registry.Opt("type", nil), registry.Opt("typeInfo", nil), registry.Opt("queryOpts", nil),
				registry.Opt("pattern", nil), registry.Opt("cgID", nil), registry.Opt("draft", nil)},
			Handler: s.listBuilds,
		},
		registry.Method{
			Name: "cancelBuild", Doc: "Cancel a build that is BUILDING (owner or admin); returns True if it was canceled",
			Params: []registry.Param{registry.P("buildID"), registry.Opt("strict", false)}, Access: registry.LoggedIn, Write: true,
			Handler: s.cancelBuild,
		},
		registry.Method{
			Name: "tagBuild", Doc: "Tag a build (kojibus: done at once, returns None instead of a tagBuild task id)",
			Params: []registry.Param{registry.P("tag"), registry.P("build"), registry.Opt("force", false), registry.Opt("fromtag", nil)},
			Access: registry.LoggedIn, Write: true,
			Handler: s.tagBuild,
		},
		registry.Method{
			Name: "tagBuildBypass", Doc: "Tag a build without running post checks (no policy, no package list); tag permission required",
			Params: []registry.Param{registry.P("tag"), registry.P("build"), registry.Opt("force", false), registry.Opt("notify", false)},
			Perm:   "tag", Write: true,
			Handler: s.tagBuildBypass,
		},
		registry.Method{
			Name: "untagBuild", Doc: "Untag a build",
			Params: []registry.Param{registry.P("tag"), registry.P("build"), registry.Opt("strict", true), registry.Opt("force", false)},
			Access: registry.LoggedIn, Write: true,
			Handler: s.untagBuild,
		},
		registry.Method{
			Name: "listTagged", Doc: "List builds tagged with tag",
			Params: []registry.Param{registry.P("tag"), registry.Opt("event", nil), registry.Opt("inherit", false), registry.Opt("prefix", nil),
				registry.Opt("latest", false), registry.Opt("package", nil), registry.Opt("owner", nil), registry.Opt("type", nil),
				registry.Opt("strict", true), registry.Opt("extra", false), registry.Opt("draft", nil)},
			Handler: s.listTagged,
		},
		registry.Method{
			Name: "getLatestBuilds", Doc: "List the latest builds of each package in a tag (inherited)",
			Params: []registry.Param{registry.P("tag"), registry.Opt("event", nil), registry.Opt("package", nil),
				registry.Opt("type", nil), registry.Opt("draft", nil)},
			Handler: s.getLatestBuilds,
		},
	)
}

func (s *Server) importBuild(ctx context.Context, c *registry.Call) (any, error) {
	var raw map[string]json.RawMessage
	if err := c.Decode("data", &raw); err != nil || raw == nil {
		return nil, bus.ParameterError("importBuild(): parameter 'data' must be a dict")
	}
	d := &newBuildData{State: bus.BuildComplete}
	bad := func(k, want string) error {
		return bus.ParameterError("importBuild(): data['%s'] must be %s", k, want)
	}
	for k, v := range raw {
		null := isNullRaw(v)
		var err error
		switch k {
		case "name":
			err = json.Unmarshal(v, &d.Name)
		case "version":
			err = json.Unmarshal(v, &d.Version)
		case "release":
			err = json.Unmarshal(v, &d.Release)
		case "epoch":
			err = json.Unmarshal(v, &d.Epoch)
		case "source":
			err = json.Unmarshal(v, &d.Source)
		case "extra":
			err = json.Unmarshal(v, &d.Extra)
		case "task_id":
			err = json.Unmarshal(v, &d.TaskID)
		case "start_ts":
			err = json.Unmarshal(v, &d.StartTS)
		case "completion_ts":
			err = json.Unmarshal(v, &d.CompletionTS)
		case "draft":
			err = json.Unmarshal(v, &d.Draft)
		case "owner":
			if !null {
				r, ok := refFromRaw(v)
				if !ok {
					return nil, bad(k, "a user id or name")
				}
				d.Owner = &r
			}
		case "state":
			if null {
				continue
			}
			var name string
			if json.Unmarshal(v, &name) == nil {
				found := false
				for i, n := range bus.BuildStateNames {
					if strings.EqualFold(n, name) {
						d.State, found = i, true
					}
				}
				if !found {
					return nil, bus.GenericError("Invalid build state: %s", name)
				}
			} else {
				err = json.Unmarshal(v, &d.State)
			}
		default:
			return nil, bus.ParameterError("importBuild(): unknown build field '%s'", k)
		}
		if err != nil {
			return nil, bad(k, "of the right type")
		}
	}
	if _, ok := raw["epoch"]; !ok {
		return nil, bus.GenericError("No epoch value for build")
	}
	if err := s.validateBuildData(d); err != nil {
		return nil, err
	}
	res, err := s.update(ctx, c, func(tx *state.Txn) (any, error) { return s.newBuildTx(tx, c, d) })
	if err != nil {
		return nil, err
	}
	return s.reReadBuild(res)
}

// reReadBuild returns a build created by a transaction as getBuild shows it
// (with its creation event).
func (s *Server) reReadBuild(res any) (any, error) {
	r, ok := res.(*state.Result)
	if !ok || r.Replayed {
		return res, nil
	}
	b := r.Value.(*bus.Build)
	_ = s.store.Read(func(v state.View) error {
		if nb, ok := buildByID(v, b.ID); ok {
			b = nb
		}
		return nil
	})
	return b, nil
}

func (s *Server) createEmptyBuild(ctx context.Context, c *registry.Call) (any, error) {
	d := &newBuildData{State: bus.BuildComplete}
	var err error
	if d.Name, err = c.String("name"); err != nil {
		return nil, err
	}
	if d.Version, err = c.String("version"); err != nil {
		return nil, err
	}
	if d.Release, err = c.String("release"); err != nil {
		return nil, err
	}
	if d.Epoch, err = c.OptInt("epoch"); err != nil {
		return nil, err
	}
	if d.Owner, err = c.OptRef("owner"); err != nil {
		return nil, err
	}
	if d.Draft, err = c.Bool("draft"); err != nil {
		return nil, err
	}
	if err := s.validateBuildData(d); err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		b, err := s.newBuildTx(tx, c, d)
		if err != nil {
			return nil, err
		}
		return b.ID, nil
	})
}

func (s *Server) getBuild(ctx context.Context, c *registry.Call) (any, error) {
	ref, err := readBuildRef(c, "buildInfo")
	if err != nil {
		return nil, err
	}
	strict, err := c.Bool("strict")
	if err != nil {
		return nil, err
	}
	var out *bus.Build
	_ = s.store.Read(func(v state.View) error {
		out, _ = findBuild(v, ref)
		return nil
	})
	if out == nil && strict {
		return nil, bus.GenericError("No such build: %s", ref.repr)
	}
	return out, nil
}

func optTS(c *registry.Call, name string) (*float64, error) {
	if c.IsNull(name) {
		return nil, nil
	}
	if f, err := c.Float(name); err == nil {
		return &f, nil
	}
	sv, err := c.String(name)
	if err != nil {
		return nil, bus.ParameterError("%s(): parameter '%s' must be a timestamp", c.Method.Name, name)
	}
	for _, layout := range []string{"2006-01-02 15:04:05.999999-07:00", "2006-01-02 15:04:05", "2006-01-02T15:04:05Z07:00", "2006-01-02"} {
		if t, err := time.Parse(layout, sv); err == nil {
			f := float64(t.UnixMicro()) / 1e6
			return &f, nil
		}
	}
	return nil, bus.ParameterError("%s(): parameter '%s' must be a timestamp", c.Method.Name, name)
}

func (s *Server) listBuilds(ctx context.Context, c *registry.Call) (any, error) {
	pkgRef, err := c.OptRef("packageID")
	if err != nil {
		return nil, err
	}
	userRef, err := c.OptRef("userID")
	if err != nil {
		return nil, err
	}
	taskID, err := c.OptInt("taskID")
	if err != nil {
		return nil, err
	}
	prefix, err := c.OptString("prefix")
	if err != nil {
		return nil, err
	}
	st, err := c.OptInt("state")
	if err != nil {
		return nil, err
	}
	volumeID, err := c.OptInt("volumeID")
	if err != nil {
		return nil, err
	}
	source, err := c.OptString("source")
	if err != nil {
		return nil, err
	}
	pattern, err := c.OptString("pattern")
	if err != nil {
		return nil, err
	}
	draft, err := c.OptBool("draft")
	if err != nil {
		return nil, err
	}
	btype, err := c.OptString("type")
	if err != nil {
		return nil, err
	}
	cgID, err := c.OptRef("cgID")
	if err != nil {
		return nil, err
	}
	var times [4]*float64
	for i, n := range []string{"createdBefore", "createdAfter", "completeBefore", "completeAfter"} {
		if times[i], err = optTS(c, n); err != nil {
			return nil, err
		}
	}
	qo, err := readQueryOpts(c, "queryOpts")
	if err != nil {
		return nil, err
	}
	out := []bus.Build{}
	err = s.store.Read(func(v state.View) error {
		var pkgID, userID int64
		if pkgRef != nil {
			id, ok := packageIDOf(v, *pkgRef)
			if !ok {
				return bus.GenericError("No such package: %s", refText(*pkgRef))
			}
			pkgID = id
		}
		if userRef != nil {
			u, ok := lookupUser(v, *userRef)
			if !ok {
				return bus.GenericError("No such user: %s", *userRef)
			}
			userID = u.ID
		}
		if (btype != nil && *btype != "") || cgID != nil {
			return nil // kojibus records no build types or content generators yet
		}
		var keys []string
		switch {
		case pkgRef != nil:
			keys = v.Group("build", buildPackageGroup(pkgID))
		case taskID != nil && *taskID != -1:
			keys = v.Group("build", buildTaskGroup(*taskID))
		default:
			keys = v.Keys("build", "build.")
		}
		for _, k := range keys {
			id, err := strconv.ParseInt(strings.TrimPrefix(k, "build."), 10, 64)
			if err != nil {
				continue
			}
			b, ok := buildByID(v, id)
			if !ok {
				continue
			}
			if pkgRef != nil && b.PackageID != pkgID ||
				userRef != nil && b.OwnerID != userID ||
				st != nil && int64(b.State) != *st ||
				volumeID != nil && b.VolumeID != *volumeID ||
				draft != nil && b.Draft != *draft ||
				prefix != nil && !strings.HasPrefix(strings.ToLower(b.Name), strings.ToLower(*prefix)) ||
				pattern != nil && !globMatch(*pattern, b.NVR) ||
				source != nil && (b.Source == nil || !globMatch(*source, *b.Source)) {
				continue
			}
			if taskID != nil {
				if *taskID == -1 && b.TaskID == nil || *taskID != -1 && (b.TaskID == nil || *b.TaskID != *taskID) {
					continue
				}
			}
			if times[0] != nil && !(b.CreationTS < *times[0]) || times[1] != nil && !(b.CreationTS > *times[1]) ||
				times[2] != nil && (b.CompletionTS == nil || !(*b.CompletionTS < *times[2])) ||
				times[3] != nil && (b.CompletionTS == nil || !(*b.CompletionTS > *times[3])) {
				continue
			}
			out = append(out, *b)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortByID(out, func(b bus.Build) int64 { return b.ID })
	return applyListOpts(out, qo)
}

func (s *Server) cancelBuild(ctx context.Context, c *registry.Call) (any, error) {
	ref, err := readBuildRef(c, "buildID")
	if err != nil {
		return nil, err
	}
	strict, err := c.Bool("strict")
	if err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		b, err := getBuildStrict(tx.View, ref)
		if err != nil {
			return nil, err
		}
		if b.OwnerID != c.Caller.UserID && !viewHasPerm(tx.View, c.Caller.UserID, "admin", true) {
			return nil, bus.ActionNotAllowed("Cannot cancel build, not owner")
		}
		if b.State != bus.BuildBuilding {
			if strict {
				return nil, bus.GenericError("Cannot cancel build %s, state is %s", b.NVR, stateName(bus.BuildStateNames, b.State))
			}
			return false, nil
		}
		old := b.State
		now := nowTS()
		b.State, b.CompletionTS, b.CompletionTime = bus.BuildCanceled, &now, ptr(kojiTime(now))
		if err := tx.Put(buildKey(b.ID), b); err != nil {
			return nil, err
		}
		buildStateEvent(tx, b, &old)
		return true, nil
	})
}

// assertTagAccess is Koji's assert_tag_access: a locked tag, or a tag that
// requires a permission the user lacks, refuses changes unless an admin forces.
func assertTagAccess(v state.View, userID int64, t *tagRecord, force bool) error {
	admin := viewHasPerm(v, userID, "admin", false)
	reason := ""
	if t.Locked {
		reason = "tag is locked"
	} else if t.Perm != nil && *t.Perm != "" && !viewHasPerm(v, userID, *t.Perm, false) {
		reason = "tag requires " + *t.Perm + " permission"
	}
	if reason != "" && !(admin && force) {
		return bus.ActionNotAllowed("%s", reason)
	}
	return nil
}

func tagEventProps(kind string, t *tagRecord, b *bus.Build, user string) map[string]any {
	return map[string]any{"type": kind, "tag": t.Name, "name": b.Name, "version": b.Version, "release": b.Release, "user": user}
}

// tagBuildArgs are the tag, build and force arguments of tagBuild and tagBuildBypass.
type tagBuildArgs struct {
	tag   registry.Ref
	build buildRef
	force bool
}

func readTagBuildArgs(c *registry.Call) (a tagBuildArgs, err error) {
	if a.tag, err = c.Ref("tag"); err != nil {
		return a, err
	}
	if a.build, err = readBuildRef(c, "build"); err != nil {
		return a, err
	}
	a.force, err = c.Bool("force")
	return a, err
}

// lookup finds the tag and the build, which must be complete.
func (a tagBuildArgs) lookup(v state.View) (*tagRecord, *bus.Build, error) {
	b, err := getBuildStrict(v, a.build)
	if err != nil {
		return nil, nil, err
	}
	t, err := getTagStrict(v, a.tag)
	if err != nil {
		return nil, nil, err
	}
	if b.State != bus.BuildComplete {
		return nil, nil, bus.NewFault(bus.CodeTagError, "build %s not complete: state %s", b.NVR, stateName(bus.BuildStateNames, b.State))
	}
	return t, b, nil
}

func (s *Server) tagBuild(ctx context.Context, c *registry.Call) (any, error) {
	args, err := readTagBuildArgs(c)
	if err != nil {
		return nil, err
	}
	force := args.force
	fromRef, err := c.OptRef("fromtag")
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, b, err := args.lookup(tx.View)
		if err != nil {
			return nil, err
		}
		var from *tagRecord
		if fromRef != nil {
			if from, err = getTagStrict(tx.View, *fromRef); err != nil {
				return nil, err
			}
		}
		uid := c.Caller.UserID
		if err := assertTagAccess(tx.View, uid, t, force); err != nil {
			return nil, err
		}
		if from != nil {
			if err := assertTagAccess(tx.View, uid, from, force); err != nil {
				return nil, err
			}
		}
		admin := viewHasPerm(tx.View, uid, "admin", false)
		listed, blocked := pkgListStatus(tx.View, t.ID, b.PackageID)
		if !listed || blocked {
			if !(force && admin) {
				if !listed {
					return nil, bus.NewFault(bus.CodeTagError, "Package %s not in list for %s", b.Name, t.Name)
				}
				return nil, bus.NewFault(bus.CodeTagError, "Package %s blocked in %s", b.Name, t.Name)
			}
			if err := pkgListForceAdd(tx, c, t, b.PackageID); err != nil {
				return nil, err
			}
		}
		policy := map[string]any{"tag": t.ID, "build": b.ID, "fromtag": int64(0), "operation": "tag", "user_id": uid, "force": force}
		if from != nil {
			policy["fromtag"], policy["operation"] = from.ID, "move"
		}
		if err := s.assertPolicy(tx.View, "tag", policy, c, force); err != nil {
			return nil, err
		}
		if _, _, tagged := tx.Get(taggedKey(t.ID, b.ID)); tagged && !force {
			return nil, bus.NewFault(bus.CodeTagError, "build %s already tagged (%s)", b.NVR, t.Name)
		}
		u, _ := lookupUser(tx.View, registry.Ref{ID: uid})
		userInfo := any(nil)
		if u != nil {
			userInfo = u.User
		}
		if from != nil {
			if _, _, ok := tx.Get(taggedKey(from.ID, b.ID)); !ok {
				return nil, bus.NewFault(bus.CodeTagError, "build %s not in tag %s", b.NVR, from.Name)
			}
			tx.Delete(taggedKey(from.ID, b.ID))
			if err := touchTag(tx, from.ID); err != nil {
				return nil, err
			}
			tx.Emit("build.untag", tagEventProps("Untag", from, b, c.Caller.UserName),
				map[string]any{"tag": from.info(), "build": b, "user": userInfo, "force": force, "strict": true})
		}
		return nil, insertTagged(tx, c, t, b, userInfo, force)
	})
	return nil, err
}

// insertTagged tags b in t and emits build.tag (Koji's _tag_build insert).
func insertTagged(tx *state.Txn, c *registry.Call, t *tagRecord, b *bus.Build, userInfo any, force bool) error {
	uid := c.Caller.UserID
	if err := tx.Put(taggedKey(t.ID, b.ID), taggedRecord{TagID: t.ID, BuildID: b.ID, UserID: uid, TS: nowTS()}); err != nil {
		return err
	}
	if err := touchTag(tx, t.ID); err != nil {
		return err
	}
	tx.Emit("build.tag", tagEventProps("Tag", t, b, c.Caller.UserName),
		map[string]any{"tag": t.info(), "build": b, "user": userInfo, "force": force})
	return nil
}

func (s *Server) untagBuild(ctx context.Context, c *registry.Call) (any, error) {
	tagRef, err := c.Ref("tag")
	if err != nil {
		return nil, err
	}
	ref, err := readBuildRef(c, "build")
	if err != nil {
		return nil, err
	}
	strict, err := c.Bool("strict")
	if err != nil {
		return nil, err
	}
	force, err := c.Bool("force")
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, err := getTagStrict(tx.View, tagRef)
		if err != nil {
			return nil, err
		}
		b, err := getBuildStrict(tx.View, ref)
		if err != nil {
			return nil, err
		}
		uid := c.Caller.UserID
		policy := map[string]any{"tag": int64(0), "build": b.ID, "fromtag": t.ID, "operation": "untag", "user_id": uid, "force": force}
		if err := s.assertPolicy(tx.View, "tag", policy, c, force); err != nil {
			return nil, err
		}
		if err := assertTagAccess(tx.View, uid, t, force); err != nil {
			return nil, err
		}
		if _, _, ok := tx.Get(taggedKey(t.ID, b.ID)); !ok {
			if strict {
				return nil, bus.NewFault(bus.CodeTagError, "build %s not in tag %s", b.NVR, t.Name)
			}
			return nil, nil
		}
		tx.Delete(taggedKey(t.ID, b.ID))
		if err := touchTag(tx, t.ID); err != nil {
			return nil, err
		}
		u, _ := lookupUser(tx.View, registry.Ref{ID: uid})
		userInfo := any(nil)
		if u != nil {
			userInfo = u.User
		}
		tx.Emit("build.untag", tagEventProps("Untag", t, b, c.Caller.UserName),
			map[string]any{"tag": t.info(), "build": b, "user": userInfo, "force": force, "strict": strict})
		for _, hook := range s.untagHooks {
			if err := hook(tx, c, t); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
	return nil, err
}

// untagBuildsTx untags every build of a tag, each with its build.untag
// event (deleteTag's listing removal emits none, as Koji's).
func untagBuildsTx(tx *state.Txn, c *registry.Call, t *tagRecord) error {
	for _, k := range tx.Keys("tagged", taggedPrefix(t.ID)) {
		var rec taggedRecord
		if ok, _ := tx.GetJSON(k, &rec); !ok {
			continue
		}
		b, ok := buildByID(tx.View, rec.BuildID)
		tx.Delete(k)
		if !ok {
			continue
		}
		tx.Emit("build.untag", tagEventProps("Untag", t, b, callerName(c)),
			map[string]any{"tag": t.info(), "build": b, "user": callerName(c), "force": false, "strict": true})
	}
	return nil
}

// taggedQuery is readTaggedBuilds' filter.
type taggedQuery struct {
	inherit bool
	latest  int // 0: all; n: the n latest per package
	pkg     string
	owner   string
	draft   *bool
	extra   bool
}

// readTaggedBuilds is Koji's readTaggedBuilds on a snapshot: COMPLETE builds
// tagged in the tag (and its ancestors with inherit), most recently tagged
// first, keeping only packages listed and not blocked in the tag's
// (inherited) package list, and with latest the first n per package along
// the inheritance order.
func readTaggedBuilds(v state.View, tagID int64, q taggedQuery) []bus.TaggedBuild {
	chain := []int64{tagID}
	if q.inherit {
		chain = tagChain(v, tagID)
	}
	seen := map[int64]int{}
	out := []bus.TaggedBuild{}
	for _, tid := range chain {
		t, ok := tagByID(v, tid)
		if !ok {
			continue
		}
		type row struct {
			b   *bus.Build
			rev uint64
		}
		var rows []row
		for _, k := range v.Keys("tagged", taggedPrefix(tid)) {
			id, err := strconv.ParseInt(strings.TrimPrefix(k, taggedPrefix(tid)), 10, 64)
			if err != nil {
				continue
			}
			_, rev, _ := v.Get(k)
			b, ok := buildByID(v, id)
			if !ok || b.State != bus.BuildComplete ||
				q.pkg != "" && b.Name != q.pkg || q.owner != "" && b.OwnerName != q.owner || q.draft != nil && b.Draft != *q.draft {
				continue
			}
			rows = append(rows, row{b, rev})
		}
		// most recently tagged first; in a tie, newest build first
		sortRows := func(i, j int) bool {
			if rows[i].rev != rows[j].rev {
				return rows[i].rev > rows[j].rev
			}
			return rows[i].b.ID > rows[j].b.ID
		}
		sort.Slice(rows, sortRows)
		for _, r := range rows {
			listed, blocked := pkgListStatus(v, tagID, r.b.PackageID)
			if !listed || blocked {
				continue
			}
			if q.latest > 0 {
				if seen[r.b.PackageID] >= q.latest {
					continue
				}
				seen[r.b.PackageID]++
			}
			out = append(out, taggedView(t, r.b, int64(r.rev), q.extra))
		}
	}
	return out
}

func taggedView(t *tagRecord, b *bus.Build, ev int64, extra bool) bus.TaggedBuild {
	tb := bus.TaggedBuild{
		TagID: t.ID, TagName: t.Name, ID: b.ID, BuildID: b.ID, Version: b.Version, Release: b.Release, Epoch: b.Epoch,
		State: b.State, CompletionTime: b.CompletionTime, PromotionTime: b.PromotionTime, StartTime: b.StartTime,
		TaskID: b.TaskID, Draft: b.Draft, OwnerID: b.OwnerID, OwnerName: b.OwnerName, PromoterID: b.PromoterID,
		PromoterName: b.PromoterName, CreationEventID: b.CreationEventID, CreationTime: b.CreationTime,
		VolumeID: b.VolumeID, VolumeName: b.VolumeName, PackageID: b.PackageID, PackageName: b.PackageName,
		Name: b.Name, NVR: b.NVR, CreateEvent: ev,
	}
	if extra {
		e := b.Extra
		tb.Extra = &e
	}
	return tb
}

// readLatest decodes listTagged's latest: a bool or a number n.
func readLatest(c *registry.Call) (int, error) {
	if n, err := c.Int("latest"); err == nil && !c.IsNull("latest") {
		var b bool
		if c.Decode("latest", &b) == nil {
			if b {
				return 1, nil
			}
			return 0, nil
		}
		if n < 0 {
			n = 0
		}
		return int(n), nil
	}
	b, err := c.Bool("latest")
	if err != nil {
		return 0, bus.ParameterError("%s(): parameter 'latest' must be a boolean or a number", c.Method.Name)
	}
	if b {
		return 1, nil
	}
	return 0, nil
}

func (s *Server) listTagged(ctx context.Context, c *registry.Call) (any, error) {
	tagRef, err := c.Ref("tag")
	if err != nil {
		return nil, err
	}
	if _, err := c.OptInt("event"); err != nil {
		return nil, err
	}
	q := taggedQuery{}
	if q.inherit, err = c.Bool("inherit"); err != nil {
		return nil, err
	}
	prefix, err := c.OptString("prefix")
	if err != nil {
		return nil, err
	}
	if q.latest, err = readLatest(c); err != nil {
		return nil, err
	}
	pkg, err := c.OptString("package")
	if err != nil {
		return nil, err
	}
	owner, err := c.OptString("owner")
	if err != nil {
		return nil, err
	}
	btype, err := c.OptString("type")
	if err != nil {
		return nil, err
	}
	strict, err := c.Bool("strict")
	if err != nil {
		return nil, err
	}
	if q.extra, err = c.Bool("extra"); err != nil {
		return nil, err
	}
	if q.draft, err = c.OptBool("draft"); err != nil {
		return nil, err
	}
	if pkg != nil {
		q.pkg = *pkg
	}
	if owner != nil {
		q.owner = *owner
	}
	var out []bus.TaggedBuild
	err = s.store.Read(func(v state.View) error {
		t, ok := lookupTag(v, tagRef)
		if !ok {
			if strict {
				return bus.GenericError("No such tagInfo: %s", tagRef.String())
			}
			out = []bus.TaggedBuild{}
			return nil
		}
		if btype != nil && *btype != "" {
			return bus.GenericError("unsupported build type: %s", *btype)
		}
		out = readTaggedBuilds(v, t.ID, q)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if prefix != nil && *prefix != "" {
		p := strings.ToLower(*prefix)
		kept := out[:0]
		for _, b := range out {
			if strings.HasPrefix(strings.ToLower(b.PackageName), p) {
				kept = append(kept, b)
			}
		}
		out = kept
	}
	return out, nil
}

func (s *Server) getLatestBuilds(ctx context.Context, c *registry.Call) (any, error) {
	tagRef, err := c.Ref("tag")
	if err != nil {
		return nil, err
	}
	if _, err := c.OptInt("event"); err != nil {
		return nil, err
	}
	pkg, err := c.OptString("package")
	if err != nil {
		return nil, err
	}
	btype, err := c.OptString("type")
	if err != nil {
		return nil, err
	}
	draft, err := c.OptBool("draft")
	if err != nil {
		return nil, err
	}
	q := taggedQuery{inherit: true, latest: 1, draft: draft}
	if pkg != nil {
		q.pkg = *pkg
	}
	var out []bus.TaggedBuild
	err = s.store.Read(func(v state.View) error {
		t, err := getTagStrict(v, tagRef)
		if err != nil {
			return err
		}
		if btype != nil && *btype != "" {
			return bus.GenericError("unsupported build type: %s", *btype)
		}
		out = readTaggedBuilds(v, t.ID, q)
		return nil
	})
	return out, err
}
