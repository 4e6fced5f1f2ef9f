package cli

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
)

func (a *app) hostCommands() []*cobra.Command {
	return []*cobra.Command{
		a.addHostCmd(), a.rotateHostCredsCmd(), a.editHostCmd(), a.enableHostCmd(true), a.enableHostCmd(false),
		a.addHostToChannelCmd(), a.removeHostFromChannelCmd(), a.listHostsCmd(), a.listChannelsCmd(), a.hostinfoCmd(),
	}
}

// idOrName passes a numeric argument as an id, anything else as a name (koji's int() fallback).
func idOrName(s string) any {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n
	}
	return s
}

func (a *app) getHost(cmd *cobra.Command, c *bus.Client, name any) (*bus.Host, error) {
	var h *bus.Host
	if err := c.Call(cmd.Context(), "getHost", []any{name}, nil, &h); err != nil {
		return nil, err
	}
	return h, nil
}

func (a *app) addHostCmd() *cobra.Command {
	var principal, credsOut string
	var force bool
	cmd := &cobra.Command{
		Use:   "add-host [options] <hostname> <arch> [<arch> ...]",
		Short: "Add a host",
		Long: `Add a build host. With --creds-out FILE, also create the host's credentials
and write them as a profile ([koji] section, mode 0600) for builderd.`,
		Args: minArgs(2, "Please specify a hostname and at least one arch"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			host := args[0]
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			existing, err := a.getHost(cmd, c, host)
			if err != nil {
				return err
			}
			if existing != nil {
				return failf("%s is already in the database", host)
			}
			kw := map[string]any{}
			if principal != "" {
				kw["krb_principal"] = principal
			}
			if force {
				kw["force"] = true
			}
			var id int64
			if err := c.Call(ctx, "addHost", []any{host, args[1:]}, kw, &id); err != nil {
				return err
			}
			if credsOut != "" {
				if err := a.writeHostCreds(cmd, c, host, credsOut); err != nil {
					return err
				}
			}
			if a.jsonOut {
				out := map[string]any{"id": id, "name": host}
				if credsOut != "" {
					out["creds_out"] = credsOut
				}
				return a.printJSON(out)
			}
			a.printf("%s added: id %d\n", host, id)
			if credsOut != "" && !a.quiet {
				a.printf("Credentials written to %s\n", credsOut)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&principal, "krb-principal", "", "set a non-default kerberos principal for the host")
	f.BoolVar(&force, "force", false, "if existing used is a regular user, convert it to a host")
	f.StringVar(&credsOut, "creds-out", "", "create the host's credentials and write them to FILE as a builderd profile (mode 0600)")
	return cmd
}

// rotateHostCredsCmd gives a host a new password (kojibus: the host's NATS
// identity too); its connections with the old one are closed and refused.
func (a *app) rotateHostCredsCmd() *cobra.Command {
	var credsOut string
	cmd := &cobra.Command{
		Use:   "rotate-host-creds --creds-out FILE <hostname>",
		Short: "Replace a host's credentials and write the new ones for builderd (kojibus)",
		Long: `Replace a host's credentials: the old ones stop working at once (the host's
connections are closed). The new ones are written to FILE (mode 0600) as a
builderd profile; copy it to the host and restart builderd with --creds FILE.`,
		Args: exactArgs(1, "Please specify a hostname"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if credsOut == "" {
				return failf("--creds-out is required")
			}
			c, err := a.session(cmd.Context())
			if err != nil {
				return err
			}
			if err := a.writeHostCreds(cmd, c, args[0], credsOut); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "new credentials of %s written to %s\n", args[0], credsOut)
			return nil
		},
	}
	cmd.Flags().StringVar(&credsOut, "creds-out", "", "write the host's new credentials to FILE as a builderd profile (mode 0600)")
	return cmd
}

// writeHostCreds calls createHostCredentials and writes the answer as a profile.
func (a *app) writeHostCreds(cmd *cobra.Command, c *bus.Client, host, path string) error {
	var creds bus.HostCredentials
	if err := c.Call(cmd.Context(), "createHostCredentials", []any{host}, nil, &creds); err != nil {
		return err
	}
	server := creds.Server
	if server == "" {
		server = a.profile.Server
	}
	user := creds.User
	if user == "" {
		user = host
	}
	name := creds.Host
	if name == "" {
		name = host
	}
	pairs := [][2]string{{"server", server}}
	if a.profile.ServerCA != "" {
		pairs = append(pairs, [2]string{"serverca", a.profile.ServerCA})
	}
	pairs = append(pairs, [2]string{"authtype", "password"}, [2]string{"user", user}, [2]string{"password", creds.Password}, [2]string{"host", name})
	data := config.Write(config.KV{Section: "koji", Pairs: pairs})
	if err := bus.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("--creds-out: %w", err)
	}
	return nil
}

