package hub

import (
	"context"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/policy"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Keys of packages and tag package lists.
//
//	package.<id>              bus.Package
//	packagename.<name>        package id
//	tagpkg.<tag id>.<pkg id>  tagPackageRecord: the package's entry in the tag's list
//	seq.package               the package id sequence

type tagPackageRecord struct {
	TagID       int64   `json:"tag_id"`
	PackageID   int64   `json:"package_id"`
	Blocked     bool    `json:"blocked"`
	ExtraArches *string `json:"extra_arches"`
	OwnerID     int64   `json:"owner_id"`
}

func packageKey(id int64) string        { return "package." + strconv.FormatInt(id, 10) }
func packageNameKey(name string) string { return "packagename." + state.EscapeKey(name) }
func tagPkgKey(tagID, pkgID int64) string {
	return "tagpkg." + strconv.FormatInt(tagID, 10) + "." + strconv.FormatInt(pkgID, 10)
}

// lookupPackage resolves a package by id or name.
func lookupPackage(v state.View, ref registry.Ref) (*bus.Package, bool) {
	id := ref.ID
	if !ref.IsID() {
		if ok, _ := v.GetJSON(packageNameKey(ref.Name), &id); !ok {
			return nil, false
		}
	}
	var p bus.Package
	if ok, _ := v.GetJSON(packageKey(id), &p); !ok {
		return nil, false
	}
	return &p, true
}

// ensurePackage returns the package of that name, creating it in tx when
// new (lookup_package(name, create=True)); builds use it on import too.
func ensurePackage(tx *state.Txn, name string) (*bus.Package, error) {
	if p, ok := lookupPackage(tx.View, registry.Ref{Name: name}); ok {
		return p, nil
	}
	if err := verifyNameInternal(name); err != nil {
		return nil, err
	}
	p := &bus.Package{ID: tx.NextID("package"), Name: name}
	if err := tx.Put(packageKey(p.ID), p); err != nil {
		return nil, err
	}
	return p, tx.Put(packageNameKey(name), p.ID)
}

// tagPackagesOf returns stored entries: of one tag (tagID != 0), of one
// package (pkgID != 0), or both.
func tagPackagesOf(v state.View, tagID, pkgID int64) []*tagPackageRecord {
	if tagID != 0 && pkgID != 0 {
		var r tagPackageRecord
		if ok, _ := v.GetJSON(tagPkgKey(tagID, pkgID), &r); ok {
			return []*tagPackageRecord{&r}
		}
		return nil
	}
	prefix := "tagpkg."
	if tagID != 0 {
		prefix += strconv.FormatInt(tagID, 10) + "."
	}
	var out []*tagPackageRecord
	for _, k := range v.Keys("tagpkg", prefix) {
		var r tagPackageRecord
		if ok, _ := v.GetJSON(k, &r); !ok || (pkgID != 0 && r.PackageID != pkgID) {
			continue
		}
		out = append(out, &r)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].TagID != out[j].TagID {
			return out[i].TagID < out[j].TagID
		}
		return out[i].PackageID < out[j].PackageID
	})
	return out
}

func deleteTagPackages(tx *state.Txn, tagID int64) {
	for _, r := range tagPackagesOf(tx.View, tagID, 0) {
		tx.Delete(tagPkgKey(r.TagID, r.PackageID))
	}
}

// pkgListEntry renders a stored entry as listPackages answers.
func pkgListEntry(v state.View, r *tagPackageRecord, withOwners bool) bus.TagPackage {
	e := bus.TagPackage{PackageID: r.PackageID, TagID: r.TagID, ExtraArches: r.ExtraArches, Blocked: r.Blocked}
	if p, ok := lookupPackage(v, registry.Ref{ID: r.PackageID}); ok {
		e.PackageName = p.Name
	}
	if t, ok := tagByID(v, r.TagID); ok {
		e.TagName = t.Name
	}
	if withOwners {
		id := r.OwnerID
		e.OwnerID = &id
		name := ""
		if u, ok := lookupUser(v, registry.Ref{ID: r.OwnerID}); ok {
			name = u.Name
		}
		e.OwnerName = &name
	}
	return e
}

