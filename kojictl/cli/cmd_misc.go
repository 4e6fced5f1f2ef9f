package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

// greetings are koji's (cli/koji_cli/commands.py handle_moshimoshi).
var greetings = []string{
	"hello", "hi", "yo", "what's up", "g'day", "back to work", "bonjour", "hallo", "ciao", "hola",
	"olá", "dobrý den", "zdravstvuite", "góðan daginn", "hej", "tervehdys", "grüezi",
	"céad míle fáilte", "hylô", "bună ziua", "jó napot", "dobre dan", "你好", "こんにちは", "नमस्कार", "안녕하세요",
}

func (a *app) miscCommands() []*cobra.Command {
	return []*cobra.Command{a.helloCmd(), a.listAPICmd(), a.callCmd(), a.loginCmd(), a.logoutCmd()}
}

func (a *app) helloCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "hello",
		Aliases: []string{"moshimoshi"},
		Short:   "Print greeting",
		Args:    exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			var u *bus.LoggedInUser
			if err := c.Call(ctx, "getLoggedInUser", nil, nil, &u); err != nil {
				return err
			}
			var version string
			if err := c.Call(ctx, "getKojiVersion", nil, nil, &version); err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(map[string]any{"user": u, "version": version, "server": a.profile.Server})
			}
			name := "anonymous user"
			if u == nil {
				a.println("Not authenticated")
			} else {
				name = u.Name
			}
			a.printf("%s, %s!\n\n", greetings[rand.IntN(len(greetings))], name)
			a.printf("You are using the hub at %s (Koji %s)\n", a.profile.Server, version)
			if u != nil {
				switch u.AuthType {
				case bus.AuthTypeNormal:
					a.println("Authenticated via password")
				case bus.AuthTypeKerb:
					a.println("Authenticated via GSSAPI")
				case bus.AuthTypeSSL:
					a.println("Authenticated via client certificate")
				}
			}
			return nil
		},
	}
}

type apiEntry struct {
	Name    string `json:"name"`
	Doc     string `json:"doc"`
	ArgDesc string `json:"argdesc"`
	Args    []any  `json:"args"`
}

func (a *app) listAPICmd() *cobra.Command {
	return &cobra.Command{
		Use:   "list-api [method...]",
		Short: "Print the list of XML-RPC APIs",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			if len(args) > 0 {
				helps := map[string]string{}
				for _, m := range args {
					var help string
					if err := c.Call(ctx, "system.methodHelp", []any{m}, nil, &help); err != nil {
						return err
					}
					if help == "" {
						return usagef(cmd, "Unknown method: %s", m)
					}
					helps[m] = help
				}
				if a.jsonOut {
					return a.printJSON(helps)
				}
				for _, m := range args {
					a.println(helps[m])
				}
				return nil
			}
			raw, err := c.CallRaw(ctx, "_listapi", nil, nil)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(raw)
			}
			var entries []apiEntry
			if err := json.Unmarshal(raw, &entries); err != nil {
				return fmt.Errorf("_listapi: %w", err)
			}
			sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
			for _, e := range entries {
				desc := e.ArgDesc
				if desc == "" {
					desc = "()"
				}
				a.printf("%s%s\n", e.Name, desc)
				if e.Doc != "" {
					a.printf("  description: %s\n", e.Doc)
				}
			}
			return nil
		},
	}
}

