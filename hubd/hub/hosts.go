package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Keys of the host part of the state bucket.
//
//	host.<id>                       hostRecord (getHost's fields plus scheduler data)
//	hostname.<name>                 host id
//	hostchannel.<host id>.<chan id> true: the host is subscribed to the channel (host_channels)
//	seq.host                        the host id sequence
//
// A host is also a user (usertype HOST) whose userRecord.HostID is the host
// id, so that logging in as that user opens a host session.

type hostRecord struct {
	bus.Host
	// Data is what the builder last reported in host.updateHost(data=...) (Koji's scheduler host data).
	Data map[string]any `json:"data,omitempty"`
}

func hostKey(id int64) string        { return "host." + strconv.FormatInt(id, 10) }
func hostNameKey(name string) string { return "hostname." + state.EscapeKey(name) }
func hostChannelKey(hostID, chanID int64) string {
	return "hostchannel." + strconv.FormatInt(hostID, 10) + "." + strconv.FormatInt(chanID, 10)
}

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerHosts) }

// refText renders an id-or-name argument as Python's '%s' would.
func refText(r registry.Ref) string { return refValue(r) }

// lookupHost resolves a host by id or name inside a view.
func lookupHost(v state.View, ref registry.Ref) (*hostRecord, bool) {
	id := ref.ID
	if !ref.IsID() {
		if ok, err := v.GetJSON(hostNameKey(ref.Name), &id); !ok || err != nil {
			return nil, false
		}
	}
	var h hostRecord
	if ok, err := v.GetJSON(hostKey(id), &h); !ok || err != nil {
		return nil, false
	}
	return &h, true
}