// pkgListQuery is readPackageList's arguments.
type pkgListQuery struct {
	tagID, userID, pkgID int64 // 0 = no filter
	inherit, withDups    bool
	withOwners           bool
	withBlocked          bool
}

// readPackageList is Koji's readPackageList: entries in first-wins order
// (the tag's own, then each inherited tag's, filtered by the cumulative
// pkg_filter of its link); with withDups every entry is kept.
func readPackageList(v state.View, q pkgListQuery) []bus.TagPackage {
	var out []bus.TagPackage
	seen := map[int64]bool{}
	add := func(r *tagPackageRecord, filters []*regexp.Regexp) {
		if q.userID != 0 && r.OwnerID != q.userID {
			return
		}
		if !q.withDups && seen[r.PackageID] {
			return
		}
		e := pkgListEntry(v, r, q.withOwners)
		for _, re := range filters {
			if !re.MatchString(e.PackageName) {
				return
			}
		}
		seen[r.PackageID] = true
		// kojibus: a blocked entry still hides what it blocks when blocked
		// entries are left out (Koji's SQL filter would let the parent's show).
		if !q.withBlocked && r.Blocked {
			return
		}
		out = append(out, e)
	}
	for _, r := range tagPackagesOf(v, q.tagID, q.pkgID) {
		add(r, nil)
	}
	if q.tagID == 0 || !q.inherit {
		return out
	}
	for _, link := range readFullInheritance(v, q.tagID, false) {
		var filters []*regexp.Regexp
		for _, pat := range link.Filter {
			if re, err := regexp.Compile("^(?:" + pat + ")"); err == nil {
				filters = append(filters, re)
			}
		}
		for _, r := range tagPackagesOf(v, link.ID, q.pkgID) {
			add(r, filters)
		}
	}
	return out
}

// inheritedPackage is the effective entry of a package in a tag, following inheritance.
func inheritedPackage(v state.View, tagID, pkgID int64) *tagPackageRecord {
	for _, e := range readPackageList(v, pkgListQuery{tagID: tagID, pkgID: pkgID, inherit: true, withOwners: true, withBlocked: true}) {
		r := &tagPackageRecord{TagID: e.TagID, PackageID: e.PackageID, Blocked: e.Blocked, ExtraArches: e.ExtraArches}
		if e.OwnerID != nil {
			r.OwnerID = *e.OwnerID
		}
		return r
	}
	return nil
}

// checkPackageListPolicy is the package_list policy (Koji's default:
// admin or tag), then the tag's lock. force lets an admin through a denial,
// as assert_policy does.
func (s *Server) checkPackageListPolicy(v state.View, c *registry.Call, t *tagRecord, action, pkg string, force bool) error {
	if !c.LoggedIn() {
		return bus.ActionNotAllowed("you must be logged in for this operation")
	}
	data := policy.Data{"tag": t.ID, "action": action, "package": pkg, "force": force, "user_id": c.Caller.UserID}
	if err := s.assertPolicy(v, "package_list", data, c, force); err != nil {
		return err
	}
	return assertTagUnlocked(v, c, t)
}

func (s *Server) emitPackageEvent(tx *state.Txn, c *registry.Call, action string, t *tagRecord, p *bus.Package, extra map[string]any) {
	var user any
	if u, ok := lookupUser(tx.View, registry.Ref{ID: callerID(c)}); ok {
		user = u.User
	}
	body := map[string]any{"action": action, "tag": t.info(), "package": p, "user": user}
	for k, v := range extra {
		body[k] = v
	}
	tx.Emit("package."+action, map[string]any{
		"type": "PackageListChange", "tag": t.Name, "package": p.Name, "action": action, "user": callerName(c),
	}, body)
}

