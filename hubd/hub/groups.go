package hub

import (
	"context"
	"encoding/json"
	"sort"
	"strconv"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Keys of comps groups (Koji's groups, group_config, group_package_listing,
// group_req_listing).
//
//	group.<id>                              bus.Package-like {id, name}
//	groupname.<name>                        group id
//	taggrp.<tag id>.<group id>              groupConfig: the group in the tag (maybe a block)
//	taggrppkg.<tag id>.<group id>.<pkg>     groupPkgRecord: a package of the group in the tag
//	taggrpreq.<tag id>.<group id>.<req id>  groupReqRecord: a group required by the group
//	seq.group                               the group id sequence

type groupInfo struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

type groupConfig struct {
	GroupID     int64   `json:"group_id"`
	TagID       int64   `json:"tag_id"`
	Blocked     bool    `json:"blocked"`
	Exported    bool    `json:"exported"`
	DisplayName string  `json:"display_name"`
	IsDefault   *bool   `json:"is_default"`
	UserVisible bool    `json:"uservisible"`
	Description *string `json:"description"`
	LangOnly    *string `json:"langonly"`
	BiarchOnly  bool    `json:"biarchonly"`
}

type groupPkgRecord = bus.TagGroupPackage

type groupReqRecord struct {
	GroupID   int64  `json:"group_id"`
	TagID     int64  `json:"tag_id"`
	ReqID     int64  `json:"req_id"`
	Blocked   bool   `json:"blocked"`
	Type      string `json:"type"`
	IsMetapkg bool   `json:"is_metapkg"`
}

func groupKey(id int64) string        { return "group." + strconv.FormatInt(id, 10) }
func groupNameKey(name string) string { return "groupname." + state.EscapeKey(name) }
func tagGrpPrefix(kind string, tagID int64) string {
	return kind + "." + strconv.FormatInt(tagID, 10) + "."
}
func tagGrpKey(tagID, gid int64) string {
	return tagGrpPrefix("taggrp", tagID) + strconv.FormatInt(gid, 10)
}
func tagGrpPkgKey(tagID, gid int64, pkg string) string {
	return tagGrpPrefix("taggrppkg", tagID) + strconv.FormatInt(gid, 10) + "." + state.EscapeKey(pkg)
}
func tagGrpReqKey(tagID, gid, req int64) string {
	return tagGrpPrefix("taggrpreq", tagID) + strconv.FormatInt(gid, 10) + "." + strconv.FormatInt(req, 10)
}

func lookupGroup(v state.View, ref registry.Ref) (*groupInfo, bool) {
	id := ref.ID
	if !ref.IsID() {
		if ok, _ := v.GetJSON(groupNameKey(ref.Name), &id); !ok {
			return nil, false
		}
	}
	var g groupInfo
	if ok, _ := v.GetJSON(groupKey(id), &g); !ok {
		return nil, false
	}
	return &g, true
}

// lookupGroupStrict is lookup_group(strict=True).
func lookupGroupStrict(v state.View, ref registry.Ref) (*groupInfo, error) {
	g, ok := lookupGroup(v, ref)
	if !ok {
		return nil, bus.GenericError("No such entry in table groups: %s", refValue(ref))
	}
	return g, nil
}

func deleteTagGroups(tx *state.Txn, tagID int64) {
	for _, kind := range []string{"taggrp", "taggrppkg", "taggrpreq"} {
		for _, k := range tx.Keys(kind, tagGrpPrefix(kind, tagID)) {
			tx.Delete(k)
		}
	}
}

// tagGroup is get_tag_groups' element before collapsing.
type tagGroup struct {
	cfg   groupConfig
	name  string
	pkgs  []groupPkgRecord
	seen  map[string]bool
	reqs  []groupReqRecord
	rseen map[int64]bool
}

// getTagGroups is Koji's get_tag_groups: the first entry of each group along
// the inheritance chain wins; packages and requirements of a blocked group
// are ignored; the first entry of each package (or requirement) wins.
func getTagGroups(v state.View, tagID int64, inherit, inclPkgs, inclReqs bool) ([]int64, map[int64]*tagGroup) {
	chain := []int64{tagID}
	if inherit {
		chain = tagChain(v, tagID)
	}
	groups := map[int64]*tagGroup{}
	var order []int64
	for _, tid := range chain {
		for _, k := range v.Keys("taggrp", tagGrpPrefix("taggrp", tid)) {
			var cfg groupConfig
			if ok, _ := v.GetJSON(k, &cfg); !ok {
				continue
			}
			if _, have := groups[cfg.GroupID]; have {
				continue
			}
			g := &tagGroup{cfg: cfg, seen: map[string]bool{}, rseen: map[int64]bool{}}
			if gi, ok := lookupGroup(v, registry.Ref{ID: cfg.GroupID}); ok {
				g.name = gi.Name
			}
			groups[cfg.GroupID] = g
			order = append(order, cfg.GroupID)
		}
	}
	if inclPkgs {
		for _, tid := range chain {
			for _, k := range v.Keys("taggrppkg", tagGrpPrefix("taggrppkg", tid)) {
				var p groupPkgRecord
				if ok, _ := v.GetJSON(k, &p); !ok {
					continue
				}
				g, have := groups[p.GroupID]
				if !have || g.cfg.Blocked || g.seen[p.Package] {
					continue
				}
				g.seen[p.Package] = true
				g.pkgs = append(g.pkgs, p)
			}
		}
	}
	if inclReqs {
		for _, tid := range chain {
			for _, k := range v.Keys("taggrpreq", tagGrpPrefix("taggrpreq", tid)) {
				var r groupReqRecord
				if ok, _ := v.GetJSON(k, &r); !ok {
					continue
				}
				g, have := groups[r.GroupID]
				if !have || g.cfg.Blocked || g.rseen[r.ReqID] {
					continue
				}
				if req, ok := groups[r.ReqID]; !ok || req.cfg.Blocked {
					continue
				}
				g.rseen[r.ReqID] = true
				g.reqs = append(g.reqs, r)
			}
		}
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i] < order[j] })
	return order, groups
}