// hostChannelIDs returns the ids of the channels a host is subscribed to, sorted.
func hostChannelIDs(v state.View, hostID int64) []int64 {
	prefix := "hostchannel." + strconv.FormatInt(hostID, 10) + "."
	var ids []int64
	for _, k := range v.Keys("hostchannel", prefix) {
		if id, err := strconv.ParseInt(strings.TrimPrefix(k, prefix), 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// forEachHost calls fn with every host record.
func forEachHost(v state.View, fn func(*hostRecord)) {
	for _, k := range v.Keys("host", "host.") {
		var h hostRecord
		if ok, _ := v.GetJSON(k, &h); ok {
			fn(&h)
		}
	}
}

func hostInChannel(v state.View, hostID, chanID int64) bool {
	_, _, ok := v.Get(hostChannelKey(hostID, chanID))
	return ok
}

var hostArchRE = regexp.MustCompile(`^[a-zA-Z0-9_\-]*$`)

// parseArches is koji.parse_arches(strict=True) for a list of arches.
func parseHostArches(arches []string) (string, error) {
	var out []string
	for _, a := range arches {
		for _, f := range strings.Fields(a) {
			if !hostArchRE.MatchString(f) {
				return "", bus.GenericError("Architecture can be only [a-zA-Z0-9_-]")
			}
			out = append(out, f)
		}
	}
	return strings.Join(out, " "), nil
}

func hostEventProps(kind string, h *bus.Host) map[string]any {
	return map[string]any{"type": kind, "host": h.Name, "host_id": h.ID}
}

func (s *Server) registerHosts() {
	s.reg.Register(
		registry.Method{
			Name: "addHost", Doc: "Add a builder host to the database; it is subscribed to the default channel. Returns the host id",
			Params: []registry.Param{registry.P("hostname"), registry.P("arches"), registry.Opt("krb_principal", nil), registry.Opt("force", false)},
			Perm:   "host", Write: true,
			Handler: s.addHost,
		},
		registry.Method{
			Name: "createHostCredentials", Doc: "kojibus: set a fresh random password on a host's user and return what builderd needs to log in as the host",
			Params: []registry.Param{registry.P("hostname")},
			Perm:   "host", Write: true,
			Handler: s.createHostCredentials,
		},
		registry.Method{
			Name: "editHost", Doc: "Edit a host: arches (space-separated), capacity, description, comment, name. Returns True if something changed",
			Params: []registry.Param{registry.P("hostInfo")}, VarKw: "kw",
			Perm: "host", Write: true,
			Handler: s.editHost,
		},
		registry.Method{
			Name: "enableHost", Doc: "Mark a host as enabled", Params: []registry.Param{registry.P("hostname")},
			Perm: "host", Write: true,
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return s.setHostEnabled(ctx, c, true) },
		},
		registry.Method{
			Name: "disableHost", Doc: "Mark a host as disabled", Params: []registry.Param{registry.P("hostname")},
			Perm: "host", Write: true,
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return s.setHostEnabled(ctx, c, false) },
		},
		registry.Method{
			Name: "getHost", Doc: "Get information about a host (by id or name)",
			Params:  []registry.Param{registry.P("hostInfo"), registry.Opt("strict", false), registry.Opt("event", nil)},
			Handler: s.getHost,
		},
		registry.Method{
			Name: "listHosts", Doc: "List builder hosts",
			Params: []registry.Param{registry.Opt("arches", nil), registry.Opt("channelID", nil), registry.Opt("ready", nil),
				registry.Opt("enabled", nil), registry.Opt("userID", nil), registry.Opt("queryOpts", nil)},
			Handler: s.listHosts,
		},
		registry.Method{
			Name: "addHostToChannel", Doc: "Add a host to a channel (create=True makes the channel if missing)",
			Params: []registry.Param{registry.P("hostname"), registry.P("channel_name"), registry.Opt("create", false), registry.Opt("force", false)},
			Perm:   "host", Write: true,
			Handler: s.addHostToChannel,
		},
		registry.Method{
			Name: "removeHostFromChannel", Doc: "Remove a host from a channel",
			Params: []registry.Param{registry.P("hostname"), registry.P("channel_name")},
			Perm:   "host", Write: true,
			Handler: s.removeHostFromChannel,
		},
		registry.Method{
			Name: "host.getID", Doc: "Return the id of the calling host", Access: registry.HostOnly,
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return c.Caller.HostID, nil },
		},
		registry.Method{
			Name: "host.getHost", Doc: "Return information about the calling host", Access: registry.HostOnly,
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				var out *bus.Host
				err := s.store.Read(func(v state.View) error {
					h, ok := lookupHost(v, registry.Ref{ID: c.Caller.HostID})
					if !ok {
						return bus.GenericError("Invalid hostInfo: %d", c.Caller.HostID)
					}
					out = &h.Host
					return nil
				})
				return out, err
			},
		},
		registry.Method{
			Name: "host.updateHost", Doc: "Update the calling host's load and readiness (and its data for the scheduler)",
			Params: []registry.Param{registry.P("task_load"), registry.P("ready"), registry.Opt("data", nil)},
			Access: registry.HostOnly, Write: true,
			Handler: s.hostUpdateHost,
		},
	)
}

