package hub

import (
	"context"
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Keys of the tag part of the state bucket.
//
//	tag.<id>             tagRecord (getTag's fields plus blocked extra keys)
//	tagname.<name>       tag id
//	taginh.<id>          []inheritanceRecord: the tag's parents, by priority
//	tagchg.<id>          tagChange: rewritten on every content change of the
//	                     tag after its creation; its revision (or, before
//	                     any change, the tag's own) is tagLastChangeEvent
//	seq.tag              the tag id sequence

// tagRecord is a tag as stored.
type tagRecord struct {
	bus.Tag
	// BlockedExtra are extra keys blocked here (editTag2 block_extra): the
	// tag does not inherit them and does not pass them on.
	BlockedExtra []string `json:"blocked_extra,omitempty"`
}

// inheritanceRecord is one stored inheritance link of a tag (tag_inheritance).
type inheritanceRecord struct {
	ParentID     int64  `json:"parent_id"`
	Priority     int64  `json:"priority"`
	MaxDepth     *int64 `json:"maxdepth"`
	Intransitive bool   `json:"intransitive"`
	NoConfig     bool   `json:"noconfig"`
	PkgFilter    string `json:"pkg_filter"`
}

// tagChange is the value of tagchg.<id>.
type tagChange struct {
	TagID int64   `json:"tag_id"`
	TS    float64 `json:"ts"`
}

func tagKey(id int64) string        { return "tag." + strconv.FormatInt(id, 10) }
func tagNameKey(name string) string { return "tagname." + state.EscapeKey(name) }
func tagInhKey(id int64) string     { return "taginh." + strconv.FormatInt(id, 10) }
func tagChgKey(id int64) string     { return "tagchg." + strconv.FormatInt(id, 10) }

// lookupTag resolves a tag by id or name inside a view.
func lookupTag(v state.View, ref registry.Ref) (*tagRecord, bool) {
	id := ref.ID
	if !ref.IsID() {
		if ok, err := v.GetJSON(tagNameKey(ref.Name), &id); !ok || err != nil || id == 0 {
			return nil, false
		}
	}
	var t tagRecord
	if ok, err := v.GetJSON(tagKey(id), &t); !ok || err != nil {
		return nil, false
	}
	if t.Extra == nil {
		t.Extra = map[string]any{}
	}
	return &t, true
}

// getTagStrict is get_tag(strict=True): a missing tag is Koji's GenericError.
func getTagStrict(v state.View, ref registry.Ref) (*tagRecord, error) {
	t, ok := lookupTag(v, ref)
	if !ok {
		return nil, bus.GenericError("No such tagInfo: %s", ref.String())
	}
	return t, nil
}

// getTagIDStrict is get_tag_id(strict=True) / lookup_tag(strict=True):
// the same lookup with Koji's other error text.
func getTagIDStrict(v state.View, ref registry.Ref) (*tagRecord, error) {
	t, ok := lookupTag(v, ref)
	if !ok {
		return nil, bus.GenericError("No such entry in table tag: %s", refValue(ref))
	}
	return t, nil
}

// tagByID is lookupTag by id.
func tagByID(v state.View, id int64) (*tagRecord, bool) {
	return lookupTag(v, registry.Ref{ID: id})
}

// readInheritance returns a tag's stored parent links, ordered by priority.
func readInheritance(v state.View, tagID int64) []inheritanceRecord {
	var links []inheritanceRecord
	if ok, err := v.GetJSON(tagInhKey(tagID), &links); !ok || err != nil {
		return nil
	}
	sort.SliceStable(links, func(i, j int) bool { return links[i].Priority < links[j].Priority })
	return links
}

// readDescendants returns the links that name tagID as their parent, each
// with the child's id, ordered by priority (Koji's readDescendantsData).
func readDescendants(v state.View, tagID int64) []descendantLink {
	var out []descendantLink
	for _, k := range v.Group("taginh", inheritanceParentGroup(tagID)) {
		child, err := strconv.ParseInt(k[len("taginh."):], 10, 64)
		if err != nil {
			continue
		}
		for _, l := range readInheritance(v, child) {
			if l.ParentID == tagID {
				out = append(out, descendantLink{inheritanceRecord: l, TagID: child})
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Priority < out[j].Priority })
	return out
}

func inheritanceParentGroup(parentID int64) string {
	return "parent." + strconv.FormatInt(parentID, 10)
}

// inheritanceParentGroups files a tag's inheritance under each of its
// parents (state.Indexer), so that a tag's children are found without
// reading every tag's inheritance.
func inheritanceParentGroups(_ string, val []byte) []string {
	var links []struct {
		ParentID int64 `json:"parent_id"`
	}
	if json.Unmarshal(val, &links) != nil {
		return nil
	}
	groups := make([]string, 0, len(links))
	for _, l := range links {
		if g := inheritanceParentGroup(l.ParentID); !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	return groups
}

type descendantLink struct {
	inheritanceRecord
	TagID int64
}

// fullLink is one entry of readFullInheritance.
type fullLink struct {
	inheritanceRecord
	// ID is the tag this entry adds: the parent (forward) or the child (reverse).
	ID        int64
	ChildID   int64 // forward: the tag whose link this is
	TagID     int64 // reverse: the child tag
	CurrDepth int64
	NextDepth *int64
	Filter    []string
}

// readFullInheritance is Koji's readFullInheritance: the ordered inheritance
// of a tag, honouring priority, maxdepth, intransitive links, loops, and
// accumulating noconfig and package filters along each path.
func readFullInheritance(v state.View, tagID int64, reverse bool) []fullLink {
	var order []fullLink
	hist := map[int64][]fullLink{}
	readFullInheritanceRecurse(v, tagID, &order, map[int64]bool{}, hist, 0, nil, false, nil, reverse)
	return order
}

func readFullInheritanceRecurse(v state.View, tagID int64, order *[]fullLink, top map[int64]bool,
	hist map[int64][]fullLink, currdepth int64, maxdepth *int64, noconfig bool, pfilter []string, reverse bool) {
	if maxdepth != nil && *maxdepth < 1 {
		return
	}
	currdepth++
	newTop := make(map[int64]bool, len(top)+1)
	for k := range top {
		newTop[k] = true
	}
	newTop[tagID] = true
	top = newTop

	var node []fullLink
	if reverse {
		for _, d := range readDescendants(v, tagID) {
			node = append(node, fullLink{inheritanceRecord: d.inheritanceRecord, ID: d.TagID, TagID: d.TagID})
		}
	} else {
		for _, l := range readInheritance(v, tagID) {
			node = append(node, fullLink{inheritanceRecord: l, ID: l.ParentID, ChildID: tagID})
		}
	}
	for _, link := range node {
		id := link.ID
		if top[id] {
			continue // loop: auto prune
		}
		if link.Intransitive && len(top) > 1 && !reverse {
			continue // intransitive links count only at the root
		}
		var nextdepth *int64
		if reverse {
			if link.MaxDepth != nil && *link.MaxDepth < currdepth-1 {
				continue
			}
		} else {
			switch {
			case link.MaxDepth == nil:
				if maxdepth != nil {
					n := *maxdepth - 1
					nextdepth = &n
				}
			case maxdepth != nil:
				n := min(*link.MaxDepth, *maxdepth) - 1
				nextdepth = &n
			default:
				n := *link.MaxDepth
				nextdepth = &n
			}
		}
		link.NextDepth = nextdepth
		link.CurrDepth = currdepth
		if link.NoConfig {
			noconfig = true // as Koji: sticks for the rest of this node's links
		}
		filter := append([]string{}, pfilter...)
		if link.PkgFilter != "" {
			filter = append(filter, link.PkgFilter)
		}
		link.Filter = filter
		if prev, seen := hist[id]; seen {
			rescan := true
			for _, p := range prev {
				sufficient := true
				last := p.NextDepth
				if nextdepth == nil {
					if last != nil {
						sufficient = false
					}
				} else if last != nil && *last < *nextdepth {
					sufficient = false
				}
				if p.NoConfig && !noconfig { // Koji compares the earlier link's own flag
					sufficient = false
				}
				if len(p.Filter) > 0 {
					sufficient = false
				}
				if sufficient {
					rescan = false
				}
			}
			if !rescan {
				continue
			}
		}
		hist[id] = append(hist[id], link)
		*order = append(*order, link)
		if link.Intransitive && reverse {
			continue
		}
		readFullInheritanceRecurse(v, id, order, top, hist, currdepth, nextdepth, noconfig, filter, reverse)
	}
}

// tagChain returns the tag then its ancestors in Koji's inheritance order
// ([tag] + [link.parent_id for link in readFullInheritance(tag)]), each id
// once. It is the order in which tagged builds, package lists and groups are
// looked up; noconfig links are included (noconfig concerns config only).
func tagChain(v state.View, tagID int64) []int64 {
	out := []int64{tagID}
	seen := map[int64]bool{tagID: true}
	for _, l := range readFullInheritance(v, tagID, false) {
		if !seen[l.ID] {
			seen[l.ID] = true
			out = append(out, l.ID)
		}
	}
	return out
}

// touchTag marks a content change of a tag in the transaction: the revision
// of tagchg.<id> becomes the tag's last change event.
func touchTag(tx *state.Txn, tagID int64) error {
	return tx.Put(tagChgKey(tagID), tagChange{TagID: tagID, TS: nowTS()})
}

// tagLastChange is tagLastChangeEvent: the revision of tagchg.<id>, or of
// the tag itself when it has not changed since its creation (which writes
// no tagchg: one key less per new tag); 0 for no such tag. Every write of
// tag.<id> after the creation touches tagchg too.
func tagLastChange(v state.View, tagID int64) uint64 {
	_, changed, _ := v.Get(tagChgKey(tagID))
	_, created, _ := v.Get(tagKey(tagID))
	return max(changed, created)
}

// --- shared helpers of the tag side -------------------------------------

// nameInternalRE is Koji's default RegexNameInternal; maxNameInternal its
// MaxNameLengthInternal.
var nameInternalRE = regexp.MustCompile(`^[A-Za-z0-9/_.+-]+$`)

const maxNameInternal = 256

// verifyNameInternal is Koji's verify_name_internal with the default hub.conf.
func verifyNameInternal(name string) error {
	if err := checkNameLength(name); err != nil {
		return err
	}
	if !nameInternalRE.MatchString(name) {
		return bus.GenericError("Name %s does not match RegexNameInternal value", bus.Clip(name))
	}
	return nil
}

// checkNameLength is Koji's MaxNameLengthInternal check (of tag, target,
// package, group, user, host and channel names), with Koji's fault and
// text; the name is quoted clipped, with its size.
func checkNameLength(name string) error {
	if len(name) > maxNameInternal {
		return bus.GenericError("Name %s is too long. Max length is %d characters", bus.Clip(name), maxNameInternal)
	}
	return nil
}

var archRE = regexp.MustCompile(`^[a-zA-Z0-9_\-]*$`)

// parseArches is koji.parse_arches(arches, allow_none=True): a string (comma-
// or space-separated unless strict) or a list, normalised to "a b c".
func parseArches(raw json.RawMessage, strict bool) (string, error) {
	var list []string
	if isNullRaw(raw) {
		return "", nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if !strict {
			s = strings.ReplaceAll(s, ",", " ")
		}
		list = strings.Fields(s)
	} else if json.Unmarshal(raw, &list) != nil {
		return "", bus.GenericError("Invalid arches: %s", string(raw))
	}
	for _, a := range list {
		if !archRE.MatchString(a) {
			return "", bus.GenericError("Architecture can be only [a-zA-Z0-9_-]")
		}
	}
	return strings.Join(list, " "), nil
}

func isNullRaw(raw json.RawMessage) bool {
	t := strings.TrimSpace(string(raw))
	return t == "" || t == "null"
}

// argRaw returns the raw value of a parameter or of a **kwargs entry.
func argRaw(c *registry.Call, name string) (json.RawMessage, bool) {
	if c.Has(name) {
		var raw json.RawMessage
		if err := c.Decode(name, &raw); err == nil {
			return raw, true
		}
	}
	raw, ok := c.Extra()[name]
	return raw, ok
}

// decodeKw decodes a **kwargs value with a ParameterError naming it.
func decodeKw(c *registry.Call, name string, raw json.RawMessage, out any, want string) error {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if isNullRaw(raw) || dec.Decode(out) != nil {
		return bus.ParameterError("%s(): parameter '%s' must be %s", c.Method.Name, name, want)
	}
	return nil
}

// kwBool decodes a Python-truthy boolean (bool, 0/1 or None) from **kwargs.
func kwBool(c *registry.Call, name string, raw json.RawMessage) (bool, error) {
	if isNullRaw(raw) {
		return false, nil
	}
	var b bool
	if json.Unmarshal(raw, &b) == nil {
		return b, nil
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		if i, err := n.Int64(); err == nil && (i == 0 || i == 1) {
			return i == 1, nil
		}
	}
	return false, bus.ParameterError("%s(): parameter '%s' must be a boolean", c.Method.Name, name)
}

// refFromRaw reads an id-or-name value.
func refFromRaw(raw json.RawMessage) (registry.Ref, bool) {
	var n json.Number
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if dec.Decode(&n) == nil {
		if i, err := n.Int64(); err == nil {
			return registry.Ref{ID: i}, true
		}
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && s != "" {
		return registry.Ref{Name: s}, true
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) == nil {
		if v, ok := m["id"]; ok {
			return refFromRaw(v)
		}
		if v, ok := m["name"]; ok {
			return refFromRaw(v)
		}
	}
	return registry.Ref{}, false
}

// viewHasPerm is hasPerm on a snapshot (safe inside a transaction).
func viewHasPerm(v state.View, userID int64, perm string, adminOK bool) bool {
	u, ok := lookupUser(v, registry.Ref{ID: userID})
	if !ok {
		return false
	}
	for _, p := range u.Perms {
		if p == perm || (adminOK && p == "admin") {
			return true
		}
	}
	return false
}

// callerName is the user name of a call, "" when anonymous.
func callerName(c *registry.Call) string {
	if c.Caller == nil {
		return ""
	}
	return c.Caller.UserName
}

func callerID(c *registry.Call) int64 {
	if c.Caller == nil {
		return 0
	}
	return c.Caller.UserID
}

// assertTagUnlocked refuses content changes of a locked tag unless the caller is admin.
func assertTagUnlocked(v state.View, c *registry.Call, t *tagRecord) error {
	if t.Locked && !viewHasPerm(v, callerID(c), "admin", false) {
		return bus.ActionNotAllowed("Tag %s is locked", t.Name)
	}
	return nil
}

// lookupPerm resolves a permission by id or name.
func lookupPerm(v state.View, ref registry.Ref) (*bus.Permission, bool) {
	id := ref.ID
	if !ref.IsID() {
		if ok, _ := v.GetJSON(permNameKey(ref.Name), &id); !ok {
			return nil, false
		}
	}
	var p bus.Permission
	if ok, _ := v.GetJSON(permKey(id), &p); !ok {
		return nil, false
	}
	return &p, true
}

// sameJSON compares two values as JSON (numbers decoded differently compare equal).
func sameJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	var x, y any
	_ = json.Unmarshal(ja, &x)
	_ = json.Unmarshal(jb, &y)
	return reflect.DeepEqual(x, y)
}

// queryOpts is Koji's queryOpts for lists built in memory: order (a field,
// "-" for descending), offset, limit, countOnly.
type queryOpts struct {
	Order     string `json:"order"`
	Offset    *int   `json:"offset"`
	Limit     *int   `json:"limit"`
	CountOnly bool   `json:"countOnly"`
}

func (q *queryOpts) countOnly() bool { return q != nil && q.CountOnly }

func readQueryOpts(c *registry.Call, name string) (*queryOpts, error) {
	if c.IsNull(name) {
		return nil, nil
	}
	var q queryOpts
	if err := c.Decode(name, &q); err != nil {
		return nil, bus.ParameterError("%s(): parameter '%s' must be a dict of query options", c.Method.Name, name)
	}
	return &q, nil
}

// applyListOpts orders and slices items (any JSON-able structs) as Koji's
// _applyQueryOpts does; with countOnly it returns the count.
func applyListOpts[T any](items []T, q *queryOpts) (any, error) {
	if q == nil {
		return items, nil
	}
	if q.Order != "" {
		// Koji's order: one field or several, comma-separated, each "-" for descending.
		type orderField struct {
			name string
			desc bool
		}
		var fields []orderField
		for _, f := range strings.Split(q.Order, ",") {
			f = strings.TrimSpace(f)
			desc := strings.HasPrefix(f, "-")
			f = strings.TrimPrefix(f, "-")
			if f == "" {
				return nil, bus.ParameterError("Invalid order field: %q", q.Order)
			}
			fields = append(fields, orderField{f, desc})
		}
		keys := make([][]any, len(items))
		for i, it := range items {
			b, _ := json.Marshal(it)
			var m map[string]any
			_ = json.Unmarshal(b, &m)
			for _, f := range fields {
				v, ok := m[f.name]
				if !ok {
					return nil, bus.ParameterError("Invalid order field: %s", f.name)
				}
				keys[i] = append(keys[i], v)
			}
		}
		idx := make([]int, len(items))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool {
			ka, kb := keys[idx[a]], keys[idx[b]]
			for n, f := range fields {
				x, y := ka[n], kb[n]
				if f.desc {
					x, y = y, x
				}
				if lessAny(x, y) {
					return true
				}
				if lessAny(y, x) {
					return false
				}
			}
			return false
		})
		sorted := make([]T, len(items))
		for i, j := range idx {
			sorted[i] = items[j]
		}
		items = sorted
	}
	if q.Offset != nil && *q.Offset > 0 {
		if *q.Offset >= len(items) {
			items = items[:0]
		} else {
			items = items[*q.Offset:]
		}
	}
	if q.Limit != nil && *q.Limit >= 0 && *q.Limit < len(items) {
		items = items[:*q.Limit]
	}
	if q.CountOnly {
		return len(items), nil
	}
	return items, nil
}

func lessAny(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && x < y
	case string:
		y, ok := b.(string)
		return ok && x < y
	case bool:
		y, ok := b.(bool)
		return ok && !x && y
	case nil:
		return b != nil
	}
	return false
}

// globMatch is SQL ILIKE with Koji's glob translation (* and ?), case-insensitive.
func globMatch(pattern, name string) bool {
	var b strings.Builder
	b.WriteString("(?is)^")
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	return err == nil && re.MatchString(name)
}

// --- tag records --------------------------------------------------------

// tagView renders a stored tag as getTag answers (blocked: extra values as
// [blocked, value] pairs including blocked keys).
func (t *tagRecord) view(blocked bool) map[string]any {
	extra := map[string]any{}
	if blocked {
		for k, v := range t.Extra {
			extra[k] = []any{false, v}
		}
		for _, k := range t.BlockedExtra {
			extra[k] = []any{true, nil}
		}
	} else {
		for k, v := range t.Extra {
			extra[k] = v
		}
	}
	return map[string]any{
		"id": t.ID, "name": t.Name, "perm_id": t.PermID, "perm": t.Perm, "arches": t.Arches,
		"locked": t.Locked, "maven_support": t.MavenSupport, "maven_include_all": t.MavenIncludeAll,
		"extra": extra,
	}
}

// tagInfo is the tag as events carry it (Koji's taginfo).
func (t *tagRecord) info() bus.Tag {
	out := t.Tag
	if out.Extra == nil {
		out.Extra = map[string]any{}
	}
	return out
}

func putTag(tx *state.Txn, t *tagRecord) error {
	sort.Strings(t.BlockedExtra)
	return tx.Put(tagKey(t.ID), t)
}

func putInheritance(tx *state.Txn, tagID int64, links []inheritanceRecord) error {
	if len(links) == 0 {
		tx.Delete(tagInhKey(tagID))
		return nil
	}
	sort.SliceStable(links, func(i, j int) bool { return links[i].Priority < links[j].Priority })
	return tx.Put(tagInhKey(tagID), links)
}

// inheritanceView renders a tag's links as getInheritanceData answers.
func inheritanceView(v state.View, tagID int64) []bus.InheritanceLink {
	out := []bus.InheritanceLink{}
	for _, l := range readInheritance(v, tagID) {
		name := ""
		if p, ok := tagByID(v, l.ParentID); ok {
			name = p.Name
		}
		out = append(out, bus.InheritanceLink{
			ParentID: l.ParentID, Name: name, Priority: l.Priority, MaxDepth: l.MaxDepth,
			Intransitive: l.Intransitive, NoConfig: l.NoConfig, PkgFilter: l.PkgFilter, ChildID: tagID,
		})
	}
	return out
}

func (s *Server) emitTagEvent(tx *state.Txn, c *registry.Call, address, typ string, t *tagRecord, body map[string]any) {
	if body == nil {
		body = map[string]any{}
	}
	body["tag"] = t.info()
	body["user"] = callerName(c)
	tx.Emit(address, map[string]any{"type": typ, "tag": t.Name, "user": callerName(c)}, body)
}

// buildConfig is getBuildConfig: the tag with arches and extra inherited
// through non-noconfig links, blocked extra keys removed.
func buildConfig(v state.View, t *tagRecord) bus.BuildConfig {
	type ev struct {
		blocked bool
		value   any
	}
	extra := map[string]ev{}
	for k, val := range t.Extra {
		extra[k] = ev{value: val}
	}
	for _, k := range t.BlockedExtra {
		extra[k] = ev{blocked: true}
	}
	out := bus.BuildConfig{Tag: t.info(), ConfigInheritance: bus.ConfigInheritance{Extra: map[string]bus.TagRef{}}}
	arches := t.Arches
	for _, link := range readFullInheritance(v, t.ID, false) {
		if link.NoConfig {
			continue
		}
		anc, ok := tagByID(v, link.ID)
		if !ok {
			continue
		}
		// kojibus: an empty arches string counts as unset (Koji stores "" for
		// a tag created without arches and would then never inherit them).
		if (arches == nil || *arches == "") && anc.Arches != nil && *anc.Arches != "" {
			a := *anc.Arches
			arches = &a
			out.ConfigInheritance.Arches = &bus.TagRef{ID: anc.ID, Name: anc.Name}
		}
		for k, val := range anc.Extra {
			if _, have := extra[k]; !have {
				extra[k] = ev{value: val}
				out.ConfigInheritance.Extra[k] = bus.TagRef{ID: anc.ID, Name: anc.Name}
			}
		}
		for _, k := range anc.BlockedExtra {
			if _, have := extra[k]; !have {
				extra[k] = ev{blocked: true}
				out.ConfigInheritance.Extra[k] = bus.TagRef{ID: anc.ID, Name: anc.Name}
			}
		}
	}
	out.Arches = arches
	out.Extra = map[string]any{}
	for k, e := range extra {
		if e.blocked {
			delete(out.ConfigInheritance.Extra, k)
			continue
		}
		out.Extra[k] = e.value
	}
	return out
}

// --- API ----------------------------------------------------------------

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerTags) }

