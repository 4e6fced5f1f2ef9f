package cli

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

func (a *app) buildCommands() []*cobra.Command {
	return []*cobra.Command{a.importBuildCmd(), a.tagBuildCmd(), a.untagBuildCmd(), a.listTaggedCmd()}
}

// parseNVR is koji.parse_NVR: name-version-release split on the last two dashes.
func parseNVR(nvr string) (name, version, release string, err error) {
	i := strings.LastIndex(nvr, "-")
	if i <= 0 {
		return "", "", "", fmt.Errorf("invalid format: %s", nvr)
	}
	j := strings.LastIndex(nvr[:i], "-")
	if j <= 0 {
		return "", "", "", fmt.Errorf("invalid format: %s", nvr)
	}
	name, version, release = nvr[:j], nvr[j+1:i], nvr[i+1:]
	if version == "" || release == "" {
		return "", "", "", fmt.Errorf("invalid format: %s", nvr)
	}
	return name, version, release, nil
}

func (a *app) importBuildCmd() *cobra.Command {
	var epoch int64
	var owner, source, stateName string
	var draft bool
	var extras []string
	var taskID int64
	cmd := &cobra.Command{
		Use:   "import-build [options] <nvr>",
		Short: "Record a build (kojibus: metadata only, no files)",
		Long: `Record a build in the hub (importBuild) without uploading files: kojibus keeps
build metadata so that builds can be tagged and listed.`,
		Args: exactArgs(1, "Please specify one NVR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name, version, release, err := parseNVR(args[0])
			if err != nil {
				return usagef(cmd, "%s", err)
			}
			data := map[string]any{"name": name, "version": version, "release": release, "epoch": nil}
			f := cmd.Flags()
			if f.Changed("epoch") {
				data["epoch"] = epoch
			}
			if owner != "" {
				data["owner"] = owner
			}
			if source != "" {
				data["source"] = source
			}
			if stateName != "" {
				state := -1
				for i, n := range bus.BuildStateNames {
					if strings.EqualFold(n, stateName) {
						state = i
					}
				}
				if state < 0 {
					return usagef(cmd, "Invalid build state: %s (want one of %s)", stateName, strings.Join(bus.BuildStateNames, ", "))
				}
				data["state"] = state
			}
			if draft {
				data["draft"] = true
			}
			if f.Changed("task-id") {
				data["task_id"] = taskID
			}
			if len(extras) > 0 {
				extra, err := parseExtra(extras)
				if err != nil {
					return usagef(cmd, "%s", err)
				}
				data["extra"] = extra
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			raw, err := c.CallRaw(ctx, "importBuild", []any{data}, nil)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(raw)
			}
			var b bus.Build
			if err := json.Unmarshal(raw, &b); err != nil {
				return err
			}
			a.printf("Imported build %s (id %d)\n", b.NVR, b.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.Int64Var(&epoch, "epoch", 0, "build epoch")
	f.StringVar(&owner, "owner", "", "build owner (default: you)")
	f.StringVar(&source, "source", "", "build source (SCM URL)")
	f.StringVar(&stateName, "state", "", "build state (default COMPLETE)")
	f.BoolVar(&draft, "draft", false, "record a draft build")
	f.Int64Var(&taskID, "task-id", 0, "task that produced the build")
	f.StringArrayVarP(&extras, "extra", "x", nil, "build extra (key=value; may be repeated)")
	return cmd
}

func (a *app) tagBuildCmd() *cobra.Command {
	var force, nowait bool
	cmd := &cobra.Command{
		Use:   "tag-build [options] <tag> <pkg> [<pkg> ...]",
		Short: "Apply a tag to one or more builds",
		Args:  minArgs(2, "This command takes at least two arguments: a tag name/ID and one or more package n-v-r's"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			var tasks []int64
			for _, nvr := range args[1:] {
				kw := map[string]any{}
				if force {
					kw["force"] = true
				}
				var task *int64
				if err := c.Call(ctx, "tagBuild", []any{args[0], nvr}, kw, &task); err != nil {
					return err
				}
				// Koji answers with a tagBuild task; kojibus tags at once and answers None.
				if task != nil {
					a.printf("Created task %d\n", *task)
					tasks = append(tasks, *task)
				}
			}
			if nowait {
				return nil
			}
			return a.waitTasks(cmd, c, tasks)
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "force operation")
	cmd.Flags().BoolVar(&nowait, "nowait", false, "Do not wait on task")
	return cmd
}

func (a *app) untagBuildCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "untag-build [options] <tag> <pkg> [<pkg> ...]",
		Short: "Remove a tag from one or more builds",
		Args:  minArgs(2, "This command takes at least two arguments: a tag name/ID and one or more package n-v-r's"),
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
			var builds []bus.Build
			for _, nvr := range args[1:] {
				var b *bus.Build
				if err := c.Call(ctx, "getBuild", []any{nvr}, nil, &b); err != nil {
					return err
				}
				if b == nil {
					return failf("No such build: %s", nvr)
				}
				builds = append(builds, *b)
			}
			for _, b := range builds {
				kw := map[string]any{}
				if force {
					kw["force"] = true
				}
				if err := c.Call(ctx, "untagBuild", []any{tag.Name, b.NVR}, kw, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "force operation")
	return cmd
}

func (a *app) listTaggedCmd() *cobra.Command {
	var latest, inherit bool
	cmd := &cobra.Command{
		Use:   "list-tagged [options] <tag> [<package>]",
		Short: "List the builds or rpms in a tag",
		Args:  rangeArgs(1, 2, "A tag name must be specified"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			if _, err := a.mustTag(cmd, c, args[0]); err != nil {
				return err
			}
			kw := map[string]any{}
			if latest {
				kw["latest"] = true
			}
			if inherit {
				kw["inherit"] = true
			}
			if len(args) > 1 {
				kw["package"] = args[1]
			}
			raw, err := c.CallRaw(ctx, "listTagged", []any{args[0]}, kw)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(raw)
			}
			var builds []bus.TaggedBuild
			if err := json.Unmarshal(raw, &builds); err != nil {
				return err
			}
			if !a.quiet {
				a.printf("%-40s  %-20s  %s\n", "Build", "Tag", "Built by")
				a.printf("%s  %s  %s\n", strings.Repeat("-", 40), strings.Repeat("-", 20), strings.Repeat("-", 16))
			}
			for _, b := range builds {
				a.printf("%-40s  %-20s  %s\n", b.NVR, b.TagName, b.OwnerName)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&latest, "latest", false, "Only show the latest builds/rpms")
	cmd.Flags().BoolVar(&inherit, "inherit", false, "Follow inheritance")
	return cmd
}
