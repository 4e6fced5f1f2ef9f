package hub

import (
	"context"
	"strconv"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Keys of build targets.
//
//	target.<id>          targetRecord
//	targetname.<name>    target id
//	seq.target           the target id sequence

type targetRecord struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	BuildTag int64  `json:"build_tag"`
	DestTag  int64  `json:"dest_tag"`
}

func targetKey(id int64) string        { return "target." + strconv.FormatInt(id, 10) }
func targetNameKey(name string) string { return "targetname." + state.EscapeKey(name) }

// lookupTarget resolves a build target by id or name.
func lookupTarget(v state.View, ref registry.Ref) (*targetRecord, bool) {
	id := ref.ID
	if !ref.IsID() {
		if ok, _ := v.GetJSON(targetNameKey(ref.Name), &id); !ok {
			return nil, false
		}
	}
	var t targetRecord
	if ok, _ := v.GetJSON(targetKey(id), &t); !ok {
		return nil, false
	}
	return &t, true
}

// targetView is getBuildTarget's answer for a stored target.
func targetView(v state.View, t *targetRecord) bus.BuildTarget {
	out := bus.BuildTarget{ID: t.ID, Name: t.Name, BuildTag: t.BuildTag, DestTag: t.DestTag}
	if bt, ok := tagByID(v, t.BuildTag); ok {
		out.BuildTagName = bt.Name
	}
	if dt, ok := tagByID(v, t.DestTag); ok {
		out.DestTagName = dt.Name
	}
	return out
}

// getBuildTargetStrict is get_build_target(info, strict=True).
func getBuildTargetStrict(v state.View, ref registry.Ref) (bus.BuildTarget, error) {
	t, ok := lookupTarget(v, ref)
	if !ok {
		return bus.BuildTarget{}, bus.GenericError("No such build target: %s", refValue(ref))
	}
	return targetView(v, t), nil
}

// deleteTargetsOfTag removes the targets that build from or into a tag
// (deleteTag revokes them in Koji) and returns what it removed.
func deleteTargetsOfTag(tx *state.Txn, tagID int64) ([]bus.BuildTarget, error) {
	removed := []bus.BuildTarget{}
	for _, k := range tx.Keys("target", "target.") {
		var t targetRecord
		if ok, _ := tx.GetJSON(k, &t); !ok || (t.BuildTag != tagID && t.DestTag != tagID) {
			continue
		}
		removed = append(removed, targetView(tx.View, &t))
		tx.Delete(k)
		tx.Delete(targetNameKey(t.Name))
	}
	return removed, nil
}

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerTargets) }

func (s *Server) emitTargetEvent(tx *state.Txn, c *registry.Call, address, typ string, t bus.BuildTarget, body map[string]any) {
	if body == nil {
		body = map[string]any{}
	}
	body["target"] = t
	body["user"] = callerName(c)
	tx.Emit(address, map[string]any{"type": typ, "target": t.Name, "build_tag": t.BuildTagName, "dest_tag": t.DestTagName, "user": callerName(c)}, body)
}

// resolveTargetTags checks a target's build and destination tags.
func resolveTargetTags(v state.View, build, dest registry.Ref) (*tagRecord, *tagRecord, error) {
	bt, ok := lookupTag(v, build)
	if !ok {
		return nil, nil, bus.GenericError("build tag '%s' does not exist", refValue(build))
	}
	dt, ok := lookupTag(v, dest)
	if !ok {
		return nil, nil, bus.GenericError("destination tag '%s' does not exist", refValue(dest))
	}
	return bt, dt, nil
}