func (a *app) editHostCmd() *cobra.Command {
	var arches, description, comment string
	var capacity float64
	cmd := &cobra.Command{
		Use:   "edit-host [options] <hostname> [<hostname> ...]",
		Short: "Edit a host",
		Args:  minArgs(1, "Please specify a hostname"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			kw := map[string]any{}
			f := cmd.Flags()
			if f.Changed("arches") {
				kw["arches"] = parseArches(arches)
			}
			if f.Changed("capacity") {
				kw["capacity"] = capacity
			}
			if f.Changed("description") {
				kw["description"] = description
			}
			if f.Changed("comment") {
				kw["comment"] = comment
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			for _, h := range args {
				info, err := a.getHost(cmd, c, h)
				if err != nil {
					return err
				}
				if info == nil {
					return failf("No such host: %s", h)
				}
			}
			for _, h := range args {
				var changed bool
				if err := c.Call(ctx, "editHost", []any{h}, kw, &changed); err != nil {
					return err
				}
				if changed {
					a.printf("Edited %s\n", h)
				} else {
					a.printf("No changes made to %s\n", h)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&arches, "arches", "", "Space or comma-separated list of supported architectures")
	f.Float64Var(&capacity, "capacity", 0, "Capacity of this host")
	f.StringVar(&description, "description", "", "Description of this host")
	f.StringVar(&comment, "comment", "", "A brief comment about this host")
	return cmd
}

func (a *app) enableHostCmd(enable bool) *cobra.Command {
	use, short, method := "enable-host", "Mark one or more hosts as enabled", "enableHost"
	if !enable {
		use, short, method = "disable-host", "Mark one or more hosts as disabled", "disableHost"
	}
	var comment string
	cmd := &cobra.Command{
		Use:   use + " [options] <hostname> [<hostname> ...]",
		Short: short,
		Args:  minArgs(1, "At least one host must be specified"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			var missing []string
			for _, h := range args {
				info, err := a.getHost(cmd, c, h)
				if err != nil {
					return err
				}
				if info == nil {
					missing = append(missing, h)
				}
			}
			if len(missing) > 0 {
				return failf("No such host: %s", strings.Join(missing, ", "))
			}
			for _, h := range args {
				if err := c.Call(ctx, method, []any{h}, nil, nil); err != nil {
					return err
				}
				if cmd.Flags().Changed("comment") {
					if err := c.Call(ctx, "editHost", []any{h}, map[string]any{"comment": comment}, nil); err != nil {
						return err
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "Comment indicating why the host(s) are being changed")
	return cmd
}

func (a *app) addHostToChannelCmd() *cobra.Command {
	var create, force bool
	cmd := &cobra.Command{
		Use:   "add-host-to-channel [options] <hostname> <channel>",
		Short: "Add a host to a channel",
		Args:  exactArgs(2, "Please specify a hostname and a channel"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			host, channel := args[0], args[1]
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			if !create {
				var ch *bus.Channel
				if err := c.Call(ctx, "getChannel", []any{channel}, nil, &ch); err != nil {
					return err
				}
				if ch == nil {
					return failf("No such channel: %s", channel)
				}
			}
			info, err := a.getHost(cmd, c, host)
			if err != nil {
				return err
			}
			if info == nil {
				return failf("No such host: %s", host)
			}
			kw := map[string]any{}
			if create {
				kw["create"] = true
			}
			if force {
				kw["force"] = true
			}
			return c.Call(ctx, "addHostToChannel", []any{host, channel}, kw, nil)
		},
	}
	cmd.Flags().BoolVar(&create, "new", false, "Create channel if needed")
	cmd.Flags().BoolVar(&force, "force", false, "force added, if possible")
	return cmd
}

func (a *app) removeHostFromChannelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove-host-from-channel <hostname> <channel>",
		Short: "Remove a host from a channel",
		Args:  exactArgs(2, "Please specify a hostname and a channel"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			host, channel := args[0], args[1]
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			info, err := a.getHost(cmd, c, host)
			if err != nil {
				return err
			}
			if info == nil {
				return failf("No such host: %s", host)
			}
			var chans []bus.Channel
			if err := c.Call(ctx, "listChannels", []any{info.ID}, nil, &chans); err != nil {
				return err
			}
			member := false
			for _, ch := range chans {
				member = member || ch.Name == channel
			}
			if !member {
				return failf("Host %s is not a member of channel %s", host, channel)
			}
			return c.Call(ctx, "removeHostFromChannel", []any{host, channel}, nil, nil)
		},
	}
}

func yesno(b bool) string {
	if b {
		return "Y"
	}
	return "N"
}

func strOr(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func formatTS(ts float64) string {
	sec := int64(ts)
	return time.Unix(sec, int64((ts-float64(sec))*1e9)).Local().Format("2006-01-02 15:04:05")
}

// triState is a pair of koji's --x/--not-x options: nil when neither is given.
func triState(cmd *cobra.Command, yes, no string) *bool {
	f := cmd.Flags()
	var v *bool
	if f.Changed(yes) {
		t := true
		v = &t
	}
	for _, n := range strings.Split(no, ",") {
		if n != "" && f.Changed(n) {
			fv := false
			v = &fv
		}
	}
	return v
}

func (a *app) listHostsCmd() *cobra.Command {
	var arches []string
	var channel string
	var showChannels, showComment, showDescription bool
	cmd := &cobra.Command{
		Use:   "list-hosts [options]",
		Short: "Print the host listing",
		Args:  exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			kw := map[string]any{}
			if len(arches) > 0 {
				var list []string
				for _, x := range arches {
					list = append(list, strings.Fields(parseArches(x))...)
				}
				kw["arches"] = list
			}
			if channel != "" {
				var ch *bus.Channel
				if err := c.Call(ctx, "getChannel", []any{channel}, nil, &ch); err != nil {
					return err
				}
				if ch == nil {
					return failf("No such channel: %s", channel)
				}
				kw["channelID"] = ch.ID
			}
			if v := triState(cmd, "ready", "not-ready"); v != nil {
				kw["ready"] = *v
			}
			if v := triState(cmd, "enabled", "not-enabled,disabled"); v != nil {
				kw["enabled"] = *v
			}
			raw, err := callPaged(ctx, c, "listHosts", nil, kw)
			if err != nil {
				return err
			}
			var hosts []bus.Host
			if err := json.Unmarshal(raw, &hosts); err != nil {
				return err
			}
			sort.SliceStable(hosts, func(i, j int) bool { return hosts[i].Name < hosts[j].Name })
			channels := map[int64]string{}
			if showChannels {
				for _, h := range hosts {
					var chans []bus.Channel
					if err := c.Call(ctx, "listChannels", []any{h.ID}, nil, &chans); err != nil {
						return err
					}
					var names []string
					for _, ch := range chans {
						n := ch.Name
						if !ch.Enabled {
							n += "*"
						}
						names = append(names, n)
					}
					sort.Strings(names)
					channels[h.ID] = strings.Join(names, " ")
				}
			}
			if a.jsonOut {
				if !showChannels {
					return a.printJSON(raw)
				}
				var rows []map[string]any
				if err := decodeJSON(raw, &rows); err != nil {
					return err
				}
				for i := range rows {
					rows[i]["channels"] = strings.Fields(strings.ReplaceAll(channels[hosts[i].ID], "*", ""))
				}
				return a.printJSON(rows)
			}
			if len(hosts) == 0 {
				if !a.quiet {
					a.warn("No hosts found.")
				}
				return nil
			}
			longest := 0
			for _, h := range hosts {
				longest = max(longest, len(h.Name))
			}
			if !a.quiet {
				hdr := padRight("Hostname", longest) + " Enb Rdy Load/Cap  Arches           Last Update                         "
				if showDescription {
					hdr += padRight("Description", 51)
				}
				if showComment {
					hdr += padRight("Comment", 51)
				}
				if showChannels {
					hdr += "Channels"
				}
				hdr = strings.TrimRight(hdr, " ")
				a.println(hdr)
				a.println(strings.Repeat("-", len(hdr)))
			}
			for _, h := range hosts {
				update := "-"
				if h.UpdateTS != nil {
					update = formatTS(*h.UpdateTS)
				}
				line := fmt.Sprintf("%-*s %-3s %-3s %4.1f/%-4.1f %-16s %-35s", longest, h.Name, yesno(h.Enabled), yesno(h.Ready),
					h.TaskLoad, h.Capacity, strings.Join(strings.Fields(h.Arches), ","), update)
				if showDescription {
					line += fmt.Sprintf(" %-50s", strOr(h.Description, "-"))
				}
				if showComment {
					line += fmt.Sprintf(" %-50s", strOr(h.Comment, "-"))
				}
				if showChannels {
					line += " " + channels[h.ID]
				}
				a.println(strings.TrimRight(line, " "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&arches, "arch", nil, "Specify an architecture (may be repeated)")
	f.StringVar(&channel, "channel", "", "Specify a channel")
	f.Bool("ready", false, "Limit to ready hosts")
	f.Bool("not-ready", false, "Limit to not ready hosts")
	f.Bool("enabled", false, "Limit to enabled hosts")
	f.Bool("not-enabled", false, "Limit to not enabled hosts")
	f.Bool("disabled", false, "Alias for --not-enabled")
	f.BoolVar(&showChannels, "show-channels", false, "Show host's channels")
	f.BoolVar(&showComment, "comment", false, "Show comments")
	f.BoolVar(&showDescription, "description", false, "Show descriptions")
	return cmd
}

type channelRow struct {
	bus.Channel
	EnabledHosts  int     `json:"enabled_host"`
	Ready         int     `json:"ready"`
	DisabledHosts int     `json:"disabled"`
	Load          float64 `json:"load"`
	Capacity      float64 `json:"capacity"`
	PercLoad      float64 `json:"perc_load"`
}

func (a *app) listChannelsCmd() *cobra.Command {
	var simple, showComment, showDescription bool
	var arches []string
	cmd := &cobra.Command{
		Use:   "list-channels [options]",
		Short: "Print channels listing",
		Args:  exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			kw := map[string]any{}
			if v := triState(cmd, "enabled", "not-enabled,disabled"); v != nil {
				kw["enabled"] = *v
			}
			var chans []bus.Channel
			if err := c.Call(ctx, "listChannels", nil, kw, &chans); err != nil {
				return err
			}
			sort.Slice(chans, func(i, j int) bool { return chans[i].Name < chans[j].Name })
			rows := make([]channelRow, 0, len(chans))
			for _, ch := range chans {
				r := channelRow{Channel: ch}
				if !simple || a.jsonOut {
					hkw := map[string]any{"channelID": ch.ID}
					if len(arches) > 0 {
						var list []string
						for _, x := range arches {
							list = append(list, strings.Fields(parseArches(x))...)
						}
						hkw["arches"] = list
					}
					var hosts []bus.Host
					if err := c.Call(ctx, "listHosts", nil, hkw, &hosts); err != nil {
						return err
					}
					if len(arches) > 0 && len(hosts) == 0 {
						continue
					}
					for _, h := range hosts {
						if h.Enabled {
							r.EnabledHosts++
						} else {
							r.DisabledHosts++
						}
						if h.Ready {
							r.Ready++
						}
						r.Capacity += h.Capacity
						r.Load += h.TaskLoad
					}
					if r.Capacity > 0 {
						r.PercLoad = r.Load / r.Capacity * 100
					}
				}
				rows = append(rows, r)
			}
			if a.jsonOut {
				return a.printJSON(rows)
			}
			names := make([]string, len(rows))
			longest := 8
			for i, r := range rows {
				names[i] = r.Name
				if !r.Enabled {
					names[i] += " [disabled]"
				}
				longest = max(longest, len(names[i]))
			}
			if simple {
				if !a.quiet {
					a.println("Channel")
					a.println(strings.Repeat("-", len("Channel")))
				}
				for _, n := range names {
					a.println(n)
				}
				return nil
			}
			if !a.quiet {
				hdr := padRight("Channel", longest) + "Enabled  Ready Disbld   Load    Cap   Perc    "
				if showDescription {
					hdr += padRight("Description", 53)
				}
				if showComment {
					hdr += padRight("Comment", 53)
				}
				a.println(hdr)
				a.println(strings.Repeat("-", len(hdr)))
			}
			for i, r := range rows {
				line := fmt.Sprintf("%-*s %6d %6d %6d %6d %6d %6d%%", longest, names[i], r.EnabledHosts, r.Ready, r.DisabledHosts,
					int(r.Load), int(r.Capacity), int(r.PercLoad))
				if showDescription {
					line += fmt.Sprintf("   %-50s", strOr(r.Description, "-"))
				}
				if showComment {
					line += fmt.Sprintf("   %-50s", strOr(r.Comment, "-"))
				}
				a.println(strings.TrimRight(line, " "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&simple, "simple", false, "Print just list of channels without additional info")
	f.BoolVar(&showComment, "comment", false, "Show comments")
	f.BoolVar(&showDescription, "description", false, "Show descriptions")
	f.Bool("enabled", false, "Limit to enabled channels")
	f.Bool("not-enabled", false, "Limit to not enabled channels")
	f.Bool("disabled", false, "Alias for --not-enabled")
	f.StringArrayVar(&arches, "arch", nil, "Limit to channels with hosts of this architecture (may be repeated)")
	return cmd
}

func (a *app) hostinfoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "hostinfo <hostname> [<hostname> ...]",
		Short: "Print basic information about a host",
		Args:  minArgs(1, "Please specify a host"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			failed := false
			var infos []json.RawMessage
			for i, h := range args {
				raw, err := c.CallRaw(ctx, "getHost", []any{idOrName(h)}, nil)
				if err != nil {
					return err
				}
				var info *bus.Host
				if err := json.Unmarshal(raw, &info); err != nil {
					return err
				}
				if info == nil {
					a.warn("No such host: %s", h)
					failed = true
					continue
				}
				if a.jsonOut {
					infos = append(infos, raw)
					continue
				}
				if i > 0 {
					a.println()
				}
				if err := a.printHostInfo(cmd, c, info); err != nil {
					return err
				}
			}
			if a.jsonOut {
				if len(args) == 1 && len(infos) == 1 {
					if err := a.printJSON(infos[0]); err != nil {
						return err
					}
				} else if err := a.printJSON(infos); err != nil {
					return err
				}
			}
			if failed {
				return &exitError{code: exitFail}
			}
			return nil
		},
	}
}

func (a *app) printHostInfo(cmd *cobra.Command, c *bus.Client, info *bus.Host) error {
	ctx := cmd.Context()
	a.printf("Name: %s\n", info.Name)
	a.printf("ID: %d\n", info.ID)
	a.printf("Arches: %s\n", info.Arches)
	a.printf("Capacity: %s\n", pyRepr(info.Capacity))
	a.printf("Task Load: %.2f\n", info.TaskLoad)
	printMultiline := func(label string, s *string) {
		if s == nil || *s == "" {
			a.printf("%s:\n", label)
			return
		}
		lines := strings.Split(*s, "\n")
		a.printf("%s: %s\n", label, lines[0])
		for _, l := range lines[1:] {
			a.printf("%s%s\n", strings.Repeat(" ", len(label)+2), l)
		}
	}
	printMultiline("Description", info.Description)
	printMultiline("Comment", info.Comment)
	a.printf("Enabled: %s\n", map[bool]string{true: "yes", false: "no"}[info.Enabled])
	a.printf("Ready: %s\n", map[bool]string{true: "yes", false: "no"}[info.Ready])
	update := "never"
	if info.UpdateTS != nil {
		update = time.Unix(int64(*info.UpdateTS), 0).Local().Format("Mon, 02 Jan 2006 15:04:05 MST")
	}
	a.printf("Last Update: %s\n", update)
	var chans []bus.Channel
	if err := c.Call(ctx, "listChannels", []any{info.ID}, nil, &chans); err != nil {
		return err
	}
	names := make([]string, 0, len(chans))
	for _, ch := range chans {
		names = append(names, ch.Name)
	}
	sort.Strings(names)
	a.printf("Channels: %s\n", strings.Join(names, " "))
	a.println("Active Buildroots:")
	type row struct{ name, state, created string }
	var rows []row
	for state := bus.BuildrootInit; state <= bus.BuildrootBuilding; state++ {
		var brs []bus.Buildroot
		err := c.Call(ctx, "listBuildroots", nil, map[string]any{"hostID": info.ID, "state": state}, &brs)
		if isInvalidMethod(err) {
			break // a hub without buildroots yet
		}
		if err != nil {
			return err
		}
		for _, b := range brs {
			created := b.CreateEventTime
			if i := strings.Index(created, "."); i >= 0 {
				created = created[:i]
			}
			rows = append(rows, row{fmt.Sprintf("%s-%d-%d", b.TagName, b.ID, b.RepoID), bus.BuildrootStateNames[state], created})
		}
	}
	if len(rows) == 0 {
		a.println("None")
		return nil
	}
	a.printf("%-50s %-10s %-20s\n", "NAME", "STATE", "CREATION TIME")
	for _, r := range rows {
		a.printf("%-50s %-10s %-20s\n", r.name, r.state, r.created)
	}
	return nil
}
