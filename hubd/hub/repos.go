package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Keys of the repo part of the state bucket.
//
//	repo.<id>        repoRecord (repoInfo's fields plus who generates it)
//	repoqueue.<id>   bus.RepoRequest (Koji's repo_queue row)
//	seq.repo, seq.repoqueue
//
// Repo content goes to the Object Store bus.RepoStore as
// "<tag_name>/<repo_id>/repo.json" (bus.RepoContent).
//
// The hub generates repos itself (repoService; builders only wait for them):
// it reacts to state changes (store.Changed, no polling loop) for active
// requests and for tags whose build config has repo.auto. Differences from
// Koji, on purpose:
//   - the default min_event of repo.request is the tag's last change (Koji
//     allows up to RepoLag of lag because its regeneration is expensive);
//   - repos are generated from the current state, so at_event (and newRepo's
//     event) can only name the event of an existing repo;
//   - newRepo returns the id of a forced repo request instead of a task id
//     (wait with repo.checkRequest or on koji.event.repo.done).

type repoRecord struct {
	bus.Repo
	InitTS float64 `json:"init_ts"`
}

func repoKey(id int64) string    { return "repo." + strconv.FormatInt(id, 10) }
func repoReqKey(id int64) string { return "repoqueue." + strconv.FormatInt(id, 10) }

// repoStaleAfter is how long an INIT repo may stay unfinished before another
// hub marks it PROBLEM (its generator died) and a new one is made.
const repoStaleAfter = 2 * time.Minute

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerRepos) }

func repoOptVal(o bus.RepoOpts, k string) bool {
	switch k {
	case "src":
		return o.Src
	case "debuginfo":
		return o.Debuginfo
	case "separate_src":
		return o.SeparateSrc
	case "maven":
		return o.Maven
	}
	return false
}

func setRepoOpt(o *bus.RepoOpts, k string, v bool) {
	switch k {
	case "src":
		o.Src = v
	case "debuginfo":
		o.Debuginfo = v
	case "separate_src":
		o.SeparateSrc = v
	case "maven":
		o.Maven = v
	}
}

var repoOptNames = []string{"src", "debuginfo", "separate_src", "maven"}

// convertRepoOpts is Koji's convert_repo_opts.
func convertRepoOpts(raw any, strict bool) (map[string]bool, error) {
	out := map[string]bool{}
	if raw == nil {
		return out, nil
	}
	m, ok := raw.(map[string]any)
	if !ok {
		if strict {
			return nil, bus.ParameterError("Repo opts must be a dictionary")
		}
		return out, nil
	}
	for k, v := range m {
		known := false
		for _, n := range repoOptNames {
			known = known || n == k
		}
		if !known {
			if strict {
				return nil, bus.ParameterError("Invalid repo option: %s", k)
			}
			continue
		}
		if v == nil {
			continue
		}
		out[k] = bus.OptionTruthy(v)
	}
	return out, nil
}

// repoOptsFor is get_repo_opts: the tag's default options (extra repo.opts,
// legacy with_debuginfo) with the overrides applied, and the effective overrides.
func repoOptsFor(t *tagRecord, override map[string]bool) (bus.RepoOpts, map[string]bool) {
	var opts bus.RepoOpts
	tagOpts, _ := convertRepoOpts(t.Extra["repo.opts"], false)
	if v, ok := t.Extra["with_debuginfo"]; ok {
		if _, has := t.Extra["repo.opts"]; !has {
			tagOpts["debuginfo"] = bus.OptionTruthy(v)
		}
	}
	for k, v := range tagOpts {
		setRepoOpt(&opts, k, v)
	}
	opts.Maven = false
	custom := map[string]bool{}
	for k, v := range override {
		if repoOptVal(opts, k) != v {
			custom[k] = v
		}
	}
	for k, v := range custom {
		setRepoOpt(&opts, k, v)
	}
	return opts, custom
}