// readTagGroups is Koji's readTagGroups (getTagGroups' answer) with
// packages and requirements included: blocked entries removed unless
// inclBlocked. The repo domain writes comps.xml from it.
func readTagGroups(v state.View, tagID int64, inherit, inclBlocked bool) []bus.TagGroup {
	return readTagGroupsOpts(v, tagID, inherit, true, true, inclBlocked)
}

func readTagGroupsOpts(v state.View, tagID int64, inherit, inclPkgs, inclReqs, inclBlocked bool) []bus.TagGroup {
	order, groups := getTagGroups(v, tagID, inherit, inclPkgs, inclReqs)
	out := []bus.TagGroup{}
	for _, gid := range order {
		g := groups[gid]
		if g.cfg.Blocked && !inclBlocked {
			continue
		}
		tg := bus.TagGroup{
			GroupID: gid, Name: g.name, TagID: g.cfg.TagID, Blocked: g.cfg.Blocked, Exported: g.cfg.Exported,
			DisplayName: g.cfg.DisplayName, IsDefault: g.cfg.IsDefault, UserVisible: g.cfg.UserVisible,
			Description: g.cfg.Description, LangOnly: g.cfg.LangOnly, BiarchOnly: g.cfg.BiarchOnly,
		}
		if inclPkgs {
			tg.PackageList = []bus.TagGroupPackage{}
			for _, p := range g.pkgs {
				if !p.Blocked || inclBlocked {
					tg.PackageList = append(tg.PackageList, p)
				}
			}
		}
		if inclReqs {
			tg.GroupList = []bus.TagGroupReq{}
			for _, r := range g.reqs {
				if r.Blocked && !inclBlocked {
					continue
				}
				name := ""
				if gi, ok := lookupGroup(v, registry.Ref{ID: r.ReqID}); ok {
					name = gi.Name
				}
				tg.GroupList = append(tg.GroupList, bus.TagGroupReq{GroupID: r.GroupID, TagID: r.TagID, ReqID: r.ReqID,
					Name: name, Blocked: r.Blocked, Type: r.Type, IsMetapkg: r.IsMetapkg})
			}
		}
		out = append(out, tg)
	}
	return out
}

