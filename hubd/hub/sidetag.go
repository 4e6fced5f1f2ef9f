package hub

// The sidetag plugin (Koji's sidetag_hub): short-lived build tags for
// developers, enabled by hub.conf's `Plugins = sidetag_hub` and configured
// by sidetag.conf. A sidetag is a tag with extra sidetag, sidetag_user,
// sidetag_user_id (and with_debuginfo), one inheritance link to its base
// tag, the base tag's arches, and a target of the same name building into
// itself.
//
//	sidetags<user id>.<tag id>   sidetagRecord: a user's live sidetags, one key kind per user so
//	                             that counting them (the sidetag policy's number_of_tags) reads
//	                             only that user's keys

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
	"github.com/kojibus/kojibus/hubd/internal/policy"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerSidetag) }

// sidetagConfig is sidetag.conf's [sidetag] section.
type sidetagConfig struct {
	RemoveEmpty     bool
	AllowedSuffixes []string
	NameTemplate    string
	TriggerNewRepo  bool
	// Clean-up in the hub (kojibus; Koji leaves it to koji-sidetag-cleanup):
	// off unless cleanup = true, then koji-sidetag-cleanup's defaults.
	Cleanup       bool
	EmptyDelay    time.Duration // an empty sidetag older than this goes (1 day)
	InactiveDelay time.Duration // no tagging for this long (10 days)
	MaxAge        time.Duration // any sidetag older than this (30 days)
}

type sidetagRecord struct {
	Created float64 `json:"created"`
}

