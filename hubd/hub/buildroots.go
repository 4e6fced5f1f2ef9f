package hub

import (
	"context"
	"strconv"
	"strings"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Keys of the buildroot part of the state bucket.
//
//	buildroot.<id>   buildrootRecord (a standard buildroot: host, repo, arch, task, state)
//	seq.buildroot
//
// Host, tag and repo names and states are filled in when read, as Koji's joins do.

type buildrootRecord struct {
	bus.Buildroot
}

func buildrootKey(id int64) string { return "buildroot." + strconv.FormatInt(id, 10) }

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerBuildroots) }

func buildrootByID(v state.View, id int64) (*bus.Buildroot, bool) {
	var r buildrootRecord
	if ok, err := v.GetJSON(buildrootKey(id), &r); !ok || err != nil {
		return nil, false
	}
	br := r.Buildroot
	if h, ok := lookupHost(v, registry.Ref{ID: br.HostID}); ok {
		br.HostName = h.Name
	}
	if rp, ok := repoByID(v, br.RepoID); ok {
		br.RepoState = rp.State
		br.TagID = rp.TagID
		br.RepoCreateEventID = rp.CreateEvent
		br.RepoCreateEventTime = rp.CreationTime
		if t, ok := tagByID(v, rp.TagID); ok {
			br.TagName = t.Name
		}
	}
	if _, rev, ok := v.Get(buildrootKey(id)); ok && br.CreateEventID == 0 {
		br.CreateEventID = int64(rev)
	}
	return &br, true
}

// parseBRState accepts a state number or name (koji.BR_STATES).
func parseBRState(c *registry.Call, name string) (int, error) {
	if n, err := c.Int(name); err == nil {
		if n < 0 || int(n) >= len(bus.BuildrootStateNames) {
			return 0, bus.GenericError("Invalid buildroot state: %d", n)
		}
		return int(n), nil
	}
	sv, err := c.String(name)
	if err != nil {
		return 0, bus.ParameterError("%s(): parameter '%s' must be a buildroot state", c.Method.Name, name)
	}
	for i, n := range bus.BuildrootStateNames {
		if strings.EqualFold(n, sv) {
			return i, nil
		}
	}
	return 0, bus.GenericError("Invalid buildroot state: %s", sv)
}