func (s *Server) registerTargets() {
	s.reg.Register(
		registry.Method{
			Name: "createBuildTarget", Doc: "Create a new build target", Perm: "target", Write: true,
			Params: []registry.Param{registry.P("name"), registry.P("build_tag"), registry.P("dest_tag")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				name, err := c.String("name")
				if err != nil {
					return nil, err
				}
				build, err := c.Ref("build_tag")
				if err != nil {
					return nil, err
				}
				dest, err := c.Ref("dest_tag")
				if err != nil {
					return nil, err
				}
				if err := verifyNameInternal(name); err != nil {
					return nil, err
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) {
					if _, exists := lookupTarget(tx.View, registry.Ref{Name: name}); exists {
						return nil, bus.GenericError("A build target with the name '%s' already exists", name)
					}
					bt, dt, err := resolveTargetTags(tx.View, build, dest)
					if err != nil {
						return nil, err
					}
					t := &targetRecord{ID: tx.NextID("target"), Name: name, BuildTag: bt.ID, DestTag: dt.ID}
					if err := tx.Put(targetKey(t.ID), t); err != nil {
						return nil, err
					}
					if err := tx.Put(targetNameKey(name), t.ID); err != nil {
						return nil, err
					}
					view := bus.BuildTarget{ID: t.ID, Name: name, BuildTag: bt.ID, BuildTagName: bt.Name, DestTag: dt.ID, DestTagName: dt.Name}
					s.emitTargetEvent(tx, c, "target.create", "TargetCreate", view, nil)
					return nil, nil
				})
			},
		},
		registry.Method{
			Name: "editBuildTarget", Doc: "Set the name, build_tag and dest_tag of an existing build target", Perm: "target", Write: true,
			Params: []registry.Param{registry.P("buildTargetInfo"), registry.P("name"), registry.P("build_tag"), registry.P("dest_tag")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("buildTargetInfo")
				if err != nil {
					return nil, err
				}
				name, err := c.String("name")
				if err != nil {
					return nil, err
				}
				build, err := c.Ref("build_tag")
				if err != nil {
					return nil, err
				}
				dest, err := c.Ref("dest_tag")
				if err != nil {
					return nil, err
				}
				if err := verifyNameInternal(name); err != nil {
					return nil, err
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) {
					t, ok := lookupTarget(tx.View, ref)
					if !ok {
						return nil, bus.GenericError("No such build target: %s", refValue(ref))
					}
					bt, dt, err := resolveTargetTags(tx.View, build, dest)
					if err != nil {
						return nil, err
					}
					old := targetView(tx.View, t)
					if name != t.Name {
						if other, taken := lookupTarget(tx.View, registry.Ref{Name: name}); taken {
							return nil, bus.GenericError("name \"%s\" is already taken by build target %d", name, other.ID)
						}
						tx.Delete(targetNameKey(t.Name))
						if err := tx.Put(targetNameKey(name), t.ID); err != nil {
							return nil, err
						}
					}
					next := targetRecord{ID: t.ID, Name: name, BuildTag: bt.ID, DestTag: dt.ID}
					if next == *t {
						return nil, nil
					}
					if err := tx.Put(targetKey(t.ID), next); err != nil {
						return nil, err
					}
					view := bus.BuildTarget{ID: t.ID, Name: name, BuildTag: bt.ID, BuildTagName: bt.Name, DestTag: dt.ID, DestTagName: dt.Name}
					s.emitTargetEvent(tx, c, "target.edit", "TargetEdit", view, map[string]any{"old": old})
					return nil, nil
				})
			},
		},
		registry.Method{
			Name: "deleteBuildTarget", Doc: "Delete the build target with the given name or id", Perm: "target", Write: true,
			Params: []registry.Param{registry.P("buildTargetInfo")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("buildTargetInfo")
				if err != nil {
					return nil, err
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) {
					t, ok := lookupTarget(tx.View, ref)
					if !ok {
						return nil, bus.GenericError("No such build target: %s", refValue(ref))
					}
					view := targetView(tx.View, t)
					tx.Delete(targetKey(t.ID))
					tx.Delete(targetNameKey(t.Name))
					s.emitTargetEvent(tx, c, "target.delete", "TargetDelete", view, nil)
					return nil, nil
				})
			},
		},
		registry.Method{
			Name: "getBuildTarget", Doc: "Return the build target with the given name or ID",
			Params: []registry.Param{registry.P("info"), registry.Opt("event", nil), registry.Opt("strict", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("info")
				if err != nil {
					return nil, err
				}
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				if err := checkEvent(c); err != nil {
					return nil, err
				}
				var out *bus.BuildTarget
				_ = s.store.Read(func(v state.View) error {
					if t, ok := lookupTarget(v, ref); ok {
						tv := targetView(v, t)
						out = &tv
					}
					return nil
				})
				if out == nil {
					if strict {
						return nil, bus.GenericError("No such build target: %s", refValue(ref))
					}
					return nil, nil
				}
				return out, nil
			},
		},
		registry.Method{
			Name: "getBuildTargets", Doc: "Return data on all the build targets",
			Params: []registry.Param{registry.Opt("info", nil), registry.Opt("event", nil), registry.Opt("buildTagID", nil),
				registry.Opt("destTagID", nil), registry.Opt("queryOpts", nil)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				var info *registry.Ref
				var err error
				if !c.IsNull("info") {
					// Koji: a falsy info (0, "") means no filter.
					if r, err := c.Ref("info"); err == nil {
						if !(r.IsID() && r.ID == 0) {
							info = &r
						}
					} else if c.Has("info") {
						var s string
						if c.Decode("info", &s) != nil || s != "" {
							return nil, bus.ParameterError("Invalid name or id value: %s", rawText(c, "info"))
						}
					}
				}
				if err := checkEvent(c); err != nil {
					return nil, err
				}
				buildTag, err := c.OptRef("buildTagID")
				if err != nil {
					return nil, err
				}
				destTag, err := c.OptRef("destTagID")
				if err != nil {
					return nil, err
				}
				q, err := readQueryOpts(c, "queryOpts")
				if err != nil {
					return nil, err
				}
				out := []bus.BuildTarget{}
				_ = s.store.Read(func(v state.View) error {
					tagID := func(r *registry.Ref) (int64, bool) {
						if r == nil {
							return 0, true
						}
						t, ok := lookupTag(v, *r)
						if !ok {
							return 0, false
						}
						return t.ID, true
					}
					bid, okB := tagID(buildTag)
					did, okD := tagID(destTag)
					if !okB || !okD {
						return nil // an unknown tag matches no target, as in Koji
					}
					for _, k := range v.Keys("target", "target.") {
						var t targetRecord
						if ok, _ := v.GetJSON(k, &t); !ok {
							continue
						}
						if info != nil && ((info.IsID() && t.ID != info.ID) || (!info.IsID() && t.Name != info.Name)) {
							continue
						}
						if buildTag != nil && t.BuildTag != bid {
							continue
						}
						if destTag != nil && t.DestTag != did {
							continue
						}
						out = append(out, targetView(v, &t))
					}
					return nil
				})
				sortByID(out, func(t bus.BuildTarget) int64 { return t.ID })
				return applyListOpts(out, q)
			},
		},
	)
}

func rawText(c *registry.Call, name string) string {
	var v any
	_ = c.Decode(name, &v)
	return bus.PropString(v)
}
