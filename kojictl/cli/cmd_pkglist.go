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
			missing := func(p string) { a.printf("Package %s is not in tag %s\n", p, args[0]) }
			return a.checkedPkgListCall(cmd, args, false, missing, "packageListRemove", map[string]any{"force": force})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "Override blocks if necessary")
	return cmd
}

// checkedPkgListCall is block-pkg and remove-pkg: every package of
// args[1:] must be in the tag's list (with inherited ones: as block-pkg
// sees it), each missing one is reported and the command exits 1 before any
// call; else method(tag, package, **kw) for each.
func (a *app) checkedPkgListCall(cmd *cobra.Command, args []string, inherited bool, missing func(pkg string), method string, kw map[string]any) error {
	ctx := cmd.Context()
	c, err := a.session(ctx)
	if err != nil {
		return err
	}
	tag, err := a.mustTag(cmd, c, args[0])
	if err != nil {
		return err
	}
	existing, err := a.tagPackages(cmd, c, tag.ID, inherited)
	if err != nil {
		return err
	}
	absent := false
	for _, p := range args[1:] {
		if _, ok := existing[p]; !ok {
			missing(p)
			absent = true
		}
	}
	if absent {
		return &exitError{code: exitFail}
	}
	for _, p := range args[1:] {
		if err := c.Call(ctx, method, []any{args[0], p}, kw, nil); err != nil {
			return err
		}
	}
	return nil
}