func (s *Server) emitGroupEvent(tx *state.Txn, c *registry.Call, address, typ, action string, t *tagRecord, g *groupInfo, extra map[string]any) {
	props := map[string]any{"type": typ, "tag": t.Name, "group": g.Name, "action": action, "user": callerName(c)}
	body := map[string]any{"action": action, "tag": t.info(), "group": g, "user": callerName(c)}
	for k, v := range extra {
		body[k] = v
		if k == "package" || k == "req" {
			props[k] = v
		}
	}
	tx.Emit(address, props, body)
}

// groupOpts reads the **opts of groupListAdd (only Koji's config fields count).
func groupOpts(c *registry.Call) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for _, k := range []string{"exported", "display_name", "is_default", "uservisible", "description", "langonly", "biarchonly"} {
		if raw, ok := c.Extra()[k]; ok {
			out[k] = raw
		}
	}
	return out, nil
}

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerGroups) }

// grplistAdd is Koji's _grplist_add.
func (s *Server) grplistAdd(tx *state.Txn, c *registry.Call, tagRef, grpRef registry.Ref, block, force bool, opts map[string]json.RawMessage) (any, error) {
	t, err := getTagStrict(tx.View, tagRef)
	if err != nil {
		return nil, err
	}
	g, ok := lookupGroup(tx.View, grpRef)
	if !ok {
		if grpRef.IsID() {
			return nil, bus.GenericError("No such entry in table groups: %d", grpRef.ID)
		}
		if err := verifyNameInternal(grpRef.Name); err != nil {
			return nil, err
		}
		g = &groupInfo{ID: tx.NextID("group"), Name: grpRef.Name}
		if err := tx.Put(groupKey(g.ID), g); err != nil {
			return nil, err
		}
		if err := tx.Put(groupNameKey(g.Name), g.ID); err != nil {
			return nil, err
		}
	}
	if err := assertTagUnlocked(tx.View, c, t); err != nil {
		return nil, err
	}
	cfg := groupConfig{GroupID: g.ID, TagID: t.ID, Blocked: block, DisplayName: g.Name, Exported: true, UserVisible: true}
	decode := func(k string, dst any, want string) error {
		raw, ok := opts[k]
		if !ok {
			return nil
		}
		if isNullRaw(raw) {
			return nil
		}
		if b, isBool := dst.(*bool); isBool {
			v, err := kwBool(c, k, raw)
			*b = v
			return err
		}
		return decodeKw(c, k, raw, dst, want)
	}
	_, groups := getTagGroups(tx.View, t.ID, true, false, false)
	prev := groups[g.ID]
	if prev != nil {
		if prev.cfg.Blocked && !force {
			return nil, bus.GenericError("group %s is blocked in tag %s", g.Name, t.Name)
		}
		old := prev.cfg
		cfg.Exported, cfg.DisplayName, cfg.IsDefault, cfg.UserVisible = old.Exported, old.DisplayName, old.IsDefault, old.UserVisible
		cfg.Description, cfg.LangOnly, cfg.BiarchOnly = old.Description, old.LangOnly, old.BiarchOnly
	}
	if err := decode("exported", &cfg.Exported, "a boolean"); err != nil {
		return nil, err
	}
	if err := decode("display_name", &cfg.DisplayName, "a string"); err != nil {
		return nil, err
	}
	if raw, ok := opts["is_default"]; ok {
		cfg.IsDefault = nil
		if !isNullRaw(raw) {
			b, err := kwBool(c, "is_default", raw)
			if err != nil {
				return nil, err
			}
			cfg.IsDefault = &b
		}
	}
	if err := decode("uservisible", &cfg.UserVisible, "a boolean"); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		k   string
		dst **string
	}{{"description", &cfg.Description}, {"langonly", &cfg.LangOnly}} {
		if raw, ok := opts[f.k]; ok {
			*f.dst = nil
			if !isNullRaw(raw) {
				var sv string
				if err := decodeKw(c, f.k, raw, &sv, "a string"); err != nil {
					return nil, err
				}
				*f.dst = &sv
			}
		}
	}
	if err := decode("biarchonly", &cfg.BiarchOnly, "a boolean"); err != nil {
		return nil, err
	}
	action := "add"
	if block {
		action = "block"
	}
	if prev != nil {
		if sameJSON(prev.cfg, groupConfig{GroupID: cfg.GroupID, TagID: prev.cfg.TagID, Blocked: cfg.Blocked, Exported: cfg.Exported,
			DisplayName: cfg.DisplayName, IsDefault: cfg.IsDefault, UserVisible: cfg.UserVisible, Description: cfg.Description,
			LangOnly: cfg.LangOnly, BiarchOnly: cfg.BiarchOnly}) {
			return nil, nil // no point in adding it again with the same data
		}
		if !block {
			action = "update"
		}
	}
	if err := tx.Put(tagGrpKey(t.ID, g.ID), cfg); err != nil {
		return nil, err
	}
	if err := touchTag(tx, t.ID); err != nil {
		return nil, err
	}
	s.emitGroupEvent(tx, c, "group."+action, "GroupListChange", action, t, g, map[string]any{"config": cfg, "force": force})
	return nil, nil
}