// pkgAddArgs are pkglist_add's arguments.
type pkgAddArgs struct {
	tag         registry.Ref
	pkg         registry.Ref
	owner       *registry.Ref
	block       *bool
	extraArches *string
	force       bool
	update      bool
	// forceNone: force was given as None (koji's add-pkg without --force),
	// which protonmsg's body carries as null
	forceNone bool
}

// pkglistAdd is Koji's _direct_pkglist_add with the policy check, inside a transaction.
func (s *Server) pkglistAdd(tx *state.Txn, c *registry.Call, a pkgAddArgs) (any, error) {
	t, err := getTagStrict(tx.View, a.tag)
	if err != nil {
		return nil, err
	}
	pkg, pkgOK := lookupPackage(tx.View, a.pkg)
	if !pkgOK && a.pkg.IsID() {
		return nil, bus.GenericError("No such package: %d", a.pkg.ID)
	}
	var owner *int64
	if a.owner != nil {
		u, ok := lookupUser(tx.View, *a.owner)
		if !ok {
			return nil, bus.GenericError("No such user: %s", a.owner.String())
		}
		owner = &u.ID
	}
	action := "add"
	if a.update {
		action = "update"
	} else if a.block != nil && *a.block {
		action = "block"
	}
	if err := s.checkPackageListPolicy(tx.View, c, t, action, refName(a.pkg), a.force); err != nil {
		return nil, err
	}
	if !pkgOK {
		if pkg, err = ensurePackage(tx, a.pkg.Name); err != nil {
			return nil, err
		}
	}
	extraArches := a.extraArches
	if extraArches != nil {
		norm, err := parseArches([]byte(strconv.Quote(*extraArches)), true)
		if err != nil {
			return nil, err
		}
		extraArches = &norm
	}
	prev := (*tagPackageRecord)(nil)
	if pkgOK {
		prev = inheritedPackage(tx.View, t.ID, pkg.ID)
	}
	block := a.block != nil && *a.block
	changed, changedOwner := false, false
	if prev == nil {
		if a.update && !a.force {
			return nil, bus.GenericError("cannot update: tag %s has no data for package %s", t.Name, pkg.Name)
		}
	} else {
		if owner == nil {
			o := prev.OwnerID
			owner = &o
		}
		changedOwner = prev.OwnerID != *owner
		if a.block == nil {
			block = prev.Blocked
		}
		if extraArches == nil {
			extraArches = prev.ExtraArches
		}
		changed = prev.Blocked != block || !sameJSON(prev.ExtraArches, extraArches)
		if !changed && !changedOwner && !a.force {
			return nil, nil // no point in adding it again with the same data
		}
		if prev.Blocked && !block && !a.force {
			return nil, bus.GenericError("package %s is blocked in tag %s", pkg.Name, t.Name)
		}
	}
	if owner == nil {
		if !a.force {
			return nil, bus.GenericError("owner not specified")
		}
		o := callerID(c)
		owner = &o
	}
	rec := tagPackageRecord{TagID: t.ID, PackageID: pkg.ID, Blocked: block, ExtraArches: extraArches, OwnerID: *owner}
	if err := tx.Put(tagPkgKey(t.ID, pkg.ID), rec); err != nil {
		return nil, err
	}
	if err := touchTag(tx, t.ID); err != nil {
		return nil, err
	}
	s.emitPackageEvent(tx, c, action, t, pkg, map[string]any{
		"owner": *owner, "block": block, "extra_arches": extraArches, "force": forceBody(a), "update": a.update,
	})
	return nil, nil
}

// forceBody is the force of a package.* body: the argument as given.
func forceBody(a pkgAddArgs) any {
	if a.forceNone {
		return nil
	}
	return a.force
}

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerPackages) }