type sidetagPlugin struct {
	cfg    sidetagConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func sidetagKind(uid int64) string { return "sidetags" + strconv.FormatInt(uid, 10) }

func sidetagUserKey(uid, tagID int64) string {
	return sidetagKind(uid) + "." + strconv.FormatInt(tagID, 10)
}

// allSidetags lists the sidetags (a scan of the tags: listing and clean-up only).
func allSidetags(v state.View) []*tagRecord {
	var out []*tagRecord
	for _, k := range v.Keys("tag", "tag.") {
		var t tagRecord
		if ok, _ := v.GetJSON(k, &t); ok && bus.PyTruthy(t.Extra["sidetag"]) {
			out = append(out, &t)
		}
	}
	return out
}

// loadSidetagConf reads sidetag.conf (a missing file gives the defaults).
func loadSidetagConf(path string) (sidetagConfig, error) {
	c := sidetagConfig{NameTemplate: "{basetag}-side-{tag_id}", EmptyDelay: 24 * time.Hour, InactiveDelay: 10 * 24 * time.Hour, MaxAge: 30 * 24 * time.Hour}
	f, err := config.Load(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	sec := f.Section("sidetag")
	if c.RemoveEmpty, err = sec.Bool("remove_empty", false); err != nil {
		return c, err
	}
	for _, s := range strings.Split(sec.String("allowed_suffixes", ""), ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.AllowedSuffixes = append(c.AllowedSuffixes, s)
		}
	}
	c.NameTemplate = sec.String("name_template", c.NameTemplate)
	if !strings.Contains(c.NameTemplate, "{basetag}") || !strings.Contains(c.NameTemplate, "{tag_id}") {
		return c, &config.ParseError{File: path, Line: sec.Line("name_template"), Msg: "[sidetag] name_template: must contain {basetag} and {tag_id}"}
	}
	if c.TriggerNewRepo, err = sec.Bool("trigger_new_repo", false); err != nil {
		return c, err
	}
	if c.Cleanup, err = sec.Bool("cleanup", false); err != nil {
		return c, err
	}
	for _, d := range []struct {
		key string
		out *time.Duration
	}{{"cleanup_empty_days", &c.EmptyDelay}, {"cleanup_inactive_days", &c.InactiveDelay}, {"cleanup_max_days", &c.MaxAge}} {
		days, err := sec.Float(d.key, d.out.Hours()/24)
		if err != nil {
			return c, err
		}
		if days <= 0 {
			return c, &config.ParseError{File: path, Line: sec.Line(d.key), Msg: fmt.Sprintf("[sidetag] %s: must be a positive number of days", d.key)}
		}
		*d.out = time.Duration(days * 24 * float64(time.Hour))
	}
	return c, nil
}

// loadPlugins reads the configuration of the enabled plugins.
func (s *Server) loadPlugins() error {
	if s.plugins["sidetag_hub"] || s.plugins["sidetag"] {
		dir := s.cfg.PluginConfigDir
		if dir == "" {
			dir = "/etc/koji-hub/plugins"
		}
		cfg, err := loadSidetagConf(filepath.Join(dir, "sidetag.conf"))
		if err != nil {
			return err
		}
		s.sidetag = &sidetagPlugin{cfg: cfg}
		if cfg.RemoveEmpty {
			s.untagHooks = append(s.untagHooks, s.removeEmptySidetag)
		}
	}
	return nil
}

func (s *Server) registerSidetag() {
	if s.sidetag == nil {
		return
	}
	s.reg.Register(
		registry.Method{
			Name: "createSideTag", Doc: "Create a sidetag of basetag for the caller: {name, id, task_id, request}", Write: true,
			Params:  []registry.Param{registry.P("basetag"), registry.Opt("debuginfo", false), registry.Opt("suffix", nil)},
			Handler: s.createSideTag,
		},
		registry.Method{
			Name: "removeSideTag", Doc: "Remove a sidetag (its owner or admin)", Access: registry.LoggedIn, Write: true,
			Params: []registry.Param{registry.P("sidetag")}, Handler: s.removeSideTag,
		},
		registry.Method{
			Name: "listSideTags", Doc: "List sidetags: [{id, name, user_id, user_name}]", Access: registry.LoggedIn,
			Params:  []registry.Param{registry.Opt("basetag", nil), registry.Opt("user", nil), registry.Opt("queryOpts", nil)},
			Handler: s.listSideTags,
		},
		registry.Method{
			Name: "editSideTag", Doc: "Edit a sidetag's debuginfo, rpm macros and extra", Access: registry.LoggedIn, Write: true,
			Params: []registry.Param{registry.P("sidetag"), registry.Opt("debuginfo", nil), registry.Opt("rpm_macros", nil),
				registry.Opt("remove_rpm_macros", nil), registry.Opt("extra", nil), registry.Opt("remove_extra", nil)},
			Handler: s.editSideTag,
		},
	)
}

// sidetagName is name_template.format(basetag=..., tag_id=...) plus -suffix.
func (p *sidetagPlugin) sidetagName(base string, id int64, suffix *string) string {
	name := strings.NewReplacer("{basetag}", base, "{tag_id}", strconv.FormatInt(id, 10)).Replace(p.cfg.NameTemplate)
	if suffix != nil {
		name += "-" + *suffix
	}
	return name
}

func (s *Server) createSideTag(ctx context.Context, c *registry.Call) (any, error) {
	base, err := c.Ref("basetag")
	if err != nil {
		return nil, err
	}
	debuginfo, err := c.Bool("debuginfo")
	if err != nil {
		return nil, err
	}
	suffix, err := c.OptString("suffix")
	if err != nil {
		return nil, err
	}
	if suffix != nil && !containsString(s.sidetag.cfg.AllowedSuffixes, *suffix) {
		return nil, bus.GenericError("%s suffix is not allowed for sidetag", *suffix)
	}
	if !c.LoggedIn() {
		return nil, bus.ActionNotAllowed("you must be logged in for this operation")
	}
	uid := c.Caller.UserID
	res, err := s.update(ctx, c, func(tx *state.Txn) (any, error) {
		bt, err := getTagStrict(tx.View, base)
		if err != nil {
			return nil, err
		}
		n := tx.Count(sidetagKind(uid), "")
		if err := s.assertPolicy(tx.View, "sidetag", policy.Data{"tag": bt.ID, "number_of_tags": int64(n), "user_id": uid}, c, false); err != nil {
			return nil, err
		}
		// The id in the name is the tag's own: taken in this transaction.
		id := tx.NextID("tag")
		name := s.sidetag.sidetagName(bt.Name, id, suffix)
		if err := verifyNameInternal(name); err != nil {
			return nil, err
		}
		extra := map[string]any{"sidetag": true, "sidetag_user": c.Caller.UserName, "sidetag_user_id": uid}
		if debuginfo {
			extra["with_debuginfo"] = true
		}
		t := &tagRecord{Tag: bus.Tag{ID: id, Name: name, Arches: bt.Arches, Extra: extra}}
		if err := s.createTagTx(tx, c, t, bt); err != nil {
			return nil, err
		}
		if _, exists := lookupTarget(tx.View, registry.Ref{Name: name}); exists {
			return nil, bus.GenericError("A build target with the name '%s' already exists", name)
		}
		target := &targetRecord{ID: tx.NextID("target"), Name: name, BuildTag: id, DestTag: id}
		if err := tx.Put(targetKey(target.ID), target); err != nil {
			return nil, err
		}
		if err := tx.Put(targetNameKey(name), target.ID); err != nil {
			return nil, err
		}
		s.emitTargetEvent(tx, c, "target.create", "TargetCreate",
			bus.BuildTarget{ID: target.ID, Name: name, BuildTag: id, BuildTagName: name, DestTag: id, DestTagName: name}, nil)
		if err := tx.Put(sidetagUserKey(uid, id), sidetagRecord{Created: nowTS()}); err != nil {
			return nil, err
		}
		tx.Emit("sidetag.create", map[string]any{"type": "SidetagCreate", "tag": name, "basetag": bt.Name, "user": c.Caller.UserName},
			map[string]any{"tag": t.info(), "basetag": bt.info(), "user": c.Caller.UserName})
		return map[string]any{"name": name, "id": id, "task_id": nil, "request": nil}, nil
	})
	if err != nil || !s.sidetag.cfg.TriggerNewRepo {
		return res, err
	}
	out, ok := res.(*state.Result)
	if !ok || out.Replayed {
		return res, nil
	}
	created := out.Value.(map[string]any)
	reqRes, err := s.update(ctx, &registry.Call{Caller: c.Caller}, func(tx *state.Txn) (any, error) {
		return createRepoRequest(tx, c, registry.Ref{ID: created["id"].(int64)}, nil, nil, nil, 10, false, false)
	})
	if err != nil {
		return nil, fmt.Errorf("sidetag %s created; repo request: %w", created["name"], err)
	}
	if rr, ok := reqRes.(*state.Result); ok {
		if r, ok := rr.Value.(*bus.RepoRequestResult); ok {
			created["request"] = r.Request
		}
	}
	return created, nil
}

// sidetagOf returns a sidetag and checks the caller may change it.
func sidetagOf(v state.View, c *registry.Call, ref registry.Ref) (*tagRecord, error) {
	t, err := getTagStrict(v, ref)
	if err != nil {
		return nil, err
	}
	if !bus.PyTruthy(t.Extra["sidetag"]) {
		return nil, bus.GenericError("Not a sidetag: %s", t.Name)
	}
	if idOf(t.Extra["sidetag_user_id"]) != c.Caller.UserID && !viewHasPerm(v, c.Caller.UserID, "admin", false) {
		return nil, bus.ActionNotAllowed("This is not your sidetag")
	}
	return t, nil
}

func (s *Server) removeSideTag(ctx context.Context, c *registry.Call) (any, error) {
	ref, err := c.Ref("sidetag")
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, err := sidetagOf(tx.View, c, ref)
		if err != nil {
			return nil, err
		}
		return nil, s.removeSidetagTx(tx, c, t, "removed")
	})
	return nil, err
}