// grpPkgAdd is Koji's _grp_pkg_add.
func (s *Server) grpPkgAdd(tx *state.Txn, c *registry.Call, tagRef, grpRef registry.Ref, pkg string, block, force bool) (any, error) {
	t, err := getTagIDStrict(tx.View, tagRef)
	if err != nil {
		return nil, err
	}
	g, err := lookupGroupStrict(tx.View, grpRef)
	if err != nil {
		return nil, err
	}
	if err := assertTagUnlocked(tx.View, c, t); err != nil {
		return nil, err
	}
	_, groups := getTagGroups(tx.View, t.ID, true, true, false)
	gc := groups[g.ID]
	if gc == nil {
		return nil, bus.GenericError("group %s not present in tag %s", g.Name, t.Name)
	}
	if gc.cfg.Blocked {
		return nil, bus.GenericError("group %s is blocked in tag %s", g.Name, t.Name)
	}
	rec := groupPkgRecord{GroupID: g.ID, TagID: t.ID, Package: pkg, Blocked: block, Type: "mandatory"}
	var prev *groupPkgRecord
	for i := range gc.pkgs {
		if gc.pkgs[i].Package == pkg {
			prev = &gc.pkgs[i]
		}
	}
	opts := c.Extra()
	if prev != nil {
		if prev.Blocked && !force {
			return nil, bus.GenericError("package %s blocked in group %s, tag %s", pkg, g.Name, t.Name)
		}
		rec.Type, rec.BaseArchOnly, rec.Requires = prev.Type, prev.BaseArchOnly, prev.Requires
	}
	changed := false
	if raw, ok := opts["type"]; ok {
		var typ string
		if err := decodeKw(c, "type", raw, &typ, "a string"); err != nil {
			return nil, err
		}
		changed = changed || typ != rec.Type
		rec.Type = typ
	}
	if raw, ok := opts["basearchonly"]; ok {
		var b *bool
		if !isNullRaw(raw) {
			v, err := kwBool(c, "basearchonly", raw)
			if err != nil {
				return nil, err
			}
			b = &v
		}
		changed = changed || !sameJSON(b, rec.BaseArchOnly)
		rec.BaseArchOnly = b
	}
	if raw, ok := opts["requires"]; ok {
		var r *string
		if !isNullRaw(raw) {
			var sv string
			if err := decodeKw(c, "requires", raw, &sv, "a string"); err != nil {
				return nil, err
			}
			r = &sv
		}
		changed = changed || !sameJSON(r, rec.Requires)
		rec.Requires = r
	}
	action := "add"
	if block {
		action = "block"
	}
	if prev != nil {
		if block {
			changed = true
		}
		if !changed && !force {
			return nil, nil
		}
		if !block {
			action = "update"
		}
	}
	if err := tx.Put(tagGrpPkgKey(t.ID, g.ID, pkg), rec); err != nil {
		return nil, err
	}
	if err := touchTag(tx, t.ID); err != nil {
		return nil, err
	}
	s.emitGroupEvent(tx, c, "group.package."+action, "GroupPackageListChange", action, t, g,
		map[string]any{"package": pkg, "entry": rec, "force": force})
	return nil, nil
}