func (s *Server) registerBuildroots() {
	s.reg.Register(
		registry.Method{
			Name: "getBuildroot", Doc: "Return information about a buildroot",
			Params: []registry.Param{registry.P("buildrootID"), registry.Opt("strict", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				id, err := c.Int("buildrootID")
				if err != nil {
					return nil, err
				}
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				var out *bus.Buildroot
				_ = s.store.Read(func(v state.View) error {
					out, _ = buildrootByID(v, id)
					return nil
				})
				if out == nil && strict {
					return nil, bus.GenericError("No such buildroot: %d", id)
				}
				return out, nil
			},
		},
		registry.Method{
			Name: "listBuildroots", Doc: "Return a list of matching buildroots",
			Params: []registry.Param{registry.Opt("hostID", nil), registry.Opt("tagID", nil), registry.Opt("state", nil),
				registry.Opt("rpmID", nil), registry.Opt("archiveID", nil), registry.Opt("taskID", nil),
				registry.Opt("buildrootID", nil), registry.Opt("repoID", nil), registry.Opt("queryOpts", nil)},
			Handler: s.listBuildroots,
		},
		registry.Method{
			Name: "host.newBuildRoot", Doc: "Create a buildroot record (state INIT) for the calling host; returns its id. extra (kojibus) is kept with it, e.g. the buildroot's path",
			Params: []registry.Param{registry.P("repo"), registry.P("arch"), registry.Opt("task_id", nil), registry.Opt("ctype", nil), registry.Opt("extra", nil)},
			Access: registry.HostOnly, Write: true,
			Handler: s.hostNewBuildRoot,
		},
		registry.Method{
			Name: "host.setBuildRootState", Doc: "Set the state of one of the calling host's buildroots",
			Params: []registry.Param{registry.P("brootid"), registry.P("state"), registry.Opt("task_id", nil)},
			Access: registry.HostOnly, Write: true,
			Handler: s.hostSetBuildRootState,
		},
	)
}

func (s *Server) listBuildroots(ctx context.Context, c *registry.Call) (any, error) {
	ints := map[string]*int64{}
	for _, n := range []string{"hostID", "tagID", "rpmID", "archiveID", "taskID", "buildrootID", "repoID"} {
		v, err := c.OptInt(n)
		if err != nil {
			return nil, err
		}
		ints[n] = v
	}
	var states []int64
	if !c.IsNull("state") {
		if n, err := c.Int("state"); err == nil {
			states = []int64{n}
		} else if err := c.Decode("state", &states); err != nil {
			return nil, bus.ParameterError("listBuildroots(): parameter 'state' must be a state or a list of states")
		}
	}
	qo, err := readQueryOpts(c, "queryOpts")
	if err != nil {
		return nil, err
	}
	out := []bus.Buildroot{}
	if ints["rpmID"] != nil || ints["archiveID"] != nil {
		// kojibus records no buildroot contents yet: no buildroot used the rpm or archive
		return applyListOpts(out, qo)
	}
	_ = s.store.Read(func(v state.View) error {
		for _, k := range v.Keys("buildroot", "buildroot.") {
			id, err := strconv.ParseInt(strings.TrimPrefix(k, "buildroot."), 10, 64)
			if err != nil {
				continue
			}
			br, ok := buildrootByID(v, id)
			if !ok {
				continue
			}
			eq := func(n string, val int64) bool { return ints[n] == nil || *ints[n] == val }
			task := int64(0)
			if br.TaskID != nil {
				task = *br.TaskID
			}
			if !eq("hostID", br.HostID) || !eq("tagID", br.TagID) || !eq("taskID", task) || !eq("buildrootID", br.ID) || !eq("repoID", br.RepoID) {
				continue
			}
			if states != nil {
				found := false
				for _, st := range states {
					found = found || int(st) == br.State
				}
				if !found {
					continue
				}
			}
			out = append(out, *br)
		}
		return nil
	})
	sortByID(out, func(b bus.Buildroot) int64 { return b.ID })
	return applyListOpts(out, qo)
}

func (s *Server) hostNewBuildRoot(ctx context.Context, c *registry.Call) (any, error) {
	repoID, err := c.Int("repo")
	if err != nil {
		return nil, err
	}
	archRaw, err := c.String("arch")
	if err != nil {
		return nil, err
	}
	arch, err := parseHostArches([]string{archRaw})
	if err != nil {
		return nil, err
	}
	taskID, err := c.OptInt("task_id")
	if err != nil {
		return nil, err
	}
	if ct, err := c.OptString("ctype"); err != nil {
		return nil, err
	} else if ct != nil && *ct != "chroot" {
		return nil, bus.GenericError("Invalid container type: %s", *ct)
	}
	var extra map[string]any
	if !c.IsNull("extra") {
		if extra, err = c.Map("extra"); err != nil {
			return nil, err
		}
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		h, ok := lookupHost(tx.View, registry.Ref{ID: c.Caller.HostID})
		if !ok {
			return nil, bus.GenericError("Invalid hostInfo: %d", c.Caller.HostID)
		}
		rp, ok := repoByID(tx.View, repoID)
		if !ok {
			return nil, bus.GenericError("No such repo: %d", repoID)
		}
		ts := nowTS()
		br := buildrootRecord{bus.Buildroot{
			ID: tx.NextID("buildroot"), BRType: bus.BuildrootTypeStandard, ContainerArch: arch, Arch: arch,
			ContainerType: "chroot", State: bus.BuildrootInit, TaskID: taskID, HostID: h.ID, RepoID: rp.ID,
			TagID: rp.TagID, CreateEventID: int64(tx.Applied()), CreateEventTime: kojiTime(ts), CreateTS: ts,
			Extra: extra,
		}}
		if err := tx.Put(buildrootKey(br.ID), br); err != nil {
			return nil, err
		}
		view := br.Buildroot
		view.HostName = h.Name
		tx.Emit("buildroot.init", map[string]any{"type": "BuildrootInit", "buildroot_id": br.ID, "host": h.Name, "repo_id": rp.ID, "arch": arch},
			map[string]any{"buildroot": view})
		return br.ID, nil
	})
}

func (s *Server) hostSetBuildRootState(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("brootid")
	if err != nil {
		return nil, err
	}
	st, err := parseBRState(c, "state")
	if err != nil {
		return nil, err
	}
	taskID, err := c.OptInt("task_id")
	if err != nil {
		return nil, err
	}
	if st == bus.BuildrootInit {
		return nil, bus.GenericError("Cannot change buildroot state to INIT")
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		var rec buildrootRecord
		if ok, _ := tx.GetJSON(buildrootKey(id), &rec); !ok {
			return nil, bus.GenericError("No such buildroot: %d", id)
		}
		if rec.HostID != c.Caller.HostID {
			return nil, bus.ActionNotAllowed("Host %d not owner of buildroot %d", c.Caller.HostID, id)
		}
		if taskID != nil && (rec.TaskID == nil || *rec.TaskID != *taskID) {
			return nil, bus.ActionNotAllowed("Task %d does not have lock on buildroot %d", *taskID, id)
		}
		if rec.State == bus.BuildrootExpired {
			if st == bus.BuildrootExpired {
				return nil, nil
			}
			return nil, bus.GenericError("buildroot %d is EXPIRED", id)
		}
		if rec.State == st {
			return nil, nil
		}
		old := rec.State
		rec.State = st
		if st == bus.BuildrootExpired {
			ts := nowTS()
			ev := int64(tx.Applied())
			rec.RetireTS, rec.RetireEventTime, rec.RetireEventID = &ts, ptr(kojiTime(ts)), &ev
		}
		if err := tx.Put(buildrootKey(id), rec); err != nil {
			return nil, err
		}
		tx.Emit("buildroot.state", map[string]any{"type": "BuildrootStateChange", "buildroot_id": id,
			"old": stateName(bus.BuildrootStateNames, old), "new": stateName(bus.BuildrootStateNames, st)},
			map[string]any{"buildroot": rec.Buildroot, "old": old, "new": st})
		return nil, nil
	})
	return nil, err
}