func (s *Server) registerTags() {
	s.reg.Register(
		registry.Method{
			Name: "createTag", Doc: "Create a new tag", Perm: "tag", Write: true,
			Params: []registry.Param{registry.P("name"), registry.Opt("parent", nil), registry.Opt("arches", nil),
				registry.Opt("perm", nil), registry.Opt("locked", false), registry.Opt("maven_support", false),
				registry.Opt("maven_include_all", false), registry.Opt("extra", nil)},
			Handler: s.createTag,
		},
		registry.Method{
			Name: "editTag2", Doc: "Edit information for an existing tag", Perm: "tag", Write: true,
			Params: []registry.Param{registry.P("tagInfo")}, VarKw: "kwargs",
			Handler: s.editTag,
		},
		registry.Method{
			Name: "deleteTag", Doc: "Delete the specified tag", Perm: "tag", Write: true,
			Params:  []registry.Param{registry.P("tagInfo")},
			Handler: s.deleteTag,
		},
		registry.Method{
			Name: "getTag", Doc: "Get tag information based on the tagInfo (a tag name or id)",
			Params: []registry.Param{registry.P("tagInfo"), registry.Opt("strict", false), registry.Opt("event", nil), registry.Opt("blocked", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("tagInfo")
				if err != nil {
					return nil, err
				}
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				blocked, err := c.Bool("blocked")
				if err != nil {
					return nil, err
				}
				if err := checkEvent(c); err != nil {
					return nil, err
				}
				var out map[string]any
				err = s.store.Read(func(v state.View) error {
					t, ok := lookupTag(v, ref)
					if !ok {
						if strict {
							return bus.GenericError("No such tagInfo: %s", ref.String())
						}
						return nil
					}
					out = t.view(blocked)
					return nil
				})
				if out == nil {
					return nil, err
				}
				return out, err
			},
		},
		registry.Method{
			Name: "getTagID", Doc: "Get the id of a tag by name",
			Params: []registry.Param{registry.P("info"), registry.Opt("strict", false), registry.Opt("create", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("info")
				if err != nil {
					return nil, err
				}
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				var out *int64
				_ = s.store.Read(func(v state.View) error {
					if t, ok := lookupTag(v, ref); ok {
						out = &t.ID
					}
					return nil
				})
				if out == nil && strict {
					return nil, bus.GenericError("No such tag: %s", ref.String())
				}
				return out, nil
			},
		},
		registry.Method{
			Name: "listTags", Doc: "List tags according to filters",
			Params: []registry.Param{registry.Opt("build", nil), registry.Opt("package", nil), registry.Opt("perms", true),
				registry.Opt("queryOpts", nil), registry.Opt("pattern", nil)},
			Handler: s.listTags,
		},
		registry.Method{
			Name: "getInheritanceData", Doc: "Return inheritance data for tag",
			Params: []registry.Param{registry.P("tag"), registry.Opt("event", nil)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("tag")
				if err != nil {
					return nil, err
				}
				if err := checkEvent(c); err != nil {
					return nil, err
				}
				var out []bus.InheritanceLink
				err = s.store.Read(func(v state.View) error {
					t, err := getTagIDStrict(v, ref)
					if err != nil {
						return err
					}
					out = inheritanceView(v, t.ID)
					return nil
				})
				return out, err
			},
		},
		registry.Method{
			Name: "setInheritanceData", Doc: "Set inheritance relationships for a tag", Perm: "tag", Write: true,
			Params:  []registry.Param{registry.P("tag"), registry.P("data"), registry.Opt("clear", false)},
			Handler: s.setInheritanceData,
		},
		registry.Method{
			Name: "getFullInheritance", Doc: "Return the full, ordered inheritance of a tag (descendants with reverse)",
			Params: []registry.Param{registry.P("tag"), registry.Opt("event", nil), registry.Opt("reverse", false)}, VarKw: "kwargs",
			Handler: s.getFullInheritance,
		},
		registry.Method{
			Name: "getBuildConfig", Doc: "Return build configuration associated with a tag",
			Params: []registry.Param{registry.P("tag"), registry.Opt("event", nil)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("tag")
				if err != nil {
					return nil, err
				}
				if err := checkEvent(c); err != nil {
					return nil, err
				}
				var out bus.BuildConfig
				err = s.store.Read(func(v state.View) error {
					t, err := getTagStrict(v, ref)
					if err != nil {
						return err
					}
					out = buildConfig(v, t)
					return nil
				})
				if err != nil {
					return nil, err
				}
				return out, nil
			},
		},
		registry.Method{
			Name: "tagLastChangeEvent", Doc: "Report the most recent event that changed the tag, or None",
			Params: []registry.Param{registry.P("tag"), registry.Opt("before", nil), registry.Opt("inherit", true)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("tag")
				if err != nil {
					return nil, err
				}
				before, err := c.OptInt("before")
				if err != nil {
					return nil, err
				}
				inherit, err := c.Bool("inherit")
				if err != nil {
					return nil, err
				}
				var out *uint64
				err = s.store.Read(func(v state.View) error {
					t, err := getTagStrict(v, ref)
					if err != nil {
						return err
					}
					ids := []int64{t.ID}
					if inherit {
						ids = tagChain(v, t.ID)
					}
					var last uint64
					for _, id := range ids {
						last = max(last, tagLastChange(v, id))
					}
					if before != nil && last >= uint64(max(*before, 0)) {
						// The hub keeps current state only; what changed before
						// an earlier event is the archive's to answer.
						return bus.GenericError("tagLastChangeEvent: the tag changed at event %d, after %d; history before it is not kept in current state", last, *before)
					}
					if last > 0 {
						out = &last
					}
					return nil
				})
				return out, err
			},
		},
	)
}

// checkEvent validates Koji's event parameter: None or an event id. The hub
// answers from current state (history queries belong to the archive).
func checkEvent(c *registry.Call) error {
	ev, err := c.OptInt("event")
	if err != nil || ev == nil {
		return err
	}
	return nil
}

func (s *Server) createTag(ctx context.Context, c *registry.Call) (any, error) {
	name, err := c.String("name")
	if err != nil {
		return nil, err
	}
	if err := verifyNameInternal(name); err != nil {
		return nil, err
	}
	parent, err := c.OptRef("parent")
	if err != nil {
		return nil, err
	}
	var archRaw json.RawMessage
	if err := c.Decode("arches", &archRaw); err != nil {
		return nil, err
	}
	arches, err := parseArches(archRaw, true)
	if err != nil {
		return nil, err
	}
	perm, err := c.OptRef("perm")
	if err != nil {
		return nil, err
	}
	locked, err := c.Bool("locked")
	if err != nil {
		return nil, err
	}
	mavenSupport, err := c.Bool("maven_support")
	if err != nil {
		return nil, err
	}
	mavenAll, err := c.Bool("maven_include_all")
	if err != nil {
		return nil, err
	}
	if mavenSupport || mavenAll {
		return nil, bus.GenericError("Maven support not enabled")
	}
	extra, err := c.Map("extra")
	if err != nil {
		return nil, err
	}
	if err := s.hubConf.Limits.checkExtra("tag", extra); err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		var parentTag *tagRecord
		if parent != nil {
			p, ok := lookupTag(tx.View, *parent)
			if !ok {
				return nil, bus.GenericError("Parent tag '%s' could not be found", refValue(*parent))
			}
			parentTag = p
		}
		t := &tagRecord{Tag: bus.Tag{Name: name, Arches: &arches, Locked: locked, Extra: map[string]any{}}}
		if perm != nil {
			p, ok := lookupPerm(tx.View, *perm)
			if !ok {
				return nil, bus.GenericError("No such entry in table permissions: %s", refValue(*perm))
			}
			t.PermID, t.Perm = &p.ID, &p.Name
		}
		for k, v := range extra {
			t.Extra[k] = v
		}
		t.ID = tx.NextID("tag")
		if err := s.createTagTx(tx, c, t, parentTag); err != nil {
			return nil, err
		}
		return t.ID, nil
	})
}

