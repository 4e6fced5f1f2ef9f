package hub

import (
	"context"
	"strconv"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

//	channel.<id>         bus.Channel
//	channelname.<name>   channel id
//	seq.channel          the channel id sequence
//
// Which hosts are in which channel: hostchannel.<host id>.<channel id> (hosts.go).

// schemaChannels are the channels Koji's schema creates (no runroot: the
// runroot plugin's channel is made by the admin).
var schemaChannels = []string{"default", "createrepo", "maven", "livecd", "appliance", "vm", "image", "livemedia"}

func channelKey(id int64) string        { return "channel." + strconv.FormatInt(id, 10) }
func channelNameKey(name string) string { return "channelname." + state.EscapeKey(name) }

func putChannel(tx *state.Txn, name string, desc *string) (*bus.Channel, error) {
	ch := &bus.Channel{ID: tx.NextID("channel"), Name: name, Description: desc, Enabled: true}
	if err := tx.Put(channelKey(ch.ID), ch); err != nil {
		return nil, err
	}
	return ch, tx.Put(channelNameKey(name), ch.ID)
}

func seedChannels(tx *state.Txn) error {
	for _, name := range schemaChannels {
		if _, _, ok := tx.Get(channelNameKey(name)); ok {
			continue
		}
		if _, err := putChannel(tx, name, nil); err != nil {
			return err
		}
	}
	return nil
}

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerChannels) }

// lookupChannel resolves a channel by id or name inside a view.
func lookupChannel(v state.View, ref registry.Ref) (*bus.Channel, bool) {
	id := ref.ID
	if !ref.IsID() {
		if ok, err := v.GetJSON(channelNameKey(ref.Name), &id); !ok || err != nil {
			return nil, false
		}
	}
	var ch bus.Channel
	if ok, err := v.GetJSON(channelKey(id), &ch); !ok || err != nil {
		return nil, false
	}
	return &ch, true
}

func channelProps(kind string, ch *bus.Channel) map[string]any {
	return map[string]any{"type": kind, "channel": ch.Name, "channel_id": ch.ID}
}

func (s *Server) registerChannels() {
	s.reg.Register(
		registry.Method{
			Name: "addChannel", Doc: "Add a channel; returns its id",
			Params: []registry.Param{registry.P("channel_name"), registry.Opt("description", nil)},
			Perm:   "admin", Write: true,
			Handler: s.addChannel,
		},
		registry.Method{
			Name: "editChannel", Doc: "Edit a channel: name, description, comment. Returns True if something changed",
			Params: []registry.Param{registry.P("channelInfo")}, VarKw: "kw",
			Perm: "admin", Write: true,
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("channelInfo")
				if err != nil {
					return nil, err
				}
				var name, desc, comment *string
				for _, kw := range []struct {
					name string
					out  **string
				}{{"name", &name}, {"description", &desc}, {"comment", &comment}} {
					if _, err := decodeHostKw(c, kw.name, kw.out); err != nil {
						return nil, err
					}
				}
				_, hasDesc := c.Extra()["description"]
				_, hasComment := c.Extra()["comment"]
				return s.editChannel(ctx, c, ref, name, desc, hasDesc, comment, hasComment)
			},
		},
		registry.Method{
			Name: "renameChannel", Doc: "Rename a channel",
			Params: []registry.Param{registry.P("old"), registry.P("new")},
			Perm:   "admin", Write: true,
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				old, err := c.String("old")
				if err != nil {
					return nil, err
				}
				name, err := c.String("new")
				if err != nil {
					return nil, err
				}
				_, err = s.editChannel(ctx, c, registry.Ref{Name: old}, &name, nil, false, nil, false)
				return nil, err
			},
		},
		registry.Method{
			Name: "enableChannel", Doc: "Mark a channel as enabled",
			Params: []registry.Param{registry.P("channelname"), registry.Opt("comment", nil)},
			Perm:   "host", Write: true,
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return s.setChannelEnabled(ctx, c, true) },
		},
		registry.Method{
			Name: "disableChannel", Doc: "Mark a channel as disabled",
			Params: []registry.Param{registry.P("channelname"), registry.Opt("comment", nil)},
			Perm:   "host", Write: true,
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return s.setChannelEnabled(ctx, c, false) },
		},
		registry.Method{
			Name: "getChannel", Doc: "Look up a channel by id or name",
			Params: []registry.Param{registry.P("channelInfo"), registry.Opt("strict", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("channelInfo")
				if err != nil {
					return nil, err
				}
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				var out *bus.Channel
				_ = s.store.Read(func(v state.View) error {
					out, _ = lookupChannel(v, ref)
					return nil
				})
				if out == nil && strict {
					return nil, bus.GenericError("No such channel: %s", refText(ref))
				}
				return out, nil
			},
		},
		registry.Method{
			Name: "listChannels", Doc: "List channels, or the channels of a host",
			Params:  []registry.Param{registry.Opt("hostID", nil), registry.Opt("event", nil), registry.Opt("enabled", nil)},
			Handler: s.listChannels,
		},
	)
}

