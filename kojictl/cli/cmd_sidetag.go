package cli

import (
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

// The sidetag plugin's commands (Koji's sidetag_cli).
func (a *app) sidetagCommands() []*cobra.Command {
	return []*cobra.Command{a.addSidetagCmd(), a.removeSidetagCmd(), a.listSidetagsCmd(), a.editSidetagCmd()}
}

func (a *app) addSidetagCmd() *cobra.Command {
	var wait, debuginfo bool
	var suffix string
	cmd := &cobra.Command{
		Use:   "add-sidetag [options] <basetag>",
		Short: "Create sidetag",
		Long: `Create a sidetag of basetag and print its name. With --wait, request its first repo
and return when it is ready (waiting on events, not polling).`,
		Args: exactArgs(1, "Only argument is basetag"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			kw := map[string]any{"debuginfo": debuginfo}
			if suffix != "" {
				kw["suffix"] = suffix
			}
			var st struct {
				Name string `json:"name"`
				ID   int64  `json:"id"`
			}
			if err := c.Call(ctx, "createSideTag", []any{args[0]}, kw, &st); err != nil {
				var f *bus.Fault
				if errors.As(err, &f) && f.Code == bus.CodeActionNotAllowed {
					return usagef(cmd, "Policy violation")
				}
				return err
			}
			if !a.quiet && !a.jsonOut { // -q/--quiet is the global option, as in koji
				a.println(st.Name)
			}
			if wait {
				w := a.waitRepoCmd()
				w.SetContext(ctx)
				_ = w.Flags().Set("target", "true")
				_ = w.Flags().Set("request", "true")
				// --json: the sidetag alone, once its repo is ready
				stdout, jsonOut := a.stdout, a.jsonOut
				if jsonOut {
					a.stdout, a.jsonOut = io.Discard, false
				}
				err := w.RunE(w, []string{st.Name})
				a.stdout, a.jsonOut = stdout, jsonOut
				if err != nil {
					return err
				}
			}
			if a.jsonOut {
				return a.printJSON(st)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&wait, "wait", "w", false, "wait until the sidetag's first repo is ready")
	f.BoolVar(&debuginfo, "debuginfo", false, "build repos with debuginfo")
	f.StringVar(&suffix, "suffix", "", "suffix of the sidetag name (one the hub allows)")
	return cmd
}

func (a *app) removeSidetagCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove-sidetag <sidetag> ...",
		Short: "Remove sidetag",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef(cmd, "Sidetag argument is required")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.session(cmd.Context())
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := c.Call(cmd.Context(), "removeSideTag", []any{name}, nil, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// sidetagRow is a list-sidetags --json row: user_id an integer (the hub
// sends Koji's string, from a JSON text column).
type sidetagRow struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	UserID   int64  `json:"user_id"`
	UserName string `json:"user_name"`
}

func (a *app) listSidetagsCmd() *cobra.Command {
	var basetag, user string
	var mine bool
	cmd := &cobra.Command{
		Use:   "list-sidetags [options]",
		Short: "List sidetags",
		Args:  exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if user != "" && mine {
				return usagef(cmd, "Specify only one from --user --mine")
			}
			c, err := a.session(cmd.Context())
			if err != nil {
				return err
			}
			kw := map[string]any{}
			if basetag != "" {
				kw["basetag"] = basetag
			}
			if user != "" {
				kw["user"] = user
			}
			if mine {
				var u *bus.LoggedInUser
				if err := c.Call(cmd.Context(), "getLoggedInUser", nil, nil, &u); err != nil {
					return err
				}
				if u == nil {
					return errors.New("--mine needs a login")
				}
				kw["user"] = u.Name
			}
			var rows []sidetagRow
			var raw []struct {
				ID       int64       `json:"id"`
				Name     string      `json:"name"`
				UserID   json.Number `json:"user_id"`
				UserName string      `json:"user_name"`
			}
			if err := c.Call(cmd.Context(), "listSideTags", nil, kw, &raw); err != nil {
				return err
			}
			for _, r := range raw {
				uid, _ := r.UserID.Int64()
				rows = append(rows, sidetagRow{r.ID, r.Name, uid, r.UserName})
			}
			if a.jsonOut {
				return a.printJSON(rows)
			}
			for _, r := range rows {
				a.println(r.Name)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&basetag, "basetag", "", "list sidetags of this base tag")
	f.StringVar(&user, "user", "", "list sidetags of this user")
	f.BoolVar(&mine, "mine", false, "list your sidetags")
	return cmd
}

func (a *app) editSidetagCmd() *cobra.Command {
	var debuginfo, noDebuginfo bool
	var macros, removeMacros []string
	cmd := &cobra.Command{
		Use:   "edit-sidetag [options] <sidetag>",
		Short: "Edit sidetag",
		Args:  exactArgs(1, "Only argument is sidetag"),
		RunE: func(cmd *cobra.Command, args []string) error {
			kw := map[string]any{}
			switch {
			case debuginfo && noDebuginfo:
				return usagef(cmd, "--debuginfo and --no-debuginfo exclude each other")
			case debuginfo:
				kw["debuginfo"] = true
			case noDebuginfo:
				kw["debuginfo"] = false
			}
			if len(macros) > 0 {
				m := map[string]any{}
				for _, kv := range macros {
					k, v, ok := strings.Cut(kv, "=")
					if !ok || k == "" {
						return usagef(cmd, "Invalid macro %q: use name=value", kv)
					}
					m[k] = policyValue(v) // koji's arg_filter: numbers and booleans as such
				}
				kw["rpm_macros"] = m
			}
			if len(removeMacros) > 0 {
				kw["remove_rpm_macros"] = removeMacros
			}
			if len(kw) == 0 {
				return usagef(cmd, "At least one option needs to be specified")
			}
			c, err := a.session(cmd.Context())
			if err != nil {
				return err
			}
			return c.Call(cmd.Context(), "editSideTag", []any{args[0]}, kw, nil)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&debuginfo, "debuginfo", false, "generate debuginfo repositories")
	f.BoolVar(&noDebuginfo, "no-debuginfo", false, "do not generate debuginfo repositories")
	f.StringArrayVar(&macros, "rpm-macro", nil, "set an rpm macro: name=value (repeatable)")
	f.StringArrayVar(&removeMacros, "remove-rpm-macro", nil, "remove an rpm macro (repeatable)")
	return cmd
}