// grpReqAdd is Koji's _grp_req_add.
func (s *Server) grpReqAdd(tx *state.Txn, c *registry.Call, tagRef, grpRef, reqRef registry.Ref, block, force bool) (any, error) {
	t, err := getTagIDStrict(tx.View, tagRef)
	if err != nil {
		return nil, err
	}
	g, err := lookupGroupStrict(tx.View, grpRef)
	if err != nil {
		return nil, err
	}
	req, err := lookupGroupStrict(tx.View, reqRef)
	if err != nil {
		return nil, err
	}
	if err := assertTagUnlocked(tx.View, c, t); err != nil {
		return nil, err
	}
	_, groups := getTagGroups(tx.View, t.ID, true, false, true)
	gc := groups[g.ID]
	if gc == nil {
		return nil, bus.GenericError("group %s not present in tag %s", g.Name, t.Name)
	}
	if gc.cfg.Blocked {
		return nil, bus.GenericError("group %s is blocked in tag %s", g.Name, t.Name)
	}
	rec := groupReqRecord{GroupID: g.ID, TagID: t.ID, ReqID: req.ID, Blocked: block, Type: "mandatory"}
	var prev *groupReqRecord
	for i := range gc.reqs {
		if gc.reqs[i].ReqID == req.ID {
			prev = &gc.reqs[i]
		}
	}
	if prev != nil {
		if prev.Blocked && !force {
			return nil, bus.GenericError("requirement on group %s blocked in group %s, tag %s", req.Name, g.Name, t.Name)
		}
		rec.Type, rec.IsMetapkg = prev.Type, prev.IsMetapkg
	}
	changed := false
	if raw, ok := c.Extra()["type"]; ok {
		var typ string
		if err := decodeKw(c, "type", raw, &typ, "a string"); err != nil {
			return nil, err
		}
		changed = changed || typ != rec.Type
		rec.Type = typ
	}
	if raw, ok := c.Extra()["is_metapkg"]; ok {
		b, err := kwBool(c, "is_metapkg", raw)
		if err != nil {
			return nil, err
		}
		changed = changed || b != rec.IsMetapkg
		rec.IsMetapkg = b
	}
	action := "add"
	if block {
		action = "block"
	}
	if prev != nil {
		if block {
			changed = true
		}
		if !changed {
			return nil, nil
		}
		if !block {
			action = "update"
		}
	}
	if err := tx.Put(tagGrpReqKey(t.ID, g.ID, req.ID), rec); err != nil {
		return nil, err
	}
	if err := touchTag(tx, t.ID); err != nil {
		return nil, err
	}
	s.emitGroupEvent(tx, c, "group.req."+action, "GroupReqListChange", action, t, g,
		map[string]any{"req": req.Name, "entry": rec, "force": force})
	return nil, nil
}