// removeSidetagTx removes a sidetag: its builds are untagged with their
// events (Koji drops them), then its target and the tag go.
func (s *Server) removeSidetagTx(tx *state.Txn, c *registry.Call, t *tagRecord, why string) error {
	target, ok := lookupTarget(tx.View, registry.Ref{Name: t.Name})
	if !ok {
		return bus.GenericError("Target is missing for sidetag")
	}
	if target.BuildTag != t.ID || target.DestTag != t.ID {
		return bus.GenericError("Target does not match sidetag")
	}
	if err := untagBuildsTx(tx, c, t); err != nil {
		return err
	}
	if err := s.deleteTagTx(tx, c, t); err != nil {
		return err
	}
	tx.Delete(sidetagUserKey(idOf(t.Extra["sidetag_user_id"]), t.ID))
	tx.Emit("sidetag.remove", map[string]any{"type": "SidetagRemove", "tag": t.Name, "user": callerName(c), "reason": why},
		map[string]any{"tag": t.info(), "user": callerName(c), "reason": why})
	return nil
}

// removeEmptySidetag is remove_empty: after an untag, a sidetag left with no
// builds goes, in the same transaction.
func (s *Server) removeEmptySidetag(tx *state.Txn, c *registry.Call, t *tagRecord) error {
	if !bus.PyTruthy(t.Extra["sidetag"]) {
		return nil
	}
	for _, k := range tx.Keys("tagged", taggedPrefix(t.ID)) {
		if _, _, ok := tx.Get(k); ok && !tx.Deleted(k) {
			return nil
		}
	}
	return s.removeSidetagTx(tx, c, t, "empty")
}