// repoMatches is get_repo's opts condition: the repo has every requested
// option, and no custom option that was not requested.
func repoMatches(r *bus.Repo, opts map[string]bool) bool {
	for k, v := range opts {
		if repoOptVal(r.Opts, k) != v {
			return false
		}
	}
	for k, v := range r.CustomOpts {
		if w, ok := opts[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// Groups of the view's indexes (state.Indexer) that the repo machinery
// reads, so that a generation pass and a tag's repos cost what they find,
// not a scan of every tag, repo and request.
const (
	groupRepoAuto      = "repo.auto" // tag: its extra names repo.auto
	groupRepoInit      = "init"      // repo: INIT (being generated)
	groupActiveRequest = "active"    // repoqueue: an active request
)

var (
	repoAutoGroups      = []string{groupRepoAuto}
	activeRequestGroups = []string{groupActiveRequest}
)

func repoTagGroup(tagID int64) string { return "tag." + strconv.FormatInt(tagID, 10) }

// repoAutoTagGroups files a tag that may set repo.auto: the pass decodes
// those alone.
func repoAutoTagGroups(_ string, val []byte) []string {
	if bytes.Contains(val, []byte(`"repo.auto"`)) {
		return repoAutoGroups
	}
	return nil
}

// repoGroups files a repo under its tag, and under groupRepoInit while it
// is being generated.
func repoGroups(_ string, val []byte) []string {
	var r struct {
		TagID int64 `json:"tag_id"`
		State int   `json:"state"`
	}
	if json.Unmarshal(val, &r) != nil {
		return nil
	}
	if r.State == bus.RepoInit {
		return []string{repoTagGroup(r.TagID), groupRepoInit}
	}
	return []string{repoTagGroup(r.TagID)}
}

// repoRequestGroups files an active repo request.
func repoRequestGroups(_ string, val []byte) []string {
	var r struct {
		Active bool `json:"active"`
	}
	if json.Unmarshal(val, &r) != nil || !r.Active {
		return nil
	}
	return activeRequestGroups
}

// readRepos returns the repos of a tag (0: of every tag), by id.
func readRepos(v state.View, tagID int64) []*repoRecord {
	keys := v.Keys("repo", "repo.")
	if tagID != 0 {
		keys = v.Group("repo", repoTagGroup(tagID))
	}
	return decodeRepos(v, keys)
}

func decodeRepos(v state.View, keys []string) []*repoRecord {
	var out []*repoRecord
	for _, k := range keys {
		var r repoRecord
		if ok, _ := v.GetJSON(k, &r); ok {
			out = append(out, &r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func repoByID(v state.View, id int64) (*repoRecord, bool) {
	var r repoRecord
	if ok, err := v.GetJSON(repoKey(id), &r); !ok || err != nil {
		return nil, false
	}
	return &r, true
}

// repoView fills the fields that come from joins (tag name, create_ts).
func repoView(v state.View, r *repoRecord) *bus.Repo {
	out := r.Repo
	if t, ok := tagByID(v, r.TagID); ok {
		out.TagName = t.Name
	}
	if out.CustomOpts == nil {
		out.CustomOpts = map[string]bool{}
	}
	return &out
}

// findRepo is get_repo: the newest READY repo of the tag matching the event and opts.
func findRepo(v state.View, tagID int64, minEvent, atEvent *int64, opts map[string]bool) *bus.Repo {
	var best *repoRecord
	for _, r := range readRepos(v, tagID) {
		if r.State != bus.RepoReady || r.Dist || !repoMatches(&r.Repo, opts) {
			continue
		}
		if atEvent != nil && r.CreateEvent != *atEvent || atEvent == nil && minEvent != nil && r.CreateEvent < *minEvent {
			continue
		}
		if best == nil || r.CreateEvent > best.CreateEvent {
			best = r
		}
	}
	if best == nil {
		return nil
	}
	return repoView(v, best)
}

// chainLastChange is tagLastChangeEvent(inherit=True): the newest change of
// the tag's config, inheritance or content, or of any ancestor's.
func chainLastChange(v state.View, tagID int64) int64 {
	var last uint64
	for _, id := range tagChain(v, tagID) {
		for _, k := range []string{tagKey(id), tagInhKey(id)} {
			if _, rev, ok := v.Get(k); ok && rev > last {
				last = rev
			}
		}
		if rev := tagLastChange(v, id); rev > last {
			last = rev
		}
	}
	return int64(last)
}

func readRequest(v state.View, id int64) (*bus.RepoRequest, bool) {
	var r bus.RepoRequest
	if ok, err := v.GetJSON(repoReqKey(id), &r); !ok || err != nil {
		return nil, false
	}
	if t, ok := tagByID(v, r.TagID); ok {
		r.TagName = t.Name
	}
	if u, ok := lookupUser(v, registry.Ref{ID: r.Owner}); ok {
		r.OwnerName = u.Name
	}
	return &r, true
}

func activeRequests(v state.View) []*bus.RepoRequest {
	var out []*bus.RepoRequest
	for _, k := range v.Group("repoqueue", groupActiveRequest) {
		id, err := strconv.ParseInt(strings.TrimPrefix(k, "repoqueue."), 10, 64)
		if err != nil {
			continue
		}
		if r, ok := readRequest(v, id); ok && r.Active {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Priority != out[j].Priority {
			return out[i].Priority < out[j].Priority
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// requestSatisfied is valid_repo.
func requestSatisfied(req *bus.RepoRequest, r *bus.Repo) bool {
	if r.TagID != req.TagID || r.State != bus.RepoReady {
		return false
	}
	if req.AtEvent != nil {
		if r.CreateEvent != *req.AtEvent {
			return false
		}
	} else if req.MinEvent != nil && r.CreateEvent < *req.MinEvent {
		return false
	}
	return repoMatches(r, req.Opts)
}

func (s *Server) registerRepos() {
	s.reg.Register(
		registry.Method{
			Name: "repo.request", Doc: "Request a repo for a tag; returns {repo, request, duplicate}",
			Params: []registry.Param{registry.P("tag"), registry.Opt("min_event", nil), registry.Opt("at_event", nil),
				registry.Opt("opts", nil), registry.Opt("priority", nil), registry.Opt("force", false)},
			Access: registry.LoggedIn, Write: true,
			Handler: s.repoRequest,
		},
		registry.Method{
			Name: "repo.checkRequest", Doc: "Report the status of a repo request: {repo, request}",
			Params:  []registry.Param{registry.P("req_id")},
			Handler: s.repoCheckRequest,
		},
		registry.Method{
			Name: "repo.get", Doc: "Get the best ready repo matching the requirements, or None",
			Params: []registry.Param{registry.P("tag"), registry.Opt("min_event", nil), registry.Opt("at_event", nil), registry.Opt("opts", nil)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				tagRef, err := c.Ref("tag")
				if err != nil {
					return nil, err
				}
				minEv, err := c.OptInt("min_event")
				if err != nil {
					return nil, err
				}
				atEv, err := c.OptInt("at_event")
				if err != nil {
					return nil, err
				}
				opts, err := readRepoOpts(c)
				if err != nil {
					return nil, err
				}
				var out *bus.Repo
				err = s.store.Read(func(v state.View) error {
					t, err := getTagStrict(v, tagRef)
					if err != nil {
						return err
					}
					out = findRepo(v, t.ID, minEv, atEv, opts)
					return nil
				})
				return out, err
			},
		},
		registry.Method{
			Name: "repo.query", Doc: "Query repos: clauses [[field, op, value]...], fields, opts (order, offset, limit, countOnly)",
			Params:  []registry.Param{registry.Opt("clauses", nil), registry.Opt("fields", nil), registry.Opt("opts", nil)},
			Handler: s.repoQuery,
		},
		registry.Method{
			Name: "repoInfo", Doc: "Get information about a repo",
			Params: []registry.Param{registry.P("repo_id"), registry.Opt("strict", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				id, err := c.Int("repo_id")
				if err != nil {
					return nil, err
				}
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				var out *bus.Repo
				_ = s.store.Read(func(v state.View) error {
					if r, ok := repoByID(v, id); ok {
						out = repoView(v, r)
					}
					return nil
				})
				if out == nil && strict {
					return nil, bus.GenericError("No such repo: %d", id)
				}
				return out, nil
			},
		},
		registry.Method{
			Name: "getRepo", Doc: "Get the most recent repo of a tag (READY unless state is given)",
			Params: []registry.Param{registry.P("tag"), registry.Opt("state", nil), registry.Opt("event", nil),
				registry.Opt("dist", false), registry.Opt("min_event", nil)},
			Handler: s.getRepo,
		},
		registry.Method{
			Name: "newRepo", Doc: "Regenerate the repo of a tag (kojibus: returns the id of a forced repo request, not a task id)",
			Params: []registry.Param{registry.P("tag"), registry.Opt("event", nil), registry.Opt("src", false),
				registry.Opt("debuginfo", false), registry.Opt("separate_src", false)},
			Access: registry.LoggedIn, Write: true,
			Handler: s.newRepo,
		},
	)
}

func readRepoOpts(c *registry.Call) (map[string]bool, error) {
	var raw any
	if !c.IsNull("opts") {
		if err := c.Decode("opts", &raw); err != nil {
			return nil, bus.ParameterError("Repo opts must be a dictionary")
		}
	}
	return convertRepoOpts(raw, true)
}

func (s *Server) repoRequest(ctx context.Context, c *registry.Call) (any, error) {
	tagRef, err := c.Ref("tag")
	if err != nil {
		return nil, err
	}
	opts, err := readRepoOpts(c)
	if err != nil {
		return nil, err
	}
	if opts["maven"] {
		return nil, bus.GenericError("Maven support not enabled")
	}
	atEv, err := c.OptInt("at_event")
	if err != nil {
		return nil, err
	}
	minLast := false
	var minEv *int64
	if !c.IsNull("min_event") {
		if sv, err := c.String("min_event"); err == nil {
			if sv != "last" {
				return nil, bus.ParameterError("Invalid event: %s", sv)
			}
			minLast = true
		} else if minEv, err = c.OptInt("min_event"); err != nil {
			return nil, err
		}
	}
	if atEv != nil && (minEv != nil || minLast) {
		return nil, bus.ParameterError("The min_event and at_event options conflict")
	}
	prio, err := c.OptInt("priority")
	if err != nil {
		return nil, err
	}
	force, err := c.Bool("force")
	if err != nil {
		return nil, err
	}
	priority := int64(20)
	if prio != nil {
		if *prio < 0 && !s.hasPerm(c.Caller.UserID, "admin", false) {
			return nil, bus.ActionNotAllowed("only admins may create high-priority requests")
		}
		priority += *prio
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		return createRepoRequest(tx, c, tagRef, minEv, atEv, opts, priority, force, false)
	})
}

// createRepoRequest is request_repo inside a transaction. bumpMin makes the
// request need a repo newer than now (newRepo).
func createRepoRequest(tx *state.Txn, c *registry.Call, tagRef registry.Ref, minEv, atEv *int64, opts map[string]bool, priority int64, force, bumpMin bool) (*bus.RepoRequestResult, error) {
	t, err := getTagStrict(tx.View, tagRef)
	if err != nil {
		return nil, err
	}
	now := int64(tx.Applied())
	if atEv != nil {
		if *atEv <= 0 || *atEv > now {
			return nil, bus.ParameterError("Invalid event: %d", *atEv)
		}
	} else if minEv != nil {
		if *minEv <= 0 || *minEv > now {
			return nil, bus.ParameterError("Invalid event: %d", *minEv)
		}
	} else {
		last := chainLastChange(tx.View, t.ID)
		minEv = &last
	}
	if bumpMin {
		next := now + 1
		minEv = &next
	}
	res := &bus.RepoRequestResult{}
	if !force {
		if r := findRepo(tx.View, t.ID, minEv, atEv, opts); r != nil {
			res.Repo = r
			return res, nil
		}
	}
	if atEv != nil && findRepo(tx.View, t.ID, nil, atEv, opts) == nil {
		return nil, bus.GenericError("kojibus cannot generate a repo at past event %d: repos are made from the current state", *atEv)
	}
	for _, req := range activeRequests(tx.View) {
		if req.TagID != t.ID || !sameJSON(req.Opts, opts) {
			continue
		}
		if atEv != nil && (req.AtEvent == nil || *req.AtEvent != *atEv) ||
			atEv == nil && (req.MinEvent == nil || *req.MinEvent < *minEv) {
			continue
		}
		if req.Priority > priority {
			req.Priority = priority
			if err := tx.Put(repoReqKey(req.ID), req); err != nil {
				return nil, err
			}
			tx.Emit("repo.request", map[string]any{"type": "RepoRequest", "tag": t.Name, "request_id": req.ID, "priority": priority},
				map[string]any{"request": req})
		}
		res.Request, res.Duplicate = req, true
		return res, nil
	}
	u, _ := lookupUser(tx.View, registry.Ref{ID: c.Caller.UserID})
	ts := nowTS()
	req := &bus.RepoRequest{
		ID: tx.NextID("repoqueue"), Active: true, AtEvent: atEv, MinEvent: minEv, Opts: opts, Owner: c.Caller.UserID,
		Priority: priority, TagID: t.ID, TagName: t.Name, CreateTime: kojiTime(ts), CreateTS: ts, UpdateTime: kojiTime(ts), UpdateTS: ts,
	}
	if u != nil {
		req.OwnerName = u.Name
	}
	if err := tx.Put(repoReqKey(req.ID), req); err != nil {
		return nil, err
	}
	tx.Emit("repo.request", map[string]any{"type": "RepoRequest", "tag": t.Name, "request_id": req.ID, "priority": priority},
		map[string]any{"request": req})
	res.Request = req
	return res, nil
}

func (s *Server) repoCheckRequest(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("req_id")
	if err != nil {
		return nil, err
	}
	var out *bus.RepoCheck
	err = s.store.Read(func(v state.View) error {
		req, ok := readRequest(v, id)
		if !ok {
			return bus.GenericError("No such request")
		}
		out = &bus.RepoCheck{Request: req}
		if req.RepoID != nil {
			if r, ok := repoByID(v, *req.RepoID); ok {
				out.Repo = repoView(v, r)
			}
		}
		return nil
	})
	return out, err
}

func (s *Server) getRepo(ctx context.Context, c *registry.Call) (any, error) {
	tagRef, err := c.Ref("tag")
	if err != nil {
		return nil, err
	}
	st, err := c.OptInt("state")
	if err != nil {
		return nil, err
	}
	event, err := c.OptInt("event")
	if err != nil {
		return nil, err
	}
	dist, err := c.Bool("dist")
	if err != nil {
		return nil, err
	}
	minEv, err := c.OptInt("min_event")
	if err != nil {
		return nil, err
	}
	var out *bus.Repo
	err = s.store.Read(func(v state.View) error {
		t, err := getTagStrict(v, tagRef)
		if err != nil {
			return err
		}
		var best *repoRecord
		for _, r := range readRepos(v, t.ID) {
			if r.Dist != dist {
				continue
			}
			if event != nil && *event != 0 {
				if r.CreateEvent > *event {
					continue
				}
			} else {
				want := int64(bus.RepoReady)
				if st != nil {
					want = *st
				}
				if int64(r.State) != want {
					continue
				}
			}
			if minEv != nil && r.CreateEvent < *minEv {
				continue
			}
			if best == nil || r.CreationTS > best.CreationTS || r.CreationTS == best.CreationTS && r.ID > best.ID {
				best = r
			}
		}
		if best != nil {
			out = repoView(v, best)
		}
		return nil
	})
	return out, err
}

func (s *Server) newRepo(ctx context.Context, c *registry.Call) (any, error) {
	// A host session may: it runs a newRepo task on the hub's behalf.
	if c.Caller.HostID == 0 && !s.hasPerm(c.Caller.UserID, "repo", true) && !s.hasPerm(c.Caller.UserID, "regen-repo", false) {
		return nil, bus.ActionNotAllowed("regen-repo permission required (logged in as %s)", c.Caller.UserName)
	}
	tagRef, err := c.Ref("tag")
	if err != nil {
		return nil, err
	}
	event, err := c.OptInt("event")
	if err != nil {
		return nil, err
	}
	opts := map[string]bool{}
	for _, k := range []string{"src", "debuginfo", "separate_src"} {
		b, err := c.Bool(k)
		if err != nil {
			return nil, err
		}
		if b {
			opts[k] = true
		}
	}
	res, err := s.update(ctx, c, func(tx *state.Txn) (any, error) {
		if event != nil {
			return createRepoRequest(tx, c, tagRef, nil, event, opts, 15, true, false)
		}
		return createRepoRequest(tx, c, tagRef, nil, nil, opts, 15, true, true)
	})
	if err != nil {
		return nil, err
	}
	if r, ok := res.(*state.Result); ok && !r.Replayed {
		if rr, ok := r.Value.(*bus.RepoRequestResult); ok && rr.Request != nil {
			return rr.Request.ID, nil
		}
	}
	return res, nil
}

// repoQuery is repo.query: clauses [field, op, value] over repoInfo's fields.
func (s *Server) repoQuery(ctx context.Context, c *registry.Call) (any, error) {
	var clauses [][]any
	if !c.IsNull("clauses") {
		if err := c.Decode("clauses", &clauses); err != nil {
			return nil, bus.ParameterError("repo.query(): clauses must be a list of [field, op, value]")
		}
	}
	var fields []string
	if !c.IsNull("fields") {
		if sv, err := c.String("fields"); err == nil && sv == "**" {
			fields = nil
		} else if fields, err = c.Strings("fields"); err != nil {
			return nil, err
		}
	} else {
		fields = []string{"id", "tag_id", "create_event", "state", "dist", "task_id", "opts", "custom_opts"}
	}
	qo, err := readQueryOpts(c, "opts")
	if err != nil {
		return nil, err
	}
	for _, cl := range clauses {
		if len(cl) != 3 {
			return nil, bus.ParameterError("Invalid clause: %v", cl)
		}
		if _, ok := cl[1].(string); !ok {
			return nil, bus.ParameterError("Invalid clause: %v", cl)
		}
	}
	rows := []map[string]any{}
	err = s.store.Read(func(v state.View) error {
		for _, r := range readRepos(v, 0) {
			b, _ := json.Marshal(repoView(v, r))
			var m map[string]any
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.UseNumber()
			_ = dec.Decode(&m)
			ok := true
			for _, cl := range clauses {
				field, _ := cl[0].(string)
				val, known := m[field]
				if !known {
					return bus.ParameterError("Invalid field: %v", cl[0])
				}
				match, err := clauseMatch(val, cl[1].(string), cl[2])
				if err != nil {
					return err
				}
				ok = ok && match
			}
			if !ok {
				continue
			}
			if fields != nil {
				sel := map[string]any{}
				for _, f := range fields {
					v, known := m[f]
					if !known {
						return bus.ParameterError("Invalid field: %s", f)
					}
					sel[f] = v
				}
				m = sel
			}
			rows = append(rows, m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return applyListOpts(rows, qo)
}

func clauseMatch(val any, op string, want any) (bool, error) {
	c := compareJSON(val, want)
	switch strings.ToUpper(op) {
	case "=", "IS":
		return c == 0, nil
	case "!=", "IS NOT":
		return c != 0, nil
	case "<":
		return c < 0, nil
	case ">":
		return c > 0, nil
	case "<=":
		return c <= 0, nil
	case ">=":
		return c >= 0, nil
	case "IN", "NOT IN":
		list, ok := want.([]any)
		if !ok {
			return false, bus.ParameterError("IN needs a list")
		}
		found := false
		for _, w := range list {
			found = found || compareJSON(val, w) == 0
		}
		return found == (strings.ToUpper(op) == "IN"), nil
	}
	return false, bus.ParameterError("Invalid operator: %s", op)
}

func compareJSON(a, b any) int {
	af, aok := toFloat(a)
	bf, bok := toFloat(b)
	if aok && bok {
		switch {
		case af < bf:
			return -1
		case af > bf:
			return 1
		}
		return 0
	}
	ab, _ := json.Marshal(a)
	bb, _ := json.Marshal(b)
	return bytes.Compare(ab, bb)
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case json.Number:
		f, err := x.Float64()
		return f, err == nil
	case float64:
		return x, true
	}
	return 0, false
}

// --- the repo service ----------------------------------------------------

// repoService generates repos while no task engine does: for active requests
// and for repo.auto tags whose content changed. It wakes on every state
// change (store.Changed) and, for INIT repos a dead hub left behind, on a timer.
type repoService struct {
	s      *Server
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// generated counts repos this hub made READY (tests).
	mu        sync.Mutex
	generated int
}

func (s *Server) startRepoService(ctx context.Context) error {
	if _, err := s.js.ObjectStore(ctx, bus.RepoStore); err != nil {
		return fmt.Errorf("hub: repo store: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	rs := &repoService{s: s, cancel: cancel}
	s.repoSvc = rs
	rs.wg.Add(1)
	go rs.run(runCtx)
	return nil
}

// Stop stops the service and waits for it.
func (rs *repoService) Stop() {
	if rs == nil {
		return
	}
	rs.cancel()
	rs.wg.Wait()
}

// repoKinds are the kinds of keys a generation pass reads.
var repoKinds = []string{"tag", "tagchg", "taginh", "repo", "repoqueue"}

// repoSettle lets a burst of changes settle into one pass: a pass reads
// every tag, so it must not run once per write of a busy hub.
const repoSettle = 20 * time.Millisecond

func (rs *repoService) run(ctx context.Context) {
	defer rs.wg.Done()
	stale := time.NewTicker(repoStaleAfter / 4)
	defer stale.Stop()
	var seen uint64
	force := true
	settle := repoSettle
	for {
		changed, _ := rs.s.store.Changed()
		var rev uint64
		_ = rs.s.store.Read(func(v state.View) error { rev = v.KindsRev(repoKinds...); return nil })
		if force || rev != seen {
			seen, force = rev, false
			start := time.Now()
			if err := rs.pass(ctx); err != nil && ctx.Err() == nil {
				rs.s.log.Warn("repos: generation pass", "err", err)
			}
			// A pass reads every tag: with many tags, space passes out so
			// that they take at most a fifth of the time.
			settle = max(repoSettle, 4*time.Since(start))
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
			select {
			case <-time.After(settle):
			case <-ctx.Done():
				return
			}
		case <-stale.C:
			force = true
		}
	}
}

// repoJob is one repo to generate.
type repoJob struct {
	tagID    int64
	override map[string]bool // request opts; nil for an automatic repo
	need     int64           // the repo must have create_event >= need
	reqID    int64
}

// pass finds what needs generating and generates it.
func (rs *repoService) pass(ctx context.Context) error {
	var jobs []repoJob
	var done []int64 // requests already satisfied by a READY repo
	var stale []int64
	now := nowTS()
	_ = rs.s.store.Read(func(v state.View) error {
		inProgress := map[int64][]*repoRecord{}
		for _, r := range decodeRepos(v, v.Group("repo", groupRepoInit)) {
			if repoStale(r, now) {
				stale = append(stale, r.ID)
				continue
			}
			inProgress[r.TagID] = append(inProgress[r.TagID], r)
		}
		for _, req := range activeRequests(v) {
			if findRepoForRequest(v, req) != nil {
				done = append(done, req.ID)
				continue
			}
			busy := false
			for _, r := range inProgress[req.TagID] {
				busy = busy || repoMatches(&r.Repo, req.Opts)
			}
			if busy || req.AtEvent != nil {
				continue
			}
			need := int64(0)
			if req.MinEvent != nil {
				need = *req.MinEvent
			}
			jobs = append(jobs, repoJob{tagID: req.TagID, override: req.Opts, need: need, reqID: req.ID})
		}
		// Only a tag that sets repo.auto, or inherits from one that does,
		// can have it in its build config.
		var auto []int64
		for _, k := range v.Group("tag", groupRepoAuto) {
			var t tagRecord
			if ok, err := v.GetJSON(k, &t); ok && err == nil {
				if _, has := t.Extra["repo.auto"]; has {
					auto = append(auto, t.ID)
				}
			}
		}
		candidates := map[int64]bool{}
		for len(auto) > 0 {
			id := auto[len(auto)-1]
			auto = auto[:len(auto)-1]
			if candidates[id] {
				continue
			}
			candidates[id] = true
			for _, d := range readDescendants(v, id) {
				auto = append(auto, d.TagID)
			}
		}
		ids := make([]int64, 0, len(candidates))
		for id := range candidates {
			ids = append(ids, id)
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		for _, id := range ids {
			t, ok := tagByID(v, id)
			if !ok {
				continue
			}
			if !bus.OptionTruthy(buildConfig(v, t).Extra["repo.auto"]) {
				continue
			}
			last := chainLastChange(v, t.ID)
			if latestRepoEvent(v, t.ID, now) >= last {
				continue
			}
			jobs = append(jobs, repoJob{tagID: t.ID, need: last})
		}
		return nil
	})
	var errs []error
	for _, id := range stale {
		errs = append(errs, rs.markProblem(ctx, id))
	}
	if len(done) > 0 {
		errs = append(errs, rs.closeRequests(ctx, done))
	}
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		errs = append(errs, rs.generate(ctx, j))
	}
	return errors.Join(errs...)
}

// repoStale is an INIT repo whose generator has had more than
// repoStaleAfter: another hub marks it PROBLEM.
func repoStale(r *repoRecord, now float64) bool {
	return r.State == bus.RepoInit && now-r.InitTS > repoStaleAfter.Seconds()
}

// latestRepoEvent is the create event of a tag's newest automatic (no
// custom options) repo that is READY or being generated.
func latestRepoEvent(v state.View, tagID int64, now float64) int64 {
	var latest int64
	for _, r := range readRepos(v, tagID) {
		if (r.State == bus.RepoInit && !repoStale(r, now) || r.State == bus.RepoReady) && len(r.CustomOpts) == 0 && r.CreateEvent > latest {
			latest = r.CreateEvent
		}
	}
	return latest
}

func findRepoForRequest(v state.View, req *bus.RepoRequest) *bus.Repo {
	for _, r := range readRepos(v, req.TagID) {
		rv := repoView(v, r)
		if requestSatisfied(req, rv) {
			return rv
		}
	}
	return nil
}

// satisfyRequests marks the active requests a READY repo satisfies (repo_done_hook).
func satisfyRequests(tx *state.Txn, r *bus.Repo) error {
	ts := nowTS()
	for _, req := range activeRequests(tx.View) {
		if !requestSatisfied(req, r) {
			continue
		}
		req.Active, req.RepoID = false, &r.ID
		req.UpdateTS, req.UpdateTime = ts, kojiTime(ts)
		if err := tx.Put(repoReqKey(req.ID), req); err != nil {
			return err
		}
	}
	return nil
}

func (rs *repoService) closeRequests(ctx context.Context, ids []int64) error {
	_, err := rs.s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
		var closed []int64
		for _, id := range ids {
			req, ok := readRequest(tx.View, id)
			if !ok || !req.Active {
				continue
			}
			r := findRepoForRequest(tx.View, req)
			if r == nil {
				continue
			}
			ts := nowTS()
			req.Active, req.RepoID, req.UpdateTS, req.UpdateTime = false, &r.ID, ts, kojiTime(ts)
			if err := tx.Put(repoReqKey(req.ID), req); err != nil {
				return nil, err
			}
			closed = append(closed, id)
		}
		if len(closed) > 0 {
			tx.Emit("repo.request.done", map[string]any{"type": "RepoRequestDone", "requests": len(closed)}, map[string]any{"requests": closed})
		}
		return nil, nil
	})
	return err
}

func (rs *repoService) markProblem(ctx context.Context, id int64) error {
	_, err := rs.s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
		r, ok := repoByID(tx.View, id)
		if !ok || r.State != bus.RepoInit || nowTS()-r.InitTS <= repoStaleAfter.Seconds() {
			return nil, nil
		}
		ts := nowTS()
		r.State, r.StateTS, r.StateTime = bus.RepoProblem, ts, kojiTime(ts)
		if err := tx.Put(repoKey(r.ID), r); err != nil {
			return nil, err
		}
		rv := repoView(tx.View, r)
		tx.Emit("repo.problem", map[string]any{"type": "RepoProblem", "tag": rv.TagName, "repo_id": r.ID},
			map[string]any{"repo": rv, "reason": "generation did not finish"})
		return nil, nil
	})
	return err
}

type repoInitResult struct {
	repo    *bus.Repo
	content *bus.RepoContent
}

// generate makes one repo: INIT with its content snapshot taken from the same
// view (one transaction: two hubs cannot both start it, the loser's retry
// sees the INIT repo), the content to the Object Store, then INIT -> READY
// as a compare-and-set transaction that expires the tag's older READY repos
// and closes the requests the repo satisfies.
func (rs *repoService) generate(ctx context.Context, j repoJob) error {
	res, err := rs.s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
		t, ok := tagByID(tx.View, j.tagID)
		if !ok {
			return nil, nil
		}
		reqOpts := j.override
		if reqOpts == nil {
			reqOpts = map[string]bool{}
		}
		for _, r := range readRepos(tx.View, t.ID) {
			if (r.State == bus.RepoInit || r.State == bus.RepoReady) && r.CreateEvent >= j.need && repoMatches(&r.Repo, reqOpts) &&
				(j.override != nil || len(r.CustomOpts) == 0) {
				return nil, nil // already made or being made
			}
		}
		if j.reqID != 0 {
			req, ok := readRequest(tx.View, j.reqID)
			if !ok || !req.Active {
				return nil, nil
			}
			req.Tries++
			ts := nowTS()
			req.UpdateTS, req.UpdateTime = ts, kojiTime(ts)
			if err := tx.Put(repoReqKey(req.ID), req); err != nil {
				return nil, err
			}
		}
		opts, custom := repoOptsFor(t, j.override)
		ts := nowTS()
		event := int64(tx.Applied())
		r := &repoRecord{InitTS: ts, Repo: bus.Repo{
			ID: tx.NextID("repo"), TagID: t.ID, TagName: t.Name, CreateEvent: event, CreateTS: ts, State: bus.RepoInit,
			Opts: opts, CustomOpts: custom, CreationTime: kojiTime(ts), CreationTS: ts, StateTime: kojiTime(ts), StateTS: ts,
		}}
		if err := tx.Put(repoKey(r.ID), r); err != nil {
			return nil, err
		}
		content := &bus.RepoContent{
			RepoID: r.ID, Tag: t.Name, TagID: t.ID, Event: event, Opts: opts,
			Builds: readTaggedBuilds(tx.View, t.ID, taggedQuery{inherit: true, latest: 1}),
			Groups: readTagGroups(tx.View, t.ID, true, false),
		}
		if content.Groups == nil {
			content.Groups = []bus.TagGroup{}
		}
		tx.Emit("repo.init", map[string]any{"type": "RepoInit", "tag": t.Name, "repo_id": r.ID, "task_id": nil},
			map[string]any{"tag": t.info(), "event": event, "repo_id": r.ID, "task_id": nil, "opts": opts})
		return &repoInitResult{repo: &r.Repo, content: content}, nil
	})
	if err != nil {
		return err
	}
	init, _ := res.Value.(*repoInitResult)
	if init == nil {
		return nil
	}
	data, err := json.MarshalIndent(init.content, "", " ")
	if err != nil {
		return fmt.Errorf("repos: encode repo %d: %w", init.repo.ID, err)
	}
	obj, err := rs.s.js.ObjectStore(ctx, bus.RepoStore)
	if err != nil {
		return fmt.Errorf("repos: %w", err)
	}
	name := repoContentPath(init.repo.TagName, init.repo.ID)
	if _, err := obj.PutBytes(ctx, name, data); err != nil {
		return fmt.Errorf("repos: store %s: %w", name, err)
	}
	_, err = rs.s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
		r, ok := repoByID(tx.View, init.repo.ID)
		if !ok || r.State != bus.RepoInit {
			return nil, nil // finished (or given up) elsewhere
		}
		ts := nowTS()
		// A newer repo of the same options finished first (another hub): this
		// one is done but expired at once (Koji's repoDone expire=True).
		expire := false
		for _, o := range readRepos(tx.View, r.TagID) {
			if o.ID != r.ID && o.State == bus.RepoReady && !o.Dist && o.CreateEvent > r.CreateEvent && sameJSON(o.CustomOpts, r.CustomOpts) {
				expire = true
			}
		}
		r.State, r.StateTS, r.StateTime = bus.RepoReady, ts, kojiTime(ts)
		if expire {
			r.State = bus.RepoExpired
		}
		if err := tx.Put(repoKey(r.ID), r); err != nil {
			return nil, err
		}
		var expired []int64
		for _, o := range readRepos(tx.View, r.TagID) {
			if !expire && o.ID != r.ID && o.State == bus.RepoReady && !o.Dist && o.CreateEvent < r.CreateEvent && sameJSON(o.CustomOpts, r.CustomOpts) {
				o.State, o.StateTS, o.StateTime = bus.RepoExpired, ts, kojiTime(ts)
				if err := tx.Put(repoKey(o.ID), o); err != nil {
					return nil, err
				}
				expired = append(expired, o.ID)
			}
		}
		rv := repoView(tx.View, r)
		if !expire {
			if err := satisfyRequests(tx, rv); err != nil {
				return nil, err
			}
		}
		tx.Emit("repo.done", map[string]any{"type": "RepoDone", "tag": rv.TagName, "repo_id": r.ID, "task_id": nil, "expire": expire},
			map[string]any{"repo": rv, "data": map[string]any{"content": name, "builds": len(init.content.Builds), "groups": len(init.content.Groups), "expired": expired},
				"expire": expire, "task_id": nil})
		return nil, nil
	})
	if err == nil {
		rs.mu.Lock()
		rs.generated++
		rs.mu.Unlock()
	}
	return err
}

func repoContentPath(tagName string, repoID int64) string {
	return tagName + "/" + strconv.FormatInt(repoID, 10) + "/repo.json"
}