// removeGroupEntry deletes one stored entry of the tag (remove / unblock).
func (s *Server) removeGroupEntry(tx *state.Txn, c *registry.Call, t *tagRecord, g *groupInfo, key, address, typ, action string, extra map[string]any) (any, error) {
	if err := assertTagUnlocked(tx.View, c, t); err != nil {
		return nil, err
	}
	if _, _, ok := tx.Get(key); !ok {
		return nil, nil // nothing stored here: no change, no event
	}
	tx.Delete(key)
	if err := touchTag(tx, t.ID); err != nil {
		return nil, err
	}
	s.emitGroupEvent(tx, c, address, typ, action, t, g, extra)
	return nil, nil
}

func (s *Server) registerGroups() {
	tg := func(extra ...registry.Param) []registry.Param {
		return append([]registry.Param{registry.P("taginfo"), registry.P("grpinfo")}, extra...)
	}
	refs := func(c *registry.Call, names ...string) ([]registry.Ref, error) {
		var out []registry.Ref
		for _, n := range names {
			r, err := c.Ref(n)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	flags := func(c *registry.Call, names ...string) ([]bool, error) {
		var out []bool
		for _, n := range names {
			b, err := c.Bool(n)
			if err != nil {
				return nil, err
			}
			out = append(out, b)
		}
		return out, nil
	}
	groupAdd := func(forceBlock *bool) registry.Handler {
		return func(ctx context.Context, c *registry.Call) (any, error) {
			r, err := refs(c, "taginfo", "grpinfo")
			if err != nil {
				return nil, err
			}
			block, force := false, false
			if forceBlock != nil {
				block = *forceBlock
			} else {
				f, err := flags(c, "block", "force")
				if err != nil {
					return nil, err
				}
				block, force = f[0], f[1]
			}
			opts, err := groupOpts(c)
			if err != nil {
				return nil, err
			}
			return s.update(ctx, c, func(tx *state.Txn) (any, error) {
				return s.grplistAdd(tx, c, r[0], r[1], block, force, opts)
			})
		}
	}
	yes := true
	pkgAdd := func(forceBlock *bool) registry.Handler {
		return func(ctx context.Context, c *registry.Call) (any, error) {
			r, err := refs(c, "taginfo", "grpinfo")
			if err != nil {
				return nil, err
			}
			pkg, err := c.String("pkg_name")
			if err != nil {
				return nil, err
			}
			block, force := false, false
			if forceBlock != nil {
				block = *forceBlock
			} else {
				f, err := flags(c, "block", "force")
				if err != nil {
					return nil, err
				}
				block, force = f[0], f[1]
			}
			return s.update(ctx, c, func(tx *state.Txn) (any, error) {
				return s.grpPkgAdd(tx, c, r[0], r[1], pkg, block, force)
			})
		}
	}
	reqAdd := func(forceBlock *bool) registry.Handler {
		return func(ctx context.Context, c *registry.Call) (any, error) {
			r, err := refs(c, "taginfo", "grpinfo", "reqinfo")
			if err != nil {
				return nil, err
			}
			block, force := false, false
			if forceBlock != nil {
				block = *forceBlock
			} else {
				f, err := flags(c, "block", "force")
				if err != nil {
					return nil, err
				}
				block, force = f[0], f[1]
			}
			return s.update(ctx, c, func(tx *state.Txn) (any, error) {
				return s.grpReqAdd(tx, c, r[0], r[1], r[2], block, force)
			})
		}
	}
	s.reg.Register(
		registry.Method{Name: "groupListAdd", Doc: "Add to (or update) group list for tag", Perm: "tag", Write: true,
			Params: tg(registry.Opt("block", false), registry.Opt("force", false)), VarKw: "opts", Handler: groupAdd(nil)},
		registry.Method{Name: "groupListBlock", Doc: "Block the group in tag", Perm: "tag", Write: true,
			Params: tg(), Handler: groupAdd(&yes)},
		registry.Method{Name: "groupListRemove", Doc: "Remove group from the list for tag", Perm: "tag", Write: true,
			Params: tg(registry.Opt("force", false)),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				r, err := refs(c, "taginfo", "grpinfo")
				if err != nil {
					return nil, err
				}
				f, err := flags(c, "force")
				if err != nil {
					return nil, err
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) {
					t, err := getTagStrict(tx.View, r[0])
					if err != nil {
						return nil, err
					}
					g, err := lookupGroupStrict(tx.View, r[1])
					if err != nil {
						return nil, err
					}
					if _, _, ok := tx.Get(tagGrpKey(t.ID, g.ID)); !ok && !f[0] {
						return nil, bus.GenericError("No group: %s found for tag: %s", g.Name, t.Name)
					}
					return s.removeGroupEntry(tx, c, t, g, tagGrpKey(t.ID, g.ID), "group.remove", "GroupListChange", "remove", nil)
				})
			}},
		registry.Method{Name: "groupListUnblock", Doc: "Unblock the group in tag", Perm: "tag", Write: true,
			Params: tg(),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				r, err := refs(c, "taginfo", "grpinfo")
				if err != nil {
					return nil, err
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) {
					t, err := getTagIDStrict(tx.View, r[0])
					if err != nil {
						return nil, err
					}
					g, err := lookupGroupStrict(tx.View, r[1])
					if err != nil {
						return nil, err
					}
					var cfg groupConfig
					if ok, _ := tx.GetJSON(tagGrpKey(t.ID, g.ID), &cfg); !ok || !cfg.Blocked {
						return nil, bus.GenericError("group %s is NOT blocked in tag %s", g.Name, t.Name)
					}
					return s.removeGroupEntry(tx, c, t, g, tagGrpKey(t.ID, g.ID), "group.unblock", "GroupListChange", "unblock", nil)
				})
			}},
		registry.Method{Name: "groupPackageListAdd", Doc: "Add package to group for tag", Perm: "tag", Write: true,
			Params: tg(registry.P("pkg_name"), registry.Opt("block", false), registry.Opt("force", false)), VarKw: "opts", Handler: pkgAdd(nil)},
		registry.Method{Name: "groupPackageListBlock", Doc: "Block the package in group-tag", Perm: "tag", Write: true,
			Params: tg(registry.P("pkg_name")), Handler: pkgAdd(&yes)},
		registry.Method{Name: "groupPackageListRemove", Doc: "Remove package from the list for group-tag", Perm: "tag", Write: true,
			Params: tg(registry.P("pkg_name")),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.groupPkgRemove(ctx, c, false)
			}},
		registry.Method{Name: "groupPackageListUnblock", Doc: "Unblock the package in group-tag", Perm: "tag", Write: true,
			Params: tg(registry.P("pkg_name")),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.groupPkgRemove(ctx, c, true)
			}},
		registry.Method{Name: "groupReqListAdd", Doc: "Add group requirement to group for tag", Perm: "tag", Write: true,
			Params: tg(registry.P("reqinfo"), registry.Opt("block", false), registry.Opt("force", false)), VarKw: "opts", Handler: reqAdd(nil)},
		registry.Method{Name: "groupReqListBlock", Doc: "Block the group requirement in group-tag", Perm: "tag", Write: true,
			Params: tg(registry.P("reqinfo")), Handler: reqAdd(&yes)},
		registry.Method{Name: "groupReqListRemove", Doc: "Remove group requirement from the list for group-tag", Perm: "tag", Write: true,
			Params:  tg(registry.P("reqinfo"), registry.Opt("force", nil)),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return s.groupReqRemove(ctx, c, false) }},
		registry.Method{Name: "groupReqListUnblock", Doc: "Unblock the group requirement in group-tag", Perm: "tag", Write: true,
			Params:  tg(registry.P("reqinfo")),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return s.groupReqRemove(ctx, c, true) }},
		registry.Method{
			Name: "getTagGroups", Doc: "Return group data for the tag with blocked entries removed",
			Params: []registry.Param{registry.P("tag"), registry.Opt("event", nil), registry.Opt("inherit", true),
				registry.Opt("incl_pkgs", true), registry.Opt("incl_reqs", true), registry.Opt("incl_blocked", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("tag")
				if err != nil {
					return nil, err
				}
				if err := checkEvent(c); err != nil {
					return nil, err
				}
				f, err := flags(c, "inherit", "incl_pkgs", "incl_reqs", "incl_blocked")
				if err != nil {
					return nil, err
				}
				var out []bus.TagGroup
				err = s.store.Read(func(v state.View) error {
					t, err := getTagIDStrict(v, ref)
					if err != nil {
						return err
					}
					out = readTagGroupsOpts(v, t.ID, f[0], f[1], f[2], f[3])
					return nil
				})
				if err != nil {
					return nil, err
				}
				if !f[1] || !f[2] {
					// Koji leaves packagelist/grouplist out when not asked for.
					res := make([]map[string]any, 0, len(out))
					for _, g := range out {
						b, _ := json.Marshal(g)
						var m map[string]any
						_ = json.Unmarshal(b, &m)
						if !f[1] {
							delete(m, "packagelist")
						}
						if !f[2] {
							delete(m, "grouplist")
						}
						res = append(res, m)
					}
					return res, nil
				}
				return out, nil
			},
		},
	)
}