type sidetagRow struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	UserID   string `json:"user_id"` // a string, as Koji returns it (from a JSON text column)
	UserName string `json:"user_name"`
}

func (s *Server) listSideTags(ctx context.Context, c *registry.Call) (any, error) {
	base, err := c.OptRef("basetag")
	if err != nil {
		return nil, err
	}
	user, err := c.OptRef("user")
	if err != nil {
		return nil, err
	}
	q, err := readQueryOpts(c, "queryOpts")
	if err != nil {
		return nil, err
	}
	rows := []sidetagRow{}
	err = s.store.Read(func(v state.View) error {
		var baseID, userID int64
		if base != nil {
			bt, err := getTagStrict(v, *base)
			if err != nil {
				return err
			}
			baseID = bt.ID
		}
		var tags []*tagRecord
		if user != nil {
			u, ok := lookupUser(v, *user)
			if !ok {
				return bus.GenericError("No such user: %s", refValue(*user))
			}
			userID = u.ID
			for _, k := range v.Keys(sidetagKind(userID), "") {
				tid, _ := strconv.ParseInt(k[strings.LastIndex(k, ".")+1:], 10, 64)
				if t, ok := tagByID(v, tid); ok {
					tags = append(tags, t)
				}
			}
		} else {
			tags = allSidetags(v)
		}
		for _, t := range tags {
			if baseID != 0 {
				linked := false
				for _, l := range readInheritance(v, t.ID) {
					linked = linked || l.ParentID == baseID
				}
				if !linked {
					continue
				}
			}
			rows = append(rows, sidetagRow{ID: t.ID, Name: t.Name, UserID: strconv.FormatInt(idOf(t.Extra["sidetag_user_id"]), 10),
				UserName: fmt.Sprint(t.Extra["sidetag_user"])})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	return applyListOpts(rows, q)
}

var macroNameRE = regexp.MustCompile(`^[A-Za-z_]`)

func (s *Server) editSideTag(ctx context.Context, c *registry.Call) (any, error) {
	ref, err := c.Ref("sidetag")
	if err != nil {
		return nil, err
	}
	debuginfo, err := c.OptBool("debuginfo")
	if err != nil {
		return nil, err
	}
	macros, err := c.Map("rpm_macros")
	if err != nil {
		return nil, err
	}
	removeMacros, err := c.Strings("remove_rpm_macros")
	if err != nil {
		return nil, err
	}
	extra, err := c.Map("extra")
	if err != nil {
		return nil, err
	}
	removeExtra, err := c.Strings("remove_extra")
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, err := sidetagOf(tx.View, c, ref)
		if err != nil {
			return nil, err
		}
		if (len(extra) > 0 || len(removeExtra) > 0) && !viewHasPerm(tx.View, c.Caller.UserID, "sidetag_admin", true) {
			return nil, bus.GenericError("Extra can be modified only with sidetag_admin or admin permissions.")
		}
		links := readInheritance(tx.View, t.ID)
		if len(links) == 0 {
			return nil, bus.GenericError("sidetag %s has no parent tag", t.Name)
		}
		parent, ok := tagByID(tx.View, links[0].ParentID)
		if !ok {
			return nil, bus.GenericError("sidetag %s has no parent tag", t.Name)
		}
		pconf := buildConfig(tx.View, parent)
		newExtra := map[string]any{}
		var drop []string
		if debuginfo != nil {
			if !bus.PyTruthy(pconf.Extra["sidetag_debuginfo_allowed"]) {
				return nil, bus.GenericError("Debuginfo setting is not allowed in parent tag.")
			}
			newExtra["with_debuginfo"] = *debuginfo
		}
		if len(macros) > 0 || len(removeMacros) > 0 {
			masks, err := allowedMacroMasks(parent.Name, pconf.Extra["sidetag_rpm_macros_allowed"])
			if err != nil {
				return nil, err
			}
			check := func(m string) error {
				if len(m) < 2 || !macroNameRE.MatchString(m) {
					return bus.GenericError("Invalid macro name %s", bus.PyStr(m))
				}
				if !policy.MatchAny(m, masks) {
					return bus.GenericError("RPM macro %s editing is not allowed via parent tag", m)
				}
				return nil
			}
			for m, val := range macros {
				if err := check(m); err != nil {
					return nil, err
				}
				newExtra["rpm.macro."+m] = val
			}
			for _, m := range removeMacros {
				if err := check(m); err != nil {
					return nil, err
				}
				drop = append(drop, "rpm.macro."+m)
			}
		}
		for k, val := range extra {
			newExtra[k] = val
		}
		drop = append(drop, removeExtra...) // all of the caller's removals (Koji drops remove_extra with remove_rpm_macros)
		if t.Extra == nil {
			t.Extra = map[string]any{}
		}
		for k, val := range newExtra {
			t.Extra[k] = val
		}
		for _, k := range drop {
			delete(t.Extra, k)
		}
		if err := s.hubConf.Limits.checkExtra("tag", t.Extra); err != nil {
			return nil, err
		}
		if err := putTag(tx, t); err != nil {
			return nil, err
		}
		if err := touchTag(tx, t.ID); err != nil {
			return nil, err
		}
		tx.Emit("sidetag.edit", map[string]any{"type": "SidetagEdit", "tag": t.Name, "user": callerName(c)},
			map[string]any{"tag": t.info(), "extra": newExtra, "remove_extra": drop, "user": callerName(c)})
		return nil, nil
	})
	return nil, err
}

// allowedMacroMasks reads sidetag_rpm_macros_allowed: a list, or a
// whitespace-separated string, of fnmatch masks.
func allowedMacroMasks(parent string, v any) ([]string, error) {
	var masks []string
	switch x := v.(type) {
	case nil:
	case string:
		masks = strings.Fields(x)
	case []any:
		for _, m := range x {
			s, ok := m.(string)
			if !ok {
				return nil, bus.GenericError("Allowed rpm macro list %v is invalid for %s.", v, parent)
			}
			masks = append(masks, s)
		}
	default:
		return nil, bus.GenericError("rpm_macros_allowed in %s has invalid type: %T", parent, v)
	}
	if len(masks) == 0 {
		return nil, bus.GenericError("RPM macros change is not allowed in parent tag.")
	}
	return masks, nil
}

// pyRepr is Python's repr of a string.

// startSidetagCleanup runs the clean-up Koji leaves to koji-sidetag-cleanup:
// empty sidetags after EmptyDelay, ones without tagging for InactiveDelay,
// any after MaxAge; each removal is an event (sidetag.remove, reason).
func (s *Server) startSidetagCleanup() {
	p := s.sidetag
	if p == nil || !p.cfg.Cleanup {
		return
	}
	every := min(p.cfg.EmptyDelay, p.cfg.InactiveDelay, p.cfg.MaxAge) / 4
	every = max(min(every, 10*time.Minute), 200*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := s.cleanSidetags(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("sidetag clean-up", "err", err)
				}
			}
		}
	}()
}

