package hub

// The runroot plugin's hub part (Koji's runroot_hub): runroot() makes a
// `runroot` task for a builder in the `runroot` channel. Enabled by
// hub.conf's `Plugins = runroot_hub`; the channel is not created here (an
// admin adds it with add-host-to-channel --new, or routes the task with the
// channel policy or --channel-override), as in Koji.

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// runrootPriority is the plugin's task priority (lower runs first; Koji's default is 20).
const runrootPriority = 15

func (s *Server) runrootEnabled() bool { return s.plugins["runroot_hub"] || s.plugins["runroot"] }

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerRunroot) }

func (s *Server) registerRunroot() {
	if !s.runrootEnabled() {
		return
	}
	s.reg.Register(registry.Method{
		Name: "runroot", Doc: "Create a runroot task: run command in a buildroot of tagInfo on a builder of the channel (default runroot); returns the task id",
		Params: []registry.Param{registry.P("tagInfo"), registry.P("arch"), registry.P("command"), registry.Opt("channel", nil)},
		VarKw:  "opts", Write: true,
		Handler: s.runroot,
	})
}

// runroot follows runroot_hub.runroot step by step, with its messages.
func (s *Server) runroot(ctx context.Context, c *registry.Call) (any, error) {
	if err := s.assertPerm(c, "runroot"); err != nil {
		return nil, err
	}
	archRaw, _ := argRaw(c, "arch")
	arch, err := parseArches(archRaw, true)
	if err != nil {
		return nil, err
	}
	if arch == "" {
		return nil, bus.GenericError("Architecture can be only [a-zA-Z0-9_-]")
	}
	cmdRaw, _ := argRaw(c, "command")
	var cmdStr string
	var cmdList []string
	if json.Unmarshal(cmdRaw, &cmdStr) != nil && json.Unmarshal(cmdRaw, &cmdList) != nil {
		return nil, bus.GenericError("Invalid type for value '%s': %s", strings.Trim(string(cmdRaw), `"`), pyTypeName(cmdRaw))
	}
	channel := "runroot"
	if ch, err := c.OptString("channel"); err != nil {
		return nil, err
	} else if ch != nil && *ch != "" {
		channel = *ch
	}
	tagRaw, _ := argRaw(c, "tagInfo")
	tagRef, ok := refFromRaw(tagRaw)
	if !ok {
		return nil, bus.GenericError("No such tagInfo: %s", string(tagRaw))
	}
	// The request is encode_args(tagInfo, arch, command, **opts): the
	// builder sees every option but channel, unchecked, as in Koji.
	req := []any{tagRaw, arch, cmdRaw}
	if extra := c.Extra(); len(extra) > 0 {
		kw := map[string]any{"__starstar": true}
		for k, v := range extra {
			kw[k] = v
		}
		req = append(req, kw)
	}
	request, err := json.Marshal(req)
	if err != nil {
		return nil, bus.ParameterError("runroot(): %v", err)
	}
	prio := runrootPriority
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		tag, err := getTagStrict(tx.View, tagRef)
		if err != nil {
			return nil, err
		}
		taskArch := arch
		if arch == "noarch" {
			if taskArch, err = runrootNoarch(tx.View, tag, channel); err != nil {
				return nil, err
			}
		}
		t, err := s.createTaskTx(tx, c.Caller, "runroot", request, taskOpts{Arch: &taskArch, Channel: &channel, Priority: &prio})
		if err != nil {
			return nil, err
		}
		return t.ID, nil
	})
}

// runrootNoarch picks a real arch for a noarch runroot as Koji does: when
// the tag's arches do not cover every host's, one the channel's enabled
// hosts have, at random.
func runrootNoarch(v state.View, tag *tagRecord, channel string) (string, error) {
	tagArches := splitArches(derefStr(tag.Arches))
	if len(tagArches) == 0 {
		return "", bus.GenericError("no arches defined for tag %s", tag.Name)
	}
	all := map[string]bool{}
	forEachHost(v, func(h *hostRecord) {
		for _, a := range splitArches(h.Arches) {
			all[bus.CanonArch(a)] = true
		}
	})
	covered := true
	for a := range all {
		if !containsString(tagArches, a) {
			covered = false
		}
	}
	if covered {
		return "noarch", nil
	}
	ch, ok := lookupChannel(v, registry.Ref{Name: channel})
	if !ok {
		return "", bus.GenericError("query returned no rows")
	}
	chanArches := map[string]bool{}
	forEachHost(v, func(h *hostRecord) {
		if h.Enabled && hostInChannel(v, h.ID, ch.ID) {
			for _, a := range splitArches(h.Arches) {
				chanArches[bus.CanonArch(a)] = true
			}
		}
	})
	var choices []string
	for _, a := range tagArches { // not canonicalised before comparing, as Koji
		if chanArches[a] {
			choices = append(choices, a)
		}
	}
	if len(choices) == 0 {
		return "", bus.GenericError("no common arches for tag/channel: %s/%s", tag.Name, channel)
	}
	return bus.CanonArch(choices[rand.IntN(len(choices))]), nil
}

func derefStr(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