// createTagTx stores a new tag (its id already taken) with an optional
// parent link and emits tag.create.
func (s *Server) createTagTx(tx *state.Txn, c *registry.Call, t *tagRecord, parent *tagRecord) error {
	if _, exists := lookupTag(tx.View, registry.Ref{Name: t.Name}); exists {
		return bus.GenericError("A tag with the name '%s' already exists", t.Name)
	}
	if err := putTag(tx, t); err != nil {
		return err
	}
	if err := tx.Put(tagNameKey(t.Name), t.ID); err != nil {
		return err
	}
	body := map[string]any{"parent": nil}
	if parent != nil {
		if err := putInheritance(tx, t.ID, []inheritanceRecord{{ParentID: parent.ID}}); err != nil {
			return err
		}
		body["parent"] = parent.info()
	}
	// No touchTag: the tag's own revision is its last change (tagLastChange).
	s.emitTagEvent(tx, c, "tag.create", "TagCreate", t, body)
	return nil
}

// refValue is str(value) of an id-or-name argument as a fault quotes it: a
// long name clipped (bus.Clip).
func refValue(r registry.Ref) string { return bus.Clip(refName(r)) }

// refName is str(value) of an id-or-name argument, whole.
func refName(r registry.Ref) string {
	if r.IsID() {
		return strconv.FormatInt(r.ID, 10)
	}
	return r.Name
}