func (s *Server) addHost(ctx context.Context, c *registry.Call) (any, error) {
	name, err := c.String("hostname")
	if err != nil {
		return nil, err
	}
	archList, err := c.Strings("arches")
	if err != nil {
		return nil, err
	}
	krb, err := c.OptString("krb_principal")
	if err != nil {
		return nil, err
	}
	force, err := c.Bool("force")
	if err != nil {
		return nil, err
	}
	if err := validateName(name, "host"); err != nil {
		return nil, err
	}
	arches, err := parseHostArches(archList)
	if err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		if _, ok := lookupHost(tx.View, registry.Ref{Name: name}); ok {
			return nil, bus.GenericError("host already exists: %s", name)
		}
		defaultChan, ok := lookupChannel(tx.View, registry.Ref{Name: "default"})
		if !ok {
			return nil, bus.GenericError("no default channel")
		}
		u, exists := lookupUser(tx.View, registry.Ref{Name: name})
		if exists {
			if u.UserType != bus.UserTypeHost {
				if !force || u.UserType != bus.UserTypeNormal {
					return nil, bus.GenericError("user %s already exists and it is not a host", name)
				}
				u.UserType = bus.UserTypeHost
			}
		} else {
			if u, err = createUserTx(tx, name, bus.UserTypeHost, "", nil); err != nil {
				return nil, err
			}
		}
		if krb != nil && *krb != "" {
			has := false
			for _, p := range u.KrbPrincipals {
				has = has || p == *krb
			}
			if !has {
				u.KrbPrincipals = append(u.KrbPrincipals, *krb)
			}
		}
		h := &hostRecord{Host: bus.Host{
			ID: tx.NextID("host"), UserID: u.ID, Name: name, Arches: arches, Capacity: 2.0, Enabled: true,
		}}
		u.HostID = h.ID
		if err := tx.Put(userKey(u.ID), u); err != nil {
			return nil, err
		}
		if err := tx.Put(hostKey(h.ID), h); err != nil {
			return nil, err
		}
		if err := tx.Put(hostNameKey(name), h.ID); err != nil {
			return nil, err
		}
		if err := tx.Put(hostChannelKey(h.ID, defaultChan.ID), true); err != nil {
			return nil, err
		}
		tx.Emit("host.add", hostEventProps("HostAdd", &h.Host),
			map[string]any{"host": h.Host, "user": u.User, "channels": []string{defaultChan.Name}, "by": c.Caller.UserName})
		return h.ID, nil
	})
}

func (s *Server) createHostCredentials(ctx context.Context, c *registry.Call) (any, error) {
	name, err := c.String("hostname")
	if err != nil {
		return nil, err
	}
	password := bus.RandomSecret(24)
	hash, err := hashPassword(password)
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		h, ok := lookupHost(tx.View, registry.Ref{Name: name})
		if !ok {
			return nil, bus.GenericError("host does not exist: %s", name)
		}
		u, ok := lookupUser(tx.View, registry.Ref{ID: h.UserID})
		if !ok {
			return nil, bus.GenericError("host %s has no user", name)
		}
		u.PasswordHash = string(hash)
		u.HostID = h.ID
		if err := tx.Put(userKey(u.ID), u); err != nil {
			return nil, err
		}
		tx.Emit("host.credentials", hostEventProps("HostCredentials", &h.Host), map[string]any{"host": h.Host, "by": c.Caller.UserName})
		return nil, nil
	})
	if err != nil {
		return nil, err
	}
	// The new password is also the host's NATS identity: connections with the
	// old one are closed and refused from now on.
	s.disconnectIdentity(name)
	return &bus.HostCredentials{Host: name, User: name, Password: password, Server: s.URL()}, nil
}

// decodeKw decodes one **kw argument; ok is false when it was not given.
func decodeHostKw(c *registry.Call, name string, out any) (bool, error) {
	raw, ok := c.Extra()[name]
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return true, bus.ParameterError("%s(): parameter '%s' has the wrong type", c.Method.Name, name)
	}
	return true, nil
}

func eqStrPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func (s *Server) editHost(ctx context.Context, c *registry.Call) (any, error) {
	ref, err := c.Ref("hostInfo")
	if err != nil {
		return nil, err
	}
	var arches, desc, comment, name *string
	var capacity *float64
	for _, kw := range []struct {
		name string
		out  any
	}{{"arches", &arches}, {"description", &desc}, {"comment", &comment}, {"name", &name}, {"capacity", &capacity}} {
		if _, err := decodeHostKw(c, kw.name, kw.out); err != nil {
			return nil, err
		}
	}
	if arches != nil {
		norm, err := parseHostArches([]string{*arches})
		if err != nil {
			return nil, err
		}
		arches = &norm
	}
	if name != nil {
		if err := validateName(*name, "host"); err != nil {
			return nil, err
		}
	}
	if capacity != nil && *capacity < 0 {
		return nil, bus.ParameterError("editHost(): capacity must not be negative")
	}
	has := func(k string) bool { _, ok := c.Extra()[k]; return ok }
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		h, ok := lookupHost(tx.View, ref)
		if !ok {
			return nil, bus.GenericError("Invalid hostInfo: %s", refText(ref))
		}
		old := h.Host
		var changes []string
		if arches != nil && *arches != h.Arches {
			h.Arches, changes = *arches, append(changes, "arches")
		}
		if capacity != nil && *capacity != h.Capacity {
			h.Capacity, changes = *capacity, append(changes, "capacity")
		}
		if has("description") && !eqStrPtr(desc, h.Description) {
			h.Description, changes = desc, append(changes, "description")
		}
		if has("comment") && !eqStrPtr(comment, h.Comment) {
			h.Comment, changes = comment, append(changes, "comment")
		}
		if name != nil && *name != h.Name {
			if _, taken := lookupHost(tx.View, registry.Ref{Name: *name}); taken {
				return nil, bus.GenericError("host already exists: %s", *name)
			}
			if _, taken := lookupUser(tx.View, registry.Ref{Name: *name}); taken {
				return nil, bus.GenericError("user already exists: %s", *name)
			}
			u, ok := lookupUser(tx.View, registry.Ref{ID: h.UserID})
			if ok {
				tx.Delete(userNameKey(u.Name))
				u.Name = *name
				if err := tx.Put(userKey(u.ID), u); err != nil {
					return nil, err
				}
				if err := tx.Put(userNameKey(u.Name), u.ID); err != nil {
					return nil, err
				}
			}
			tx.Delete(hostNameKey(h.Name))
			h.Name = *name
			if err := tx.Put(hostNameKey(h.Name), h.ID); err != nil {
				return nil, err
			}
			changes = append(changes, "name")
		}
		if len(changes) == 0 {
			return false, nil
		}
		if err := tx.Put(hostKey(h.ID), h); err != nil {
			return nil, err
		}
		tx.Emit("host.edit", hostEventProps("HostEdit", &h.Host),
			map[string]any{"host": h.Host, "old": old, "changes": changes, "by": c.Caller.UserName})
		return true, nil
	})
}

func (s *Server) setHostEnabled(ctx context.Context, c *registry.Call, enabled bool) (any, error) {
	name, err := c.String("hostname")
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		h, ok := lookupHost(tx.View, registry.Ref{Name: name})
		if !ok {
			return nil, bus.GenericError("host does not exist: %s", name)
		}
		if h.Enabled == enabled {
			return nil, nil
		}
		h.Enabled = enabled
		if err := tx.Put(hostKey(h.ID), h); err != nil {
			return nil, err
		}
		address, kind := "host.enable", "HostEnable"
		if !enabled {
			address, kind = "host.disable", "HostDisable"
		}
		tx.Emit(address, hostEventProps(kind, &h.Host), map[string]any{"host": h.Host, "by": c.Caller.UserName})
		return nil, nil
	})
	if err == nil && !enabled {
		s.disconnectIdentity(name) // the callout refuses a disabled host's reconnect
	}
	return nil, err
}

func (s *Server) getHost(ctx context.Context, c *registry.Call) (any, error) {
	ref, err := c.Ref("hostInfo")
	if err != nil {
		return nil, err
	}
	strict, err := c.Bool("strict")
	if err != nil {
		return nil, err
	}
	if _, err := c.OptInt("event"); err != nil {
		return nil, err
	}
	var out *bus.Host
	_ = s.store.Read(func(v state.View) error {
		if h, ok := lookupHost(v, ref); ok {
			out = &h.Host
		}
		return nil
	})
	if out == nil && strict {
		return nil, bus.GenericError("Invalid hostInfo: %s", refText(ref))
	}
	return out, nil
}