func (s *Server) addChannel(ctx context.Context, c *registry.Call) (any, error) {
	name, err := c.String("channel_name")
	if err != nil {
		return nil, err
	}
	desc, err := c.OptString("description")
	if err != nil {
		return nil, bus.GenericError("Channel description must be a string")
	}
	if err := validateName(name, "channel"); err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		if dup, ok := lookupChannel(tx.View, registry.Ref{Name: name}); ok {
			return nil, bus.GenericError("channel %s already exists (id=%d)", dup.Name, dup.ID)
		}
		ch, err := putChannel(tx, name, desc)
		if err != nil {
			return nil, err
		}
		tx.Emit("channel.add", channelProps("ChannelAdd", ch), map[string]any{"channel": ch, "by": c.Caller.UserName})
		return ch.ID, nil
	})
}

func (s *Server) editChannel(ctx context.Context, c *registry.Call, ref registry.Ref, name, desc *string, hasDesc bool, comment *string, hasComment bool) (any, error) {
	if name != nil {
		if err := validateName(*name, "channel"); err != nil {
			return nil, err
		}
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		ch, ok := lookupChannel(tx.View, ref)
		if !ok {
			return nil, bus.GenericError("No such channel: %s", refText(ref))
		}
		old := *ch
		var changes []string
		if hasDesc && !eqStrPtr(desc, ch.Description) {
			ch.Description, changes = desc, append(changes, "description")
		}
		if hasComment && !eqStrPtr(comment, ch.Comment) {
			ch.Comment, changes = comment, append(changes, "comment")
		}
		if name != nil && *name != ch.Name {
			if dup, ok := lookupChannel(tx.View, registry.Ref{Name: *name}); ok {
				return nil, bus.GenericError("channel %s already exists (id=%d)", dup.Name, dup.ID)
			}
			tx.Delete(channelNameKey(ch.Name))
			ch.Name = *name
			if err := tx.Put(channelNameKey(ch.Name), ch.ID); err != nil {
				return nil, err
			}
			changes = append(changes, "name")
		}
		if len(changes) == 0 {
			return false, nil
		}
		if err := tx.Put(channelKey(ch.ID), ch); err != nil {
			return nil, err
		}
		tx.Emit("channel.edit", channelProps("ChannelEdit", ch), map[string]any{"channel": ch, "old": old, "changes": changes, "by": c.Caller.UserName})
		return true, nil
	})
}

func (s *Server) setChannelEnabled(ctx context.Context, c *registry.Call, enabled bool) (any, error) {
	name, err := c.String("channelname")
	if err != nil {
		return nil, err
	}
	comment, err := c.OptString("comment")
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		ch, ok := lookupChannel(tx.View, registry.Ref{Name: name})
		if !ok {
			return nil, bus.GenericError("No such channel: %s", name)
		}
		if ch.Enabled == enabled && (comment == nil || eqStrPtr(comment, ch.Comment)) {
			return nil, nil
		}
		old := *ch
		ch.Enabled = enabled
		if comment != nil {
			ch.Comment = comment
		}
		if err := tx.Put(channelKey(ch.ID), ch); err != nil {
			return nil, err
		}
		changes := []string{"enabled"}
		if comment != nil {
			changes = append(changes, "comment")
		}
		tx.Emit("channel.edit", channelProps("ChannelEdit", ch), map[string]any{"channel": ch, "old": old, "changes": changes, "by": c.Caller.UserName})
		return nil, nil
	})
	return nil, err
}

func (s *Server) listChannels(ctx context.Context, c *registry.Call) (any, error) {
	hostRef, err := c.OptRef("hostID")
	if err != nil {
		return nil, err
	}
	if _, err := c.OptInt("event"); err != nil {
		return nil, err
	}
	enabled, err := c.OptBool("enabled")
	if err != nil {
		return nil, err
	}
	out := []bus.Channel{}
	err = s.store.Read(func(v state.View) error {
		var ids []int64
		if hostRef != nil && !(hostRef.IsID() && hostRef.ID == 0) {
			hostID := hostRef.ID
			if !hostRef.IsID() {
				h, ok := lookupHost(v, *hostRef)
				if !ok {
					return bus.GenericError("Invalid hostInfo: %s", hostRef.Name)
				}
				hostID = h.ID
			}
			ids = hostChannelIDs(v, hostID)
		} else {
			for _, k := range v.Keys("channel", "channel.") {
				if id, err := strconv.ParseInt(k[len("channel."):], 10, 64); err == nil {
					ids = append(ids, id)
				}
			}
		}
		for _, id := range ids {
			ch, ok := lookupChannel(v, registry.Ref{ID: id})
			if !ok || (enabled != nil && ch.Enabled != *enabled) {
				continue
			}
			out = append(out, *ch)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortByID(out, func(ch bus.Channel) int64 { return ch.ID })
	return out, nil
}