// tagEdit is editTag2's parsed keyword arguments.
type tagEdit struct {
	name            *string
	arches          *json.RawMessage
	locked          *bool
	permSet         bool
	perm            *registry.Ref
	mavenSupport    *bool
	mavenIncludeAll *bool
	extra           map[string]any
	extraSet        bool
	removeExtra     []string
	removeSet       bool
	blockExtra      []string
	blockSet        bool
}

func parseTagEdit(c *registry.Call) (*tagEdit, error) {
	e := &tagEdit{}
	kw := c.Extra()
	if raw, ok := kw["name"]; ok && !isNullRaw(raw) {
		var s string
		if err := decodeKw(c, "name", raw, &s, "a string"); err != nil {
			return nil, err
		}
		e.name = &s
	}
	if raw, ok := kw["arches"]; ok {
		e.arches = &raw
	}
	for _, f := range []struct {
		key string
		dst **bool
	}{{"locked", &e.locked}, {"maven_support", &e.mavenSupport}, {"maven_include_all", &e.mavenIncludeAll}} {
		if raw, ok := kw[f.key]; ok {
			b, err := kwBool(c, f.key, raw)
			if err != nil {
				return nil, err
			}
			*f.dst = &b
		}
	}
	if e.mavenSupport != nil || e.mavenIncludeAll != nil {
		return nil, bus.GenericError("Maven support not enabled")
	}
	permKeyName := ""
	if _, ok := kw["perm"]; ok {
		permKeyName = "perm"
	}
	if _, ok := kw["perm_id"]; ok {
		permKeyName = "perm_id" // perm_id takes precedence, as in Koji
	}
	if permKeyName != "" {
		e.permSet = true
		raw := kw[permKeyName]
		if !isNullRaw(raw) {
			r, ok := refFromRaw(raw)
			if !ok {
				return nil, bus.ParameterError("%s(): parameter '%s' must be an id or a name", c.Method.Name, permKeyName)
			}
			e.perm = &r
		}
	}
	if raw, ok := kw["extra"]; ok {
		e.extraSet = true
		if !isNullRaw(raw) {
			if err := decodeKw(c, "extra", raw, &e.extra, "a dict"); err != nil {
				return nil, err
			}
		}
	}
	for _, f := range []struct {
		key string
		dst *[]string
		set *bool
	}{{"remove_extra", &e.removeExtra, &e.removeSet}, {"block_extra", &e.blockExtra, &e.blockSet}} {
		if raw, ok := kw[f.key]; ok {
			*f.set = true
			if !isNullRaw(raw) {
				if err := decodeKw(c, f.key, raw, f.dst, "a list of strings"); err != nil {
					return nil, err
				}
			}
		}
	}
	return e, nil
}