func (s *Server) listHosts(ctx context.Context, c *registry.Call) (any, error) {
	var archRx *regexp.Regexp
	if !c.IsNull("arches") {
		arches, err := c.Strings("arches")
		if err != nil {
			return nil, err
		}
		if len(arches) == 0 || (len(arches) == 1 && arches[0] == "") {
			return nil, bus.GenericError("arches option cannot be empty")
		}
		quoted := make([]string, len(arches))
		for i, a := range arches {
			quoted[i] = regexp.QuoteMeta(a)
		}
		// Koji's \m(a|b)\M: whole words, so 'ppc' does not match 'ppc64'.
		archRx = regexp.MustCompile(`(^|[^A-Za-z0-9_])(` + strings.Join(quoted, "|") + `)($|[^A-Za-z0-9_])`)
	}
	chanRef, err := c.OptRef("channelID")
	if err != nil {
		return nil, err
	}
	ready, err := c.OptBool("ready")
	if err != nil {
		return nil, err
	}
	enabled, err := c.OptBool("enabled")
	if err != nil {
		return nil, err
	}
	userRef, err := c.OptRef("userID")
	if err != nil {
		return nil, err
	}
	qo, err := readQueryOpts(c, "queryOpts")
	if err != nil {
		return nil, err
	}
	var out []bus.Host
	err = s.store.Read(func(v state.View) error {
		var chanID, userID int64
		if chanRef != nil {
			ch, ok := lookupChannel(v, *chanRef)
			if !ok {
				return bus.GenericError("No such channel: %s", refText(*chanRef))
			}
			chanID = ch.ID
		}
		if userRef != nil {
			u, ok := lookupUser(v, *userRef)
			if !ok {
				return bus.GenericError("No such user: %s", *userRef)
			}
			userID = u.ID
		}
		forEachHost(v, func(h *hostRecord) {
			switch {
			case archRx != nil && !archRx.MatchString(h.Arches),
				chanRef != nil && !hostInChannel(v, h.ID, chanID),
				ready != nil && h.Ready != *ready,
				enabled != nil && h.Enabled != *enabled,
				userRef != nil && h.UserID != userID:
				return
			}
			out = append(out, h.Host)
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortByID(out, func(h bus.Host) int64 { return h.ID })
	if out == nil {
		out = []bus.Host{}
	}
	return applyListOpts(out, qo)
}

func (s *Server) addHostToChannel(ctx context.Context, c *registry.Call) (any, error) {
	hostname, err := c.String("hostname")
	if err != nil {
		return nil, err
	}
	chanName, err := c.String("channel_name")
	if err != nil {
		return nil, err
	}
	create, err := c.Bool("create")
	if err != nil {
		return nil, err
	}
	force, err := c.Bool("force")
	if err != nil {
		return nil, err
	}
	if create {
		if err := validateName(chanName, "channel"); err != nil {
			return nil, err
		}
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		h, ok := lookupHost(tx.View, registry.Ref{Name: hostname})
		if !ok {
			return nil, bus.GenericError("host does not exist: %s", hostname)
		}
		ch, ok := lookupChannel(tx.View, registry.Ref{Name: chanName})
		created := false
		if !ok {
			if !create {
				return nil, bus.GenericError("channel does not exist: %s", chanName)
			}
			var err error
			if ch, err = putChannel(tx, chanName, nil); err != nil {
				return nil, err
			}
			created = true
		}
		if !force && !ch.Enabled {
			return nil, bus.GenericError("channel %s is disabled", chanName)
		}
		if hostInChannel(tx.View, h.ID, ch.ID) {
			return nil, bus.GenericError("host %s is already subscribed to the %s channel", hostname, chanName)
		}
		if err := tx.Put(hostChannelKey(h.ID, ch.ID), true); err != nil {
			return nil, err
		}
		props := hostEventProps("HostChannelAdd", &h.Host)
		props["channel"] = ch.Name
		tx.Emit("host.channel.add", props, map[string]any{"host": h.Host, "channel": ch, "created": created, "by": c.Caller.UserName})
		return nil, nil
	})
	return nil, err
}

func (s *Server) removeHostFromChannel(ctx context.Context, c *registry.Call) (any, error) {
	hostname, err := c.String("hostname")
	if err != nil {
		return nil, err
	}
	chanName, err := c.String("channel_name")
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		h, ok := lookupHost(tx.View, registry.Ref{Name: hostname})
		if !ok {
			return nil, bus.GenericError("host does not exist: %s", hostname)
		}
		ch, ok := lookupChannel(tx.View, registry.Ref{Name: chanName})
		if !ok {
			return nil, bus.GenericError("channel does not exist: %s", chanName)
		}
		if !hostInChannel(tx.View, h.ID, ch.ID) {
			return nil, bus.GenericError("host %s is not subscribed to the %s channel", hostname, chanName)
		}
		tx.Delete(hostChannelKey(h.ID, ch.ID))
		props := hostEventProps("HostChannelRemove", &h.Host)
		props["channel"] = ch.Name
		tx.Emit("host.channel.remove", props, map[string]any{"host": h.Host, "channel": ch, "by": c.Caller.UserName})
		return nil, nil
	})
	return nil, err
}

func (s *Server) hostUpdateHost(ctx context.Context, c *registry.Call) (any, error) {
	load, err := c.Float("task_load")
	if err != nil {
		return nil, err
	}
	ready, err := c.Bool("ready")
	if err != nil {
		return nil, err
	}
	data, err := c.Map("data")
	if err != nil {
		return nil, err
	}
	now := nowTS()
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		h, ok := lookupHost(tx.View, registry.Ref{ID: c.Caller.HostID})
		if !ok {
			return nil, bus.GenericError("Invalid hostInfo: %d", c.Caller.HostID)
		}
		wasReady := h.Ready
		h.TaskLoad, h.Ready, h.UpdateTS = load, ready, &now
		if data != nil {
			h.Data = data
		}
		if err := tx.Put(hostKey(h.ID), h); err != nil {
			return nil, err
		}
		if err := requeueLostRuns(tx, h.ID, data, now); err != nil {
			return nil, err
		}
		// host.ready when readiness flips (what a scheduler waits for), host.update otherwise.
		address, kind := "host.update", "HostUpdate"
		if wasReady != ready {
			address, kind = "host.ready", "HostReady"
		}
		props := hostEventProps(kind, &h.Host)
		props["ready"], props["task_load"] = ready, load
		tx.Emit(address, props, map[string]any{"host": h.Host, "data": data})
		return nil, nil
	})
	return nil, err
}

// lostRunGrace keeps a task opened just now, but not yet in the builder's
// list when it sent its heartbeat, from being taken back.
const lostRunGrace = 30.0 // seconds

// requeueLostRuns gives back tasks the hub has OPEN on a host that reports
// (data["tasks"]) it does not run them: the builder lost them (a result it
// could never deliver, a restart). They are dispatched again under a new attempt.
func requeueLostRuns(tx *state.Txn, hostID int64, data map[string]any, now float64) error {
	list, ok := data["tasks"].([]any)
	if !ok {
		return nil // a builder that does not report its tasks
	}
	running := map[string]bool{}
	for _, v := range list {
		running[fmt.Sprint(v)] = true
	}
	for _, t := range hostTasks(tx.View, hostID) {
		if t.State != bus.TaskOpen || running[strconv.FormatInt(t.ID, 10)] || t.StartTS == nil || now-*t.StartTS < lostRunGrace {
			continue
		}
		if err := requeueTx(tx, t); err != nil {
			return err
		}
	}
	return nil
}