func (p *sidetagPlugin) stop() {
	if p != nil && p.cancel != nil {
		p.cancel()
		p.wg.Wait()
	}
}

// cleanSidetags removes the sidetags due, one transaction each.
func (s *Server) cleanSidetags(ctx context.Context) error {
	type due struct {
		id  int64
		why string
	}
	var todo []due
	now := nowTS()
	cfg := s.sidetag.cfg
	_ = s.store.Read(func(v state.View) error {
		for _, t := range allSidetags(v) {
			var rec sidetagRecord
			if ok, _ := v.GetJSON(sidetagUserKey(idOf(t.Extra["sidetag_user_id"]), t.ID), &rec); !ok {
				continue
			}
			tid := t.ID
			last := rec.Created
			builds := v.Keys("tagged", taggedPrefix(tid))
			for _, bk := range builds {
				var tr taggedRecord
				if ok, _ := v.GetJSON(bk, &tr); ok && tr.TS > last {
					last = tr.TS
				}
			}
			age := time.Duration((now - rec.Created) * float64(time.Second))
			idle := time.Duration((now - last) * float64(time.Second))
			switch {
			case len(builds) == 0 && age > cfg.EmptyDelay:
				todo = append(todo, due{tid, "empty"})
			case idle > cfg.InactiveDelay:
				todo = append(todo, due{tid, "inactive"})
			case age > cfg.MaxAge:
				todo = append(todo, due{tid, "old"})
			}
		}
		return nil
	})
	system := &registry.Call{}
	for _, d := range todo {
		_, err := s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
			t, ok := tagByID(tx.View, d.id)
			if !ok || !bus.PyTruthy(t.Extra["sidetag"]) {
				return nil, nil // gone meanwhile
			}
			return nil, s.removeSidetagTx(tx, system, t, d.why)
		})
		if err != nil {
			return err
		}
		s.log.Info("sidetag removed by clean-up", "tag", d.id, "reason", d.why)
	}
	return nil
}