func (s *Server) editTag(ctx context.Context, c *registry.Call) (any, error) {
	ref, err := c.Ref("tagInfo")
	if err != nil {
		return nil, err
	}
	e, err := parseTagEdit(c)
	if err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, err := getTagStrict(tx.View, ref)
		if err != nil {
			return nil, err
		}
		old := *t
		old.Extra = t.Extra
		next := *t
		next.Extra = map[string]any{}
		for k, v := range t.Extra {
			next.Extra[k] = v
		}
		next.BlockedExtra = append([]string{}, t.BlockedExtra...)
		changes := map[string]any{}
		configChanged := false // arches, extra: content of the tag as builds see it
		if e.permSet {
			var id *int64
			var name *string
			if e.perm != nil {
				p, ok := lookupPerm(tx.View, *e.perm)
				if !ok {
					return nil, bus.GenericError("No such entry in table permissions: %s", refValue(*e.perm))
				}
				id, name = &p.ID, &p.Name
			}
			if !sameJSON(id, t.PermID) {
				next.PermID, next.Perm = id, name
				changes["perm"] = name
			}
		}
		if e.name != nil && *e.name != "" && *e.name != t.Name {
			if err := verifyNameInternal(*e.name); err != nil {
				return nil, err
			}
			if other, taken := lookupTag(tx.View, registry.Ref{Name: *e.name}); taken {
				return nil, bus.GenericError("Name %s already taken by tag %d", *e.name, other.ID)
			}
			next.Name = *e.name
			changes["name"] = *e.name
		}
		if e.arches != nil && !isNullRaw(*e.arches) {
			a, err := parseArches(*e.arches, true)
			if err != nil {
				return nil, err
			}
			if t.Arches == nil || *t.Arches != a {
				next.Arches = &a
				changes["arches"] = a
				configChanged = true
			}
		}
		if e.locked != nil && *e.locked != t.Locked {
			next.Locked = *e.locked
			changes["locked"] = *e.locked
		}
		if e.extraSet && e.extra != nil {
			removed := map[string]bool{}
			for _, k := range append(append([]string{}, e.blockExtra...), e.removeExtra...) {
				removed[k] = true
			}
			keys := make([]string, 0, len(e.extra))
			for k := range e.extra {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if removed[k] {
					return nil, bus.GenericError("Can not both add/update and remove tag-extra: '%s'", k)
				}
			}
			for _, k := range keys {
				v := e.extra[k]
				cur, has := t.Extra[k]
				if !has || !sameJSON(cur, v) {
					next.Extra[k] = v
					next.BlockedExtra = removeString(next.BlockedExtra, k)
					configChanged = true
				}
			}
			if configChanged {
				changes["extra"] = e.extra
			}
			if err := s.hubConf.Limits.checkExtra("tag", next.Extra); err != nil {
				return nil, err
			}
		}
		if e.blockSet && len(e.blockExtra) > 0 {
			for _, k := range e.blockExtra {
				delete(next.Extra, k)
				if !containsString(next.BlockedExtra, k) {
					next.BlockedExtra = append(next.BlockedExtra, k)
				}
			}
			changes["block_extra"] = e.blockExtra
			configChanged = true
		}
		if e.removeSet && len(e.removeExtra) > 0 {
			var missing []string
			for _, k := range e.removeExtra {
				if _, has := t.Extra[k]; !has {
					missing = append(missing, k)
				}
			}
			if len(missing) > 0 {
				return nil, bus.GenericError("Tag: %s doesn't have extra: %s", t.Name, strings.Join(missing, ", "))
			}
			for _, k := range e.removeExtra {
				delete(next.Extra, k)
			}
			changes["remove_extra"] = e.removeExtra
			configChanged = true
		}
		if len(changes) == 0 {
			return nil, nil
		}
		if configChanged {
			if err := assertTagUnlocked(tx.View, c, t); err != nil {
				return nil, err
			}
		}
		if err := putTag(tx, &next); err != nil {
			return nil, err
		}
		if next.Name != t.Name {
			tx.Delete(tagNameKey(t.Name))
			if err := tx.Put(tagNameKey(next.Name), t.ID); err != nil {
				return nil, err
			}
		}
		if err := touchTag(tx, t.ID); err != nil {
			return nil, err
		}
		s.emitTagEvent(tx, c, "tag.edit", "TagEdit", &next, map[string]any{"old": old.info(), "changes": changes})
		return nil, nil
	})
}