// readPkgAddArgs reads the common taginfo/pkginfo/force arguments.
func readPkgRefs(c *registry.Call) (registry.Ref, registry.Ref, bool, error) {
	tag, err := c.Ref("taginfo")
	if err != nil {
		return tag, registry.Ref{}, false, err
	}
	pkg, err := c.Ref("pkginfo")
	if err != nil {
		return tag, pkg, false, err
	}
	force, err := c.Bool("force")
	return tag, pkg, force, err
}

func (s *Server) registerPackages() {
	pkgParams := func(extra ...registry.Param) []registry.Param {
		ps := []registry.Param{registry.P("taginfo"), registry.P("pkginfo")}
		ps = append(ps, extra...)
		return ps
	}
	s.reg.Register(
		registry.Method{
			Name: "packageListAdd", Doc: "Add to (or update) package list for tag", Access: registry.LoggedIn, Write: true,
			Params: pkgParams(registry.Opt("owner", nil), registry.Opt("block", nil), registry.Opt("extra_arches", nil),
				registry.Opt("force", false), registry.Opt("update", false)),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				tag, pkg, force, err := readPkgRefs(c)
				if err != nil {
					return nil, err
				}
				a := pkgAddArgs{tag: tag, pkg: pkg, force: force}
				if raw, ok := argRaw(c, "force"); ok && isNullRaw(raw) {
					a.forceNone = true
				}
				if a.owner, err = c.OptRef("owner"); err != nil {
					return nil, err
				}
				if a.block, err = c.OptBool("block"); err != nil {
					return nil, err
				}
				if a.extraArches, err = optArchesArg(c, "extra_arches"); err != nil {
					return nil, err
				}
				if a.update, err = c.Bool("update"); err != nil {
					return nil, err
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) { return s.pkglistAdd(tx, c, a) })
			},
		},
		registry.Method{
			Name: "packageListSetOwner", Doc: "Set the owner for package in tag", Access: registry.LoggedIn, Write: true,
			Params: pkgParams(registry.P("owner"), registry.Opt("force", false)),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				tag, pkg, force, err := readPkgRefs(c)
				if err != nil {
					return nil, err
				}
				owner, err := c.Ref("owner")
				if err != nil {
					return nil, err
				}
				a := pkgAddArgs{tag: tag, pkg: pkg, owner: &owner, force: force, update: true}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) { return s.pkglistAdd(tx, c, a) })
			},
		},
		registry.Method{
			Name: "packageListSetArches", Doc: "Set extra_arches for package in tag", Access: registry.LoggedIn, Write: true,
			Params: pkgParams(registry.P("arches"), registry.Opt("force", false)),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				tag, pkg, force, err := readPkgRefs(c)
				if err != nil {
					return nil, err
				}
				arches, err := optArchesArg(c, "arches")
				if err != nil {
					return nil, err
				}
				if arches == nil {
					empty := ""
					arches = &empty
				}
				a := pkgAddArgs{tag: tag, pkg: pkg, extraArches: arches, force: force, update: true}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) { return s.pkglistAdd(tx, c, a) })
			},
		},
		registry.Method{
			Name: "packageListBlock", Doc: "Block the package in tag", Access: registry.LoggedIn, Write: true,
			Params: pkgParams(registry.Opt("force", false)),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				tag, pkg, force, err := readPkgRefs(c)
				if err != nil {
					return nil, err
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) {
					t, err := getTagStrict(tx.View, tag)
					if err != nil {
						return nil, err
					}
					p, ok := lookupPackage(tx.View, pkg)
					if !ok {
						return nil, bus.GenericError("No such entry in table package: %s", refValue(pkg))
					}
					if inheritedPackage(tx.View, t.ID, p.ID) == nil {
						return nil, bus.GenericError("Package %s is not in tag listing for %s", p.Name, t.Name)
					}
					yes := true
					return s.pkglistAdd(tx, c, pkgAddArgs{tag: tag, pkg: pkg, block: &yes, force: force})
				})
			},
		},
		registry.Method{
			Name: "packageListUnblock", Doc: "Unblock the package in tag", Access: registry.LoggedIn, Write: true,
			Params: pkgParams(registry.Opt("force", false)),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				tag, pkg, force, err := readPkgRefs(c)
				if err != nil {
					return nil, err
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) {
					t, err := getTagStrict(tx.View, tag)
					if err != nil {
						return nil, err
					}
					p, ok := lookupPackage(tx.View, pkg)
					if !ok {
						return nil, bus.GenericError("No such entry in table package: %s", refValue(pkg))
					}
					if err := s.checkPackageListPolicy(tx.View, c, t, "unblock", p.Name, force); err != nil {
						return nil, err
					}
					prev := inheritedPackage(tx.View, t.ID, p.ID)
					if prev == nil {
						return nil, bus.GenericError("no data (blocked or otherwise) for package %s in tag %s", p.Name, t.Name)
					}
					if !prev.Blocked {
						return nil, bus.GenericError("package %s NOT blocked in tag %s", p.Name, t.Name)
					}
					unblocked := tagPackageRecord{TagID: t.ID, PackageID: p.ID, ExtraArches: prev.ExtraArches, OwnerID: prev.OwnerID}
					if prev.TagID != t.ID {
						if err := tx.Put(tagPkgKey(t.ID, p.ID), unblocked); err != nil {
							return nil, err
						}
					} else {
						// Remove the blocking entry; if what is inherited then is
						// missing or blocked too, add an unblocked entry instead.
						next := (*tagPackageRecord)(nil)
						for _, e := range readPackageList(tx.View, pkgListQuery{tagID: t.ID, pkgID: p.ID, inherit: true, withDups: true, withOwners: true, withBlocked: true}) {
							if e.TagID != t.ID {
								next = &tagPackageRecord{Blocked: e.Blocked}
								break
							}
						}
						if next == nil || next.Blocked {
							if err := tx.Put(tagPkgKey(t.ID, p.ID), unblocked); err != nil {
								return nil, err
							}
						} else {
							tx.Delete(tagPkgKey(t.ID, p.ID))
						}
					}
					if err := touchTag(tx, t.ID); err != nil {
						return nil, err
					}
					s.emitPackageEvent(tx, c, "unblock", t, p, nil)
					return nil, nil
				})
			},
		},
		registry.Method{
			Name: "packageListRemove", Doc: "Remove a package from a tag's package list", Access: registry.LoggedIn, Write: true,
			Params: pkgParams(registry.Opt("force", false)),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				tag, pkg, force, err := readPkgRefs(c)
				if err != nil {
					return nil, err
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) {
					t, err := getTagStrict(tx.View, tag)
					if err != nil {
						return nil, err
					}
					p, ok := lookupPackage(tx.View, pkg)
					if !ok {
						return nil, bus.GenericError("No such entry in table package: %s", refValue(pkg))
					}
					if err := s.checkPackageListPolicy(tx.View, c, t, "remove", p.Name, force); err != nil {
						return nil, err
					}
					if _, _, present := tx.Get(tagPkgKey(t.ID, p.ID)); !present {
						return nil, nil // nothing to remove: no change, no event
					}
					tx.Delete(tagPkgKey(t.ID, p.ID))
					if err := touchTag(tx, t.ID); err != nil {
						return nil, err
					}
					s.emitPackageEvent(tx, c, "remove", t, p, nil)
					return nil, nil
				})
			},
		},
		registry.Method{
			Name: "getPackage", Doc: "Get the id and name of a package",
			Params: []registry.Param{registry.P("info"), registry.Opt("strict", false), registry.Opt("create", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("info")
				if err != nil {
					return nil, bus.ParameterError("Invalid name or id value: %s", rawText(c, "info"))
				}
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				create, err := c.Bool("create")
				if err != nil {
					return nil, err
				}
				var out *bus.Package
				_ = s.store.Read(func(v state.View) error {
					out, _ = lookupPackage(v, ref)
					return nil
				})
				if out != nil {
					return out, nil
				}
				switch {
				case strict:
					return nil, bus.GenericError("No such entry in table package: %s", refValue(ref))
				case !create:
					return nil, nil
				case ref.IsID():
					return nil, bus.GenericError("Name must be a string")
				}
				// kojibus: creating a package is a write; it takes tag or admin.
				if err := s.assertPerm(c, "tag"); err != nil {
					return nil, err
				}
				res, err := s.update(ctx, c, func(tx *state.Txn) (any, error) {
					p, err := ensurePackage(tx, ref.Name)
					if err != nil {
						return nil, err
					}
					tx.Emit("package.create", map[string]any{"type": "PackageCreate", "package": p.Name, "user": callerName(c)},
						map[string]any{"package": p, "user": callerName(c)})
					return p, nil
				})
				return res, err
			},
		},
		registry.Method{
			Name: "getPackageID", Doc: "Get package ID by name",
			Params: []registry.Param{registry.P("name"), registry.Opt("strict", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				name, err := c.String("name")
				if err != nil {
					return nil, err
				}
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				var out *int64
				_ = s.store.Read(func(v state.View) error {
					if p, ok := lookupPackage(v, registry.Ref{Name: name}); ok {
						out = &p.ID
					}
					return nil
				})
				if out == nil && strict {
					return nil, bus.GenericError("No such package name: %s", name)
				}
				return out, nil
			},
		},
		registry.Method{
			Name: "listPackages", Doc: "Returns a list of packages in Koji",
			Params: []registry.Param{registry.Opt("tagID", nil), registry.Opt("userID", nil), registry.Opt("pkgID", nil),
				registry.Opt("prefix", nil), registry.Opt("inherited", false), registry.Opt("with_dups", false),
				registry.Opt("event", nil), registry.Opt("queryOpts", nil), registry.Opt("with_owners", true), registry.Opt("with_blocked", true)},
			Handler: s.listPackages,
		},
	)
}

