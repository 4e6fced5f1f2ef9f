package cli

import (
	"encoding/json"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

func (a *app) userCommands() []*cobra.Command {
	return []*cobra.Command{a.addUserCmd(), a.enableUserCmd(true), a.enableUserCmd(false), a.grantPermissionCmd(), a.revokePermissionCmd(), a.listPermissionsCmd()}
}

// enableUserCmd is koji's enable-user and disable-user: one user, no output.
func (a *app) enableUserCmd(enable bool) *cobra.Command {
	verb, short, method := "enable", "Enable logins by a user", "enableUser"
	if !enable {
		verb, short, method = "disable", "Disable logins by a user", "disableUser"
	}
	return &cobra.Command{
		Use:   verb + "-user <username>",
		Short: short,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return usagef(cmd, "This command only accepts one argument (username)")
			}
			return exactArgs(1, "You must specify the username of the user to "+verb)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			return c.Call(ctx, method, []any{args[0]}, nil, nil)
		},
	}
}

func (a *app) addUserCmd() *cobra.Command {
	var principal, password string
	var disable, passwordStdin bool
	cmd := &cobra.Command{
		Use:   "add-user [options] <username>",
		Short: "Add a user",
		Args:  exactArgs(1, "You must specify the username of the user to add"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if passwordStdin && password != "" {
				return usagef(cmd, "--password and --password-stdin exclude each other")
			}
			if passwordStdin {
				line, err := readPasswordLine(a.stdin)
				if err != nil {
					return err
				}
				password = line
			}
			kw := map[string]any{}
			if disable {
				kw["status"] = bus.UserStatusBlocked
			}
			if principal != "" {
				kw["krb_principal"] = principal
			}
			if password != "" {
				kw["password"] = password
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			var id int64
			if err := c.Call(ctx, "createUser", []any{args[0]}, kw, &id); err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(map[string]any{"id": id, "name": args[0]})
			}
			a.printf("Added user %s (%d)\n", args[0], id)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&principal, "principal", "", "The Kerberos principal for this user")
	f.BoolVar(&disable, "disable", false, "Prohibit logins by this user")
	f.StringVar(&password, "password", "", "password for the user (visible in the process list: prefer --password-stdin)")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the user's password from the first line of standard input")
	return cmd
}

// lookupUsers is koji's check that every named user exists (getUser each).
func (a *app) lookupUsers(cmd *cobra.Command, c *bus.Client, names []string) ([]bus.User, error) {
	var users []bus.User
	for _, n := range names {
		var u *bus.User
		if err := c.Call(cmd.Context(), "getUser", []any{n}, nil, &u); err != nil {
			return nil, err
		}
		if u == nil {
			return nil, usagef(cmd, "No such user: %s", n)
		}
		users = append(users, *u)
	}
	return users, nil
}

func (a *app) grantPermissionCmd() *cobra.Command {
	var create bool
	var description string
	cmd := &cobra.Command{
		Use:   "grant-permission [options] <permission> <user> [<user> ...]",
		Short: "Grant a permission to a user",
		Args:  minArgs(2, "Please specify a permission and at least one user"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if description != "" && !create {
				return usagef(cmd, "Option new must be specified with option description.")
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			users, err := a.lookupUsers(cmd, c, args[1:])
			if err != nil {
				return err
			}
			kw := map[string]any{}
			if create {
				kw["create"] = true
				if description != "" {
					kw["description"] = description
				}
			}
			for _, u := range users {
				if err := c.Call(ctx, "grantPermission", []any{u.Name, args[0]}, kw, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&create, "new", false, "Create this permission if the permission does not exist")
	cmd.Flags().StringVar(&description, "description", "", "Add description about new permission")
	return cmd
}

func (a *app) revokePermissionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke-permission <permission> <user> [<user> ...]",
		Short: "Revoke a permission from a user",
		Args:  minArgs(2, "Please specify a permission and at least one user"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			users, err := a.lookupUsers(cmd, c, args[1:])
			if err != nil {
				return err
			}
			for _, u := range users {
				if err := c.Call(ctx, "revokePermission", []any{u.Name, args[0]}, nil, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func (a *app) listPermissionsCmd() *cobra.Command {
	var user string
	var mine bool
	cmd := &cobra.Command{
		Use:   "list-permissions [options]",
		Short: "List user permissions",
		Args:  exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if user != "" && mine {
				return usagef(cmd, "Please specify only one of --user and --mine")
			}
			var c *bus.Client
			var err error
			if mine {
				c, err = a.session(ctx)
			} else {
				c, err = a.anon(ctx)
			}
			if err != nil {
				return err
			}
			var names []string
			switch {
			case user != "":
				users, err := a.lookupUsers(cmd, c, []string{user})
				if err != nil {
					return err
				}
				if err := c.Call(ctx, "getUserPerms", []any{users[0].ID}, nil, &names); err != nil {
					return err
				}
			case mine:
				if err := c.Call(ctx, "getPerms", nil, nil, &names); err != nil {
					return err
				}
			default:
				raw, err := c.CallRaw(ctx, "getAllPerms", nil, nil)
				if err != nil {
					return err
				}
				if a.jsonOut {
					return a.printJSON(raw)
				}
				var perms []bus.Permission
				if err := json.Unmarshal(raw, &perms); err != nil {
					return err
				}
				if !a.quiet {
					a.printf("%-25s %s\n", "Permission name", "Description")
					a.println(strings.Repeat("-", 25) + " " + strings.Repeat("-", 40))
				}
				for _, p := range perms {
					desc := ""
					if p.Description != nil {
						desc = *p.Description
					}
					a.println(strings.TrimRight(padRight(p.Name, 25)+" "+desc, " "))
				}
				return nil
			}
			if a.jsonOut {
				if names == nil {
					names = []string{}
				}
				return a.printJSON(names)
			}
			for _, n := range names {
				a.println(n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "List permissions for the given user")
	cmd.Flags().BoolVar(&mine, "mine", false, "List your permissions")
	return cmd
}

func padRight(s string, n int) string {
	if w := len([]rune(s)); w < n {
		return s + strings.Repeat(" ", n-w)
	}
	return s
}