func removeString(list []string, s string) []string {
	out := list[:0:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// tagDeleteHooks let other domains (builds, external repos) remove what
// belongs to a deleted tag in the same transaction.
var tagDeleteHooks []func(tx *state.Txn, tagID int64) error

func (s *Server) deleteTag(ctx context.Context, c *registry.Call) (any, error) {
	ref, err := c.Ref("tagInfo")
	if err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, err := getTagStrict(tx.View, ref)
		if err != nil {
			return nil, err
		}
		return nil, s.deleteTagTx(tx, c, t)
	})
}

// deleteTagTx removes a tag with its links, targets, package lists,
// groups and listings, and emits tag.delete.
func (s *Server) deleteTagTx(tx *state.Txn, c *registry.Call, t *tagRecord) error {
	tx.Delete(tagKey(t.ID))
	tx.Delete(tagNameKey(t.Name))
	if _, _, ok := tx.Get(tagInhKey(t.ID)); ok {
		tx.Delete(tagInhKey(t.ID))
	}
	// Links of children to this tag go too; the children's content changed.
	for _, d := range readDescendants(tx.View, t.ID) {
		var keep []inheritanceRecord
		for _, l := range readInheritance(tx.View, d.TagID) {
			if l.ParentID != t.ID {
				keep = append(keep, l)
			}
		}
		if err := putInheritance(tx, d.TagID, keep); err != nil {
			return err
		}
		if err := touchTag(tx, d.TagID); err != nil {
			return err
		}
	}
	targets, err := deleteTargetsOfTag(tx, t.ID)
	if err != nil {
		return err
	}
	deleteTagPackages(tx, t.ID)
	deleteTagGroups(tx, t.ID)
	for _, hook := range tagDeleteHooks {
		if err := hook(tx, t.ID); err != nil {
			return err
		}
	}
	if err := touchTag(tx, t.ID); err != nil {
		return err
	}
	s.emitTagEvent(tx, c, "tag.delete", "TagDelete", t, map[string]any{"targets": targets})
	return nil
}