// optArchesArg reads an arches argument (string or list, or None).
func optArchesArg(c *registry.Call, name string) (*string, error) {
	if c.IsNull(name) {
		return nil, nil
	}
	var raw []byte
	if err := c.Decode(name, (*rawJSON)(&raw)); err != nil {
		return nil, err
	}
	a, err := parseArches(raw, false)
	if err != nil {
		return nil, err
	}
	return &a, nil
}

type rawJSON []byte

func (r *rawJSON) UnmarshalJSON(b []byte) error { *r = append((*r)[:0], b...); return nil }

func (s *Server) listPackages(ctx context.Context, c *registry.Call) (any, error) {
	tagRef, err := c.OptRef("tagID")
	if err != nil {
		return nil, err
	}
	userRef, err := c.OptRef("userID")
	if err != nil {
		return nil, err
	}
	pkgRef, err := c.OptRef("pkgID")
	if err != nil {
		return nil, err
	}
	prefix, err := c.OptString("prefix")
	if err != nil {
		return nil, err
	}
	q := pkgListQuery{}
	if q.inherit, err = c.Bool("inherited"); err != nil {
		return nil, err
	}
	if q.withDups, err = c.Bool("with_dups"); err != nil {
		return nil, err
	}
	if q.withOwners, err = c.Bool("with_owners"); err != nil {
		return nil, err
	}
	if q.withBlocked, err = c.Bool("with_blocked"); err != nil {
		return nil, err
	}
	if err := checkEvent(c); err != nil {
		return nil, err
	}
	qo, err := readQueryOpts(c, "queryOpts")
	if err != nil {
		return nil, err
	}
	lowerPrefix := ""
	if prefix != nil {
		lowerPrefix = strings.ToLower(*prefix)
	}
	if tagRef == nil && userRef == nil && pkgRef == nil {
		// listPackagesSimple
		type simple struct {
			PackageID   int64  `json:"package_id"`
			PackageName string `json:"package_name"`
		}
		out := []simple{}
		_ = s.store.Read(func(v state.View) error {
			for _, k := range v.Keys("package", "package.") {
				var p bus.Package
				if ok, _ := v.GetJSON(k, &p); ok && strings.HasPrefix(strings.ToLower(p.Name), lowerPrefix) {
					out = append(out, simple{p.ID, p.Name})
				}
			}
			return nil
		})
		sortByID(out, func(p simple) int64 { return p.PackageID })
		return applyListOpts(out, qo)
	}
	if userRef != nil && !q.withOwners {
		return nil, bus.GenericError("userID and with_owners=False can't be used together")
	}
	var out []bus.TagPackage
	err = s.store.Read(func(v state.View) error {
		if tagRef != nil {
			t, err := getTagIDStrict(v, *tagRef)
			if err != nil {
				return err
			}
			q.tagID = t.ID
		}
		if userRef != nil {
			u, ok := lookupUser(v, *userRef)
			if !ok {
				return bus.GenericError("No such user: %s", userRef.String())
			}
			q.userID = u.ID
		}
		if pkgRef != nil {
			p, ok := lookupPackage(v, *pkgRef)
			if !ok {
				return bus.GenericError("No such entry in table package: %s", refValue(*pkgRef))
			}
			q.pkgID = p.ID
		}
		out = readPackageList(v, q)
		return nil
	})
	if err != nil {
		return nil, err
	}
	res := []bus.TagPackage{}
	for _, e := range out {
		if strings.HasPrefix(strings.ToLower(e.PackageName), lowerPrefix) {
			res = append(res, e)
		}
	}
	return applyListOpts(res, qo)
}