func (a *app) callCmd() *cobra.Command {
	var python, jsonOutput bool
	var kwargsText, jsonInput string
	cmd := &cobra.Command{
		Use:   "call [options] <name> [<arg> ...]",
		Short: "Execute an arbitrary API call",
		Long: `Execute an arbitrary API call, as koji call does. Arguments are filtered
like koji's: integers, floats, None/True/False, else strings; name=value is a
keyword argument. With --python, values are Python literals (lists, dicts,
quoted strings). --json-input takes {"args": [...], "kwargs": {...}} (or a
JSON array of positional arguments), as text or "-" for stdin.`,
		Args: minArgs(1, "Please specify the name of the XML-RPC method"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name := args[0]
			var pos []any
			kw := map[string]any{}
			if kwargsText != "" {
				v, err := parsePyLiteral(kwargsText)
				if err != nil {
					return usagef(cmd, "%s", err)
				}
				m, ok := v.(map[string]any)
				if !ok {
					return usagef(cmd, "--kwargs must be a dict")
				}
				for k, x := range m {
					kw[k] = x
				}
				python = true
			}
			if jsonInput != "" {
				p, k, err := a.readJSONInput(jsonInput)
				if err != nil {
					return usagef(cmd, "--json-input: %s", err)
				}
				pos = append(pos, p...)
				for key, x := range k {
					kw[key] = x
				}
			}
			for _, arg := range args[1:] {
				key, value, isKw := strings.Cut(arg, "=")
				if !isKw {
					value = arg
				}
				var v any = argFilter(value, false)
				if python {
					var err error
					if v, err = parsePyLiteral(value); err != nil {
						return usagef(cmd, "%s", err)
					}
				}
				if isKw {
					kw[key] = v
				} else {
					pos = append(pos, v)
				}
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			raw, err := c.CallRaw(ctx, name, pos, kw)
			if err != nil {
				return err
			}
			if jsonOutput || a.jsonOut {
				return a.printJSON(raw)
			}
			var v any
			if err := decodeJSON(raw, &v); err != nil {
				return err
			}
			a.println(pformat(v, 0, 80))
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&python, "python", false, "Use python syntax for values")
	f.StringVar(&kwargsText, "kwargs", "", "Specify keyword arguments as a dictionary (implies --python)")
	f.BoolVar(&jsonOutput, "json-output", false, "Use JSON syntax for output")
	f.StringVar(&jsonInput, "json-input", "", `arguments as JSON: {"args": [...], "kwargs": {...}} or [...]; "-" reads stdin`)
	return cmd
}

func (a *app) readJSONInput(src string) ([]any, map[string]any, error) {
	data := []byte(src)
	if src == "-" {
		var err error
		if data, err = io.ReadAll(a.stdin); err != nil {
			return nil, nil, err
		}
	}
	v, err := decodeJSONStrict(data)
	if err != nil {
		return nil, nil, err
	}
	switch x := v.(type) {
	case []any:
		return x, nil, nil
	case map[string]any:
		var pos []any
		var kw map[string]any
		for k := range x {
			if k != "args" && k != "kwargs" {
				return nil, nil, fmt.Errorf("unexpected key %q (want args, kwargs)", k)
			}
		}
		if p, ok := x["args"]; ok && p != nil {
			if pos, ok = p.([]any); !ok {
				return nil, nil, fmt.Errorf("args must be a list")
			}
		}
		if k, ok := x["kwargs"]; ok && k != nil {
			if kw, ok = k.(map[string]any); !ok {
				return nil, nil, fmt.Errorf("kwargs must be an object")
			}
		}
		return pos, kw, nil
	}
	return nil, nil, fmt.Errorf("want a JSON object or array")
}

func (a *app) loginCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "login",
		Short: "Log in and keep the session for later commands (until logout)",
		Args:  exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if a.noauth {
				return usagef(cmd, "login and --noauth exclude each other")
			}
			if _, err := a.loadProfile(); err != nil {
				return err
			}
			// Always a fresh session: drop a cached one first.
			if hdr, ok := a.readCachedSession(); ok {
				if c, err := a.anon(ctx); err == nil {
					_ = c.WithSession(hdr).Call(ctx, "logout", nil, nil, nil)
				}
				a.removeCachedSession()
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			var u *bus.LoggedInUser
			if err := c.Call(ctx, "getLoggedInUser", nil, nil, &u); err != nil {
				return err
			}
			if u == nil {
				return failf("Login failed: this profile has no credentials (authtype %s)", a.profile.AuthType)
			}
			if _, err := a.writeCachedSession(u.Name); err != nil {
				return err
			}
			a.ownSession = false // keep it open for later commands
			if !a.quiet {
				a.printf("Successfully logged in as %s\n", u.Name)
			}
			return nil
		},
	}
}

func (a *app) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "End the session kept by login",
		Args:  exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if _, err := a.loadProfile(); err != nil {
				return err
			}
			hdr, ok := a.readCachedSession()
			if !ok {
				if !a.quiet {
					a.println("Not logged in")
				}
				return nil
			}
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			err = c.WithSession(hdr).Call(ctx, "logout", nil, nil, nil)
			a.removeCachedSession()
			var f *bus.Fault
			if err != nil && !(asFault(err, &f) && (f.Code == bus.CodeAuthExpired || f.Code == bus.CodeAuthError)) {
				return err
			}
			if !a.quiet {
				a.println("Logged out")
			}
			return nil
		},
	}
}
