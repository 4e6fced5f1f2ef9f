package cli

import (
	"github.com/spf13/cobra"
)

// unblock-pkg and remove-pkg: koji's handle_unblock_pkg and handle_remove_pkg.

func (a *app) unblockPkgCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "unblock-pkg [options] <tag> <package> [<package> ...]",
		Short: "Unblock a package in the listing for tag",
		Args:  minArgs(2, "Please specify a tag and at least one package"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			for _, p := range args[1:] {
				if err := c.Call(ctx, "packageListUnblock", []any{args[0], p}, nil, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func (a *app) removePkgCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "remove-pkg [options] <tag> <package> [<package> ...]",
		Short: "Remove a package from the listing for tag",
		Args:  minArgs(2, "Please specify a tag and at least one package"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			tag, err := a.mustTag(cmd, c, args[0])
			if err != nil {
				return err
			}
			existing, err := a.tagPackages(cmd, c, tag.ID, false)
			if err != nil {
				return err
			}
			missing := false
			for _, p := range args[1:] {
				if _, ok := existing[p]; !ok {
					a.printf("Package %s is not in tag %s\n", p, args[0])
					missing = true
				}
			}
			if missing {
				return &exitError{code: exitFail}
			}
			for _, p := range args[1:] {
				if err := c.Call(ctx, "packageListRemove", []any{args[0], p}, map[string]any{"force": force}, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "Override blocks if necessary")
	return cmd
}