// tagListEntry is an element of listTags.
type tagListEntry struct {
	ID              int64   `json:"id"`
	Name            string  `json:"name"`
	Arches          *string `json:"arches"`
	Locked          bool    `json:"locked"`
	MavenSupport    bool    `json:"maven_support"`
	MavenIncludeAll bool    `json:"maven_include_all"`
	PermID          *int64  `json:"perm_id,omitempty"`
	Perm            *string `json:"perm,omitempty"`
	// with package=...
	OwnerID     *int64  `json:"owner_id,omitempty"`
	OwnerName   *string `json:"owner_name,omitempty"`
	Blocked     *bool   `json:"blocked,omitempty"`
	ExtraArches *string `json:"extra_arches,omitempty"`
}

func (s *Server) listTags(ctx context.Context, c *registry.Call) (any, error) {
	perms, err := c.Bool("perms")
	if err != nil {
		return nil, err
	}
	pattern, err := c.OptString("pattern")
	if err != nil {
		return nil, err
	}
	q, err := readQueryOpts(c, "queryOpts")
	if err != nil {
		return nil, err
	}
	var buildRaw json.RawMessage
	if !c.IsNull("build") {
		if err := c.Decode("build", &buildRaw); err != nil {
			return nil, err
		}
	}
	pkgRef, err := c.OptRef("package")
	if err != nil {
		return nil, err
	}
	if buildRaw != nil && pkgRef != nil {
		return nil, bus.GenericError("only one of build and package may be specified")
	}
	out := []tagListEntry{}
	err = s.store.Read(func(v state.View) error {
		var only map[int64]*tagPackageRecord
		var onlyIDs map[int64]bool
		if buildRaw != nil {
			ids, ok := tagsOfBuild(v, buildRaw)
			if !ok {
				return bus.GenericError("invalid build: %s", strings.Trim(string(buildRaw), `"`))
			}
			onlyIDs = map[int64]bool{}
			for _, id := range ids {
				onlyIDs[id] = true
			}
		}
		if pkgRef != nil {
			p, ok := lookupPackage(v, *pkgRef)
			if !ok {
				return bus.GenericError("invalid package: %s", refValue(*pkgRef))
			}
			only = map[int64]*tagPackageRecord{}
			for _, r := range tagPackagesOf(v, 0, p.ID) {
				only[r.TagID] = r
			}
		}
		for _, k := range v.Keys("tag", "tag.") {
			var t tagRecord
			if ok, _ := v.GetJSON(k, &t); !ok {
				continue
			}
			if onlyIDs != nil && !onlyIDs[t.ID] {
				continue
			}
			if pattern != nil && !globMatch(*pattern, t.Name) {
				continue
			}
			e := tagListEntry{ID: t.ID, Name: t.Name, Arches: t.Arches, Locked: t.Locked,
				MavenSupport: t.MavenSupport, MavenIncludeAll: t.MavenIncludeAll}
			if perms {
				e.PermID, e.Perm = t.PermID, t.Perm
			}
			if only != nil {
				r, ok := only[t.ID]
				if !ok {
					continue
				}
				blocked := r.Blocked
				e.Blocked, e.ExtraArches = &blocked, r.ExtraArches
				e.OwnerID = &r.OwnerID
				if u, ok := lookupUser(v, registry.Ref{ID: r.OwnerID}); ok {
					e.OwnerName = &u.Name
				}
			}
			out = append(out, e)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortByID(out, func(e tagListEntry) int64 { return e.ID })
	if perms && (q == nil || q.Order == "") && !q.countOnly() {
		// In id order already: only the page asked for is converted below.
		page, err := applyListOpts(out, q)
		if err != nil {
			return nil, err
		}
		out, q = page.([]tagListEntry), nil
	}
	if perms {
		// Koji returns perm_id and perm as null when the tag has none.
		res := make([]map[string]any, 0, len(out))
		for _, e := range out {
			b, _ := json.Marshal(e)
			var m map[string]any
			_ = json.Unmarshal(b, &m)
			m["perm_id"], m["perm"] = e.PermID, e.Perm
			res = append(res, m)
		}
		return applyListOpts(res, q)
	}
	return applyListOpts(out, q)
}

// inheritanceChange is one element of setInheritanceData's data.
type inheritanceChange struct {
	rec    inheritanceRecord
	delete bool
}

func parseInheritanceData(c *registry.Call, v state.View) ([]inheritanceChange, error) {
	var raw json.RawMessage
	if err := c.Decode("data", &raw); err != nil {
		return nil, err
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		var one map[string]json.RawMessage
		if json.Unmarshal(raw, &one) != nil || one == nil {
			return nil, bus.ParameterError("setInheritanceData(): parameter 'data' must be a list of dicts")
		}
		items = []map[string]json.RawMessage{one}
	}
	fields := []string{"parent_id", "priority", "maxdepth", "intransitive", "noconfig", "pkg_filter"}
	var out []inheritanceChange
	for _, it := range items {
		ch := inheritanceChange{}
		for _, dk := range []string{"delete link", "delete_link"} {
			if d, ok := it[dk]; ok {
				var b bool
				if json.Unmarshal(d, &b) == nil && b {
					ch.delete = true
				}
			}
		}
		check := fields
		if ch.delete {
			check = fields[:1]
		}
		for _, f := range check {
			if _, ok := it[f]; !ok {
				return nil, bus.GenericError("No value for %s", f)
			}
		}
		pref, ok := refFromRaw(it["parent_id"])
		if !ok {
			return nil, bus.ParameterError("setInheritanceData(): parent_id must be a tag id")
		}
		parent, err := getTagStrict(v, pref)
		if err != nil {
			return nil, err
		}
		ch.rec.ParentID = parent.ID
		if !ch.delete {
			var pri json.Number
			if json.Unmarshal(it["priority"], &pri) != nil {
				return nil, bus.ParameterError("setInheritanceData(): priority must be an integer")
			}
			n, err := pri.Int64()
			if err != nil {
				return nil, bus.ParameterError("setInheritanceData(): priority must be an integer")
			}
			ch.rec.Priority = n
			if !isNullRaw(it["maxdepth"]) {
				var md json.Number
				if json.Unmarshal(it["maxdepth"], &md) != nil {
					return nil, bus.ParameterError("setInheritanceData(): maxdepth must be an integer or None")
				}
				d, err := md.Int64()
				if err != nil {
					return nil, bus.ParameterError("setInheritanceData(): maxdepth must be an integer or None")
				}
				ch.rec.MaxDepth = &d
			}
			for _, f := range []struct {
				key string
				dst *bool
			}{{"intransitive", &ch.rec.Intransitive}, {"noconfig", &ch.rec.NoConfig}} {
				b, err := kwBool(c, f.key, it[f.key])
				if err != nil {
					return nil, err
				}
				*f.dst = b
			}
			if !isNullRaw(it["pkg_filter"]) {
				if json.Unmarshal(it["pkg_filter"], &ch.rec.PkgFilter) != nil {
					return nil, bus.ParameterError("setInheritanceData(): pkg_filter must be a string")
				}
				if _, err := regexp.Compile(ch.rec.PkgFilter); err != nil {
					return nil, bus.GenericError("Invalid pkg_filter %q: %v", ch.rec.PkgFilter, err)
				}
			}
		}
		out = append(out, ch)
	}
	return out, nil
}

func (s *Server) setInheritanceData(ctx context.Context, c *registry.Call) (any, error) {
	ref, err := c.Ref("tag")
	if err != nil {
		return nil, err
	}
	clear, err := c.Bool("clear")
	if err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, err := getTagIDStrict(tx.View, ref)
		if err != nil {
			return nil, err
		}
		changes, err := parseInheritanceData(c, tx.View)
		if err != nil {
			return nil, err
		}
		type slot struct {
			rec      inheritanceRecord
			update   bool
			deleting bool
		}
		data := map[int64]*slot{}
		var order []int64
		for _, l := range readInheritance(tx.View, t.ID) {
			data[l.ParentID] = &slot{rec: l}
			order = append(order, l.ParentID)
		}
		for _, ch := range changes {
			orig := data[ch.rec.ParentID]
			switch {
			case ch.delete:
				if orig != nil {
					orig.update, orig.deleting = true, true
				}
			case orig == nil || clear:
				if orig == nil {
					order = append(order, ch.rec.ParentID)
				}
				data[ch.rec.ParentID] = &slot{rec: ch.rec, update: true}
			case !sameJSON(orig.rec, ch.rec):
				data[ch.rec.ParentID] = &slot{rec: ch.rec, update: true}
			}
		}
		if clear {
			for _, sl := range data {
				if !sl.update {
					sl.update, sl.deleting = true, true
				}
			}
		}
		changed := false
		for _, sl := range data {
			changed = changed || sl.update
		}
		if !changed {
			return nil, nil // Koji: "No inheritance changes"
		}
		byPri := map[int64][]int64{}
		var pris []int64
		for _, pid := range order {
			sl := data[pid]
			if sl.deleting {
				continue
			}
			if _, seen := byPri[sl.rec.Priority]; !seen {
				pris = append(pris, sl.rec.Priority)
			}
			byPri[sl.rec.Priority] = append(byPri[sl.rec.Priority], pid)
		}
		for _, p := range pris {
			if dups := byPri[p]; len(dups) > 1 {
				return nil, bus.GenericError("Multiple parent tags (%s) cannot have the same priority value (%d) on child tag %d",
					pyIntList(dups), p, t.ID)
			}
		}
		var links []inheritanceRecord
		for _, pid := range order {
			sl := data[pid]
			if sl.deleting {
				continue
			}
			if sl.update {
				// kojibus refuses inheritance loops (Koji stores them and prunes when reading).
				if pid == t.ID {
					return nil, bus.GenericError("Inheritance loop: tag %s cannot inherit from itself", t.Name)
				}
				for _, anc := range tagChain(tx.View, pid) {
					if anc == t.ID {
						p, _ := tagByID(tx.View, pid)
						return nil, bus.GenericError("Inheritance loop: %s already inherits from %s", p.Name, t.Name)
					}
				}
			}
			links = append(links, sl.rec)
		}
		if err := assertTagUnlocked(tx.View, c, t); err != nil {
			return nil, err
		}
		if err := putInheritance(tx, t.ID, links); err != nil {
			return nil, err
		}
		if err := touchTag(tx, t.ID); err != nil {
			return nil, err
		}
		// The change reaches every descendant's inherited content.
		for _, d := range readFullInheritance(tx.View, t.ID, true) {
			if err := touchTag(tx, d.ID); err != nil {
				return nil, err
			}
		}
		newView := make([]bus.InheritanceLink, 0, len(links))
		for _, l := range links {
			p, _ := tagByID(tx.View, l.ParentID)
			newView = append(newView, bus.InheritanceLink{ParentID: l.ParentID, Name: p.Name, Priority: l.Priority,
				MaxDepth: l.MaxDepth, Intransitive: l.Intransitive, NoConfig: l.NoConfig, PkgFilter: l.PkgFilter, ChildID: t.ID})
		}
		s.emitTagEvent(tx, c, "tag.inheritance", "TagInheritance", t, map[string]any{
			"old": inheritanceView(tx.View, t.ID), "new": newView, "clear": clear,
		})
		return nil, nil
	})
}

func pyIntList(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = strconv.FormatInt(id, 10)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func (s *Server) getFullInheritance(ctx context.Context, c *registry.Call) (any, error) {
	ref, err := c.Ref("tag")
	if err != nil {
		return nil, err
	}
	if err := checkEvent(c); err != nil {
		return nil, err
	}
	reverse, err := c.Bool("reverse")
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(c.Extra()))
	for k := range c.Extra() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		raw := c.Extra()[k]
		if k == "stops" || k == "jumps" {
			var v any
			_ = json.Unmarshal(raw, &v)
			if bus.PyTruthy(v) {
				return nil, bus.ParameterError("%s option has been removed since 1.26", k)
			}
			continue
		}
		return nil, bus.ParameterError("getFullInheritance() got an unexpected keyword argument '%s'", k)
	}
	out := []bus.FullInheritanceLink{}
	err = s.store.Read(func(v state.View) error {
		id := ref.ID
		if !ref.IsID() {
			t, err := getTagIDStrict(v, ref)
			if err != nil {
				return err
			}
			id = t.ID
		}
		for _, l := range readFullInheritance(v, id, reverse) {
			e := bus.FullInheritanceLink{
				ParentID: l.ParentID, Priority: l.Priority, MaxDepth: l.MaxDepth, Intransitive: l.Intransitive,
				NoConfig: l.NoConfig, PkgFilter: l.PkgFilter, CurrDepth: l.CurrDepth, NextDepth: l.NextDepth, Filter: l.Filter,
			}
			if e.Filter == nil {
				e.Filter = []string{}
			}
			if reverse {
				id := l.TagID
				e.TagID = &id
				e.ParentID = l.ParentID
			} else {
				id := l.ChildID
				e.ChildID = &id
			}
			if named, ok := tagByID(v, l.ID); ok {
				e.Name = named.Name
			}
			out = append(out, e)
		}
		return nil
	})
	return out, err
}