// --- for the builds domain ----------------------------------------------

// ensurePackageTx is ensurePackage returning the id.
func ensurePackageTx(tx *state.Txn, name string) (int64, error) {
	p, err := ensurePackage(tx, name)
	if err != nil {
		return 0, err
	}
	return p.ID, nil
}

// packageIDOf resolves a package id by id or name.
func packageIDOf(v state.View, ref registry.Ref) (int64, bool) {
	p, ok := lookupPackage(v, ref)
	if !ok {
		return 0, false
	}
	return p.ID, true
}

// pkgListStatus reports whether a package is in a tag's package list
// (following inheritance) and whether that entry blocks it.
func pkgListStatus(v state.View, tagID, pkgID int64) (listed, blocked bool) {
	r := inheritedPackage(v, tagID, pkgID)
	if r == nil {
		return false, false
	}
	return true, r.Blocked
}

// pkgListForceAdd adds (or unblocks) a package in a tag's list for a forced
// tagBuild, owned by the caller, as Koji's _tag_build does with force.
func pkgListForceAdd(tx *state.Txn, c *registry.Call, t *tagRecord, pkgID int64) error {
	p, ok := lookupPackage(tx.View, registry.Ref{ID: pkgID})
	if !ok {
		return bus.GenericError("No such package: %d", pkgID)
	}
	owner := callerID(c)
	rec := tagPackageRecord{TagID: t.ID, PackageID: pkgID, OwnerID: owner}
	if prev := inheritedPackage(tx.View, t.ID, pkgID); prev != nil {
		rec.ExtraArches, rec.OwnerID = prev.ExtraArches, prev.OwnerID
	}
	if err := tx.Put(tagPkgKey(t.ID, pkgID), rec); err != nil {
		return err
	}
	if err := touchTag(tx, t.ID); err != nil {
		return err
	}
	var user any
	if u, ok := lookupUser(tx.View, registry.Ref{ID: owner}); ok {
		user = u.User
	}
	tx.Emit("package.add", map[string]any{
		"type": "PackageListChange", "tag": t.Name, "package": p.Name, "action": "add", "user": callerName(c),
	}, map[string]any{"action": "add", "tag": t.info(), "package": p, "owner": rec.OwnerID, "block": false,
		"extra_arches": rec.ExtraArches, "force": true, "update": false, "user": user})
	return nil
}