func (s *Server) groupPkgRemove(ctx context.Context, c *registry.Call, unblock bool) (any, error) {
	tagRef, err := c.Ref("taginfo")
	if err != nil {
		return nil, err
	}
	grpRef, err := c.Ref("grpinfo")
	if err != nil {
		return nil, err
	}
	pkg, err := c.String("pkg_name")
	if err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, err := getTagIDStrict(tx.View, tagRef)
		if err != nil {
			return nil, err
		}
		g, err := lookupGroupStrict(tx.View, grpRef)
		if err != nil {
			return nil, err
		}
		key := tagGrpPkgKey(t.ID, g.ID, pkg)
		action := "remove"
		if unblock {
			action = "unblock"
			var rec groupPkgRecord
			if ok, _ := tx.GetJSON(key, &rec); !ok || !rec.Blocked {
				return nil, bus.GenericError("package %s is NOT blocked in group %d, tag %d", pkg, g.ID, t.ID)
			}
		}
		return s.removeGroupEntry(tx, c, t, g, key, "group.package."+action, "GroupPackageListChange", action, map[string]any{"package": pkg})
	})
}

func (s *Server) groupReqRemove(ctx context.Context, c *registry.Call, unblock bool) (any, error) {
	tagRef, err := c.Ref("taginfo")
	if err != nil {
		return nil, err
	}
	grpRef, err := c.Ref("grpinfo")
	if err != nil {
		return nil, err
	}
	reqRef, err := c.Ref("reqinfo")
	if err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, err := getTagIDStrict(tx.View, tagRef)
		if err != nil {
			return nil, err
		}
		g, err := lookupGroupStrict(tx.View, grpRef)
		if err != nil {
			return nil, err
		}
		req, err := lookupGroupStrict(tx.View, reqRef)
		if err != nil {
			return nil, err
		}
		key := tagGrpReqKey(t.ID, g.ID, req.ID)
		action := "remove"
		if unblock {
			action = "unblock"
			var rec groupReqRecord
			if ok, _ := tx.GetJSON(key, &rec); !ok || !rec.Blocked {
				return nil, bus.GenericError("group req %d is NOT blocked in group %d, tag %d", req.ID, g.ID, t.ID)
			}
		}
		return s.removeGroupEntry(tx, c, t, g, key, "group.req."+action, "GroupReqListChange", action, map[string]any{"req": req.Name})
	})
}
