package cli

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

func (a *app) tagCommands() []*cobra.Command {
	return []*cobra.Command{
		a.addTagCmd(), a.editTagCmd(), a.addTagInheritanceCmd(), a.listTagsCmd(), a.taginfoCmd(),
		a.addTargetCmd(), a.listTargetsCmd(),
		a.addGroupCmd(), a.groupPkgCmd("add-group-pkg", "Add a package to a group's package listing", "groupPackageListAdd"),
		a.groupPkgCmd("block-group-pkg", "Block a package from a group's package listing", "groupPackageListBlock"),
		a.listGroupsCmd(), a.addPkgCmd(), a.blockPkgCmd(), a.unblockPkgCmd(), a.removePkgCmd(), a.listPkgsCmd(),
	}
}

func (a *app) getTag(cmd *cobra.Command, c *bus.Client, name any) (*bus.Tag, error) {
	var t *bus.Tag
	if err := c.Call(cmd.Context(), "getTag", []any{name}, nil, &t); err != nil {
		return nil, err
	}
	return t, nil
}

// mustTag is koji's "No such tag: %s" check.
func (a *app) mustTag(cmd *cobra.Command, c *bus.Client, name string) (*bus.Tag, error) {
	t, err := a.getTag(cmd, c, name)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return nil, failf("No such tag: %s", name)
	}
	return t, nil
}

func (a *app) addTagCmd() *cobra.Command {
	var parent, arches string
	var mavenSupport, includeAll bool
	var extras []string
	cmd := &cobra.Command{
		Use:   "add-tag [options] <name>",
		Short: "Add a new tag to the database",
		Args:  exactArgs(1, "Please specify a name for the tag"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			kw := map[string]any{}
			if parent != "" {
				kw["parent"] = parent
			}
			if arches != "" {
				kw["arches"] = parseArches(arches)
			}
			if mavenSupport {
				kw["maven_support"] = true
			}
			if includeAll {
				kw["maven_include_all"] = true
			}
			if len(extras) > 0 {
				extra, err := parseExtra(extras)
				if err != nil {
					return usagef(cmd, "%s", err)
				}
				kw["extra"] = extra
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			var id int64
			if err := c.Call(ctx, "createTag", []any{args[0]}, kw, &id); err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(map[string]any{"id": id, "name": args[0]})
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&parent, "parent", "", "Set a parent tag with priority 0")
	f.StringVar(&arches, "arches", "", "Specify arches")
	f.BoolVar(&mavenSupport, "maven-support", false, "Enable creation of Maven repos for this tag")
	f.BoolVar(&includeAll, "include-all", false, "Include all packages in this tag when generating Maven repos")
	f.StringArrayVarP(&extras, "extra", "x", nil, "Set tag extra option (key=value; may be repeated)")
	return cmd
}

func (a *app) editTagCmd() *cobra.Command {
	var arches, perm, rename string
	var extras, removeExtra, blockExtra []string
	cmd := &cobra.Command{
		Use:   "edit-tag [options] <name>",
		Short: "Alter tag information",
		Args:  exactArgs(1, "Please specify a name for the tag"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			f := cmd.Flags()
			kw := map[string]any{}
			if f.Changed("arches") {
				kw["arches"] = parseArches(arches)
			}
			if f.Changed("no-perm") {
				kw["perm"] = nil
			} else if f.Changed("perm") {
				kw["perm"] = perm
			}
			if v := triState(cmd, "lock", "unlock"); v != nil {
				kw["locked"] = *v
			}
			if rename != "" {
				kw["name"] = rename
			}
			if v := triState(cmd, "maven-support", "no-maven-support"); v != nil {
				kw["maven_support"] = *v
			}
			if v := triState(cmd, "include-all", "no-include-all"); v != nil {
				kw["maven_include_all"] = *v
			}
			if len(extras) > 0 {
				extra, err := parseExtra(extras)
				if err != nil {
					return usagef(cmd, "%s", err)
				}
				kw["extra"] = extra
			}
			kw["remove_extra"] = nonNil(removeExtra)
			kw["block_extra"] = nonNil(blockExtra)
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			return c.Call(ctx, "editTag2", []any{args[0]}, kw, nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&arches, "arches", "", "Specify arches")
	f.StringVar(&perm, "perm", "", "Specify permission requirement")
	f.Bool("no-perm", false, "Remove permission requirement")
	f.Bool("lock", false, "Lock the tag")
	f.Bool("unlock", false, "Unlock the tag")
	f.StringVar(&rename, "rename", "", "Rename the tag")
	f.Bool("maven-support", false, "Enable creation of Maven repos for this tag")
	f.Bool("no-maven-support", false, "Disable creation of Maven repos for this tag")
	f.Bool("include-all", false, "Include all packages in this tag when generating Maven repos")
	f.Bool("no-include-all", false, "Do not include all packages in this tag when generating Maven repos")
	f.StringArrayVarP(&extras, "extra", "x", nil, "Set tag extra option (key=value; may be repeated)")
	f.StringArrayVarP(&removeExtra, "remove-extra", "r", nil, "Remove tag extra option (may be repeated)")
	f.StringArrayVarP(&blockExtra, "block-extra", "b", nil, "Block inherited tag extra option (may be repeated)")
	return cmd
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (a *app) addTagInheritanceCmd() *cobra.Command {
	var priority, maxdepth int
	var intransitive, noconfig, force bool
	var pkgFilter string
	cmd := &cobra.Command{
		Use:   "add-tag-inheritance [options] <tag> <parent-tag>",
		Short: "Add to a tag's inheritance",
		Args:  exactArgs(2, "This command takes exctly two argument: a tag name or ID and that tag's new parent name or ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			tag, err := a.getTag(cmd, c, args[0])
			if err != nil {
				return err
			}
			if tag == nil {
				return usagef(cmd, "No such tag: %s", args[0])
			}
			parent, err := a.getTag(cmd, c, args[1])
			if err != nil {
				return err
			}
			if parent == nil {
				return usagef(cmd, "No such tag: %s", args[1])
			}
			var data []map[string]any
			raw, err := c.CallRaw(ctx, "getInheritanceData", []any{tag.ID}, nil)
			if err != nil {
				return err
			}
			if err := decodeJSON(raw, &data); err != nil {
				return err
			}
			for _, d := range data {
				if jsonInt(d["parent_id"]) == parent.ID && !force {
					a.warn("Error: You are attempting to add %s as %s's parent even though it already is %s's parent.", parent.Name, tag.Name, tag.Name)
					return failf("Please use --force if this is what you really want to do.")
				}
			}
			for _, d := range data {
				if jsonInt(d["priority"]) == int64(priority) {
					return failf("Error: There is already an active inheritance with that priority on %s, please specify a different priority with --priority.", tag.Name)
				}
			}
			link := map[string]any{
				"parent_id":    parent.ID,
				"priority":     priority,
				"maxdepth":     nil,
				"intransitive": intransitive,
				"noconfig":     noconfig,
				"pkg_filter":   pkgFilter,
			}
			if cmd.Flags().Changed("maxdepth") {
				link["maxdepth"] = maxdepth
			}
			data = append(data, link)
			return c.Call(ctx, "setInheritanceData", []any{tag.ID, data}, nil, nil)
		},
	}
	f := cmd.Flags()
	f.IntVar(&priority, "priority", 0, "Specify priority")
	f.IntVar(&maxdepth, "maxdepth", 0, "Specify max depth")
	f.BoolVar(&intransitive, "intransitive", false, "Set intransitive")
	f.BoolVar(&noconfig, "noconfig", false, "Set to packages only")
	f.StringVar(&pkgFilter, "pkg-filter", "", "Specify the package filter")
	f.BoolVar(&force, "force", false, "Force adding a parent to a tag that already has that parent tag")
	return cmd
}

// jsonInt reads an integer from a decoded JSON value.
func jsonInt(v any) int64 {
	switch x := v.(type) {
	case json.Number:
		n, _ := x.Int64()
		return n
	case float64:
		return int64(x)
	case int64:
		return x
	case int:
		return int64(x)
	}
	return -1
}

func (a *app) listTagsCmd() *cobra.Command {
	var showID, verbose, unlocked bool
	var build, pkg string
	cmd := &cobra.Command{
		Use:   "list-tags [options] [pattern...]",
		Short: "Print the list of tags",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			kw := map[string]any{}
			if pkg != "" {
				var p *bus.Package
				err := c.Call(ctx, "getPackage", []any{pkg}, nil, &p)
				if err != nil && !isInvalidMethod(err) {
					return err
				}
				if err == nil && p == nil {
					return failf("No such package: %s", pkg)
				}
				kw["package"] = pkg
			}
			if build != "" {
				var b *bus.Build
				if err := c.Call(ctx, "getBuild", []any{build}, nil, &b); err != nil {
					return err
				}
				if b == nil {
					return failf("No such build: %s", build)
				}
				kw["build"] = b.ID
			}
			var rows []map[string]any
			raw, err := callPaged(ctx, c, "listTags", nil, kw)
			if err != nil {
				return err
			}
			if err := decodeJSON(raw, &rows); err != nil {
				return err
			}
			var tags []map[string]any
			for _, t := range rows {
				name, _ := t["name"].(string)
				if unlocked && t["locked"] == true {
					continue
				}
				if len(args) > 0 {
					match := false
					for _, p := range args {
						match = match || fnmatch(name, p)
					}
					if !match {
						continue
					}
				}
				tags = append(tags, t)
			}
			sort.SliceStable(tags, func(i, j int) bool { return fmt.Sprint(tags[i]["name"]) < fmt.Sprint(tags[j]["name"]) })
			if a.jsonOut {
				if tags == nil {
					tags = []map[string]any{}
				}
				return a.printJSON(tags)
			}
			for _, t := range tags {
				line := fmt.Sprint(t["name"])
				if showID {
					line += fmt.Sprintf(" [%d]", jsonInt(t["id"]))
				}
				if verbose {
					if p, ok := t["perm"].(string); ok && p != "" {
						line += fmt.Sprintf(" [%s perm]", p)
					}
					if t["locked"] == true {
						line += " [locked]"
					}
				}
				a.println(line)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&showID, "show-id", false, "Show tag ids")
	f.BoolVarP(&verbose, "verbose", "v", false, "Show more information")
	f.BoolVar(&unlocked, "unlocked", false, "Only show unlocked tags")
	f.StringVar(&build, "build", "", "Show tags associated with a build")
	f.StringVar(&pkg, "package", "", "Show tags associated with a package")
	return cmd
}

func inheritanceFlags(l bus.InheritanceLink) string {
	flags := []byte("....")
	if l.MaxDepth != nil {
		flags[0] = 'M'
	}
	if l.PkgFilter != "" {
		flags[1] = 'F'
	}
	if l.Intransitive {
		flags[2] = 'I'
	}
	if l.NoConfig {
		flags[3] = 'N'
	}
	return string(flags)
}

func (a *app) taginfoCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "taginfo <tag> [<tag> ...]",
		Short: "Print basic information about a tag",
		Args:  minArgs(1, "Please specify a tag"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			var raws []json.RawMessage
			var tags []*bus.Tag
			for _, name := range args {
				raw, err := c.CallRaw(ctx, "getTag", []any{idOrName(name)}, nil)
				if err != nil {
					return err
				}
				var t *bus.Tag
				if err := json.Unmarshal(raw, &t); err != nil {
					return err
				}
				if t == nil {
					return failf("No such tag: %s", name)
				}
				raws = append(raws, raw)
				tags = append(tags, t)
			}
			if a.jsonOut {
				if len(raws) == 1 {
					return a.printJSON(raws[0])
				}
				return a.printJSON(raws)
			}
			for i, t := range tags {
				if i > 0 {
					a.println()
				}
				if err := a.printTagInfo(cmd, c, t); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func (a *app) printTagInfo(cmd *cobra.Command, c *bus.Client, t *bus.Tag) error {
	ctx := cmd.Context()
	a.printf("Tag: %s [%d]\n", t.Name, t.ID)
	a.printf("Arches: %s\n", strOr(t.Arches, "None"))
	var groups []bus.TagGroup
	err := c.Call(ctx, "getTagGroups", []any{t.ID}, nil, &groups)
	if err != nil && !isInvalidMethod(err) {
		return err
	}
	names := make([]string, 0, len(groups))
	for _, g := range groups {
		names = append(names, g.Name)
	}
	sort.Strings(names)
	a.printf("Groups: %s\n", strings.Join(names, ", "))
	if t.Locked {
		a.println("LOCKED")
	}
	if t.PermID != nil {
		a.printf("Required permission: %s\n", bus.PyStr(strOr(t.Perm, strconv.FormatInt(*t.PermID, 10))))
	}
	if t.MavenSupport || t.MavenIncludeAll {
		a.printf("Maven support?: %s\n", map[bool]string{true: "yes", false: "no"}[t.MavenSupport])
		a.printf("Include all Maven archives?: %s\n", map[bool]string{true: "yes", false: "no"}[t.MavenIncludeAll])
	}
	if len(t.Extra) > 0 {
		a.println("Tag options:")
		for _, k := range sortedKeys(t.Extra) {
			a.printf("  %s : %s\n", k, pyRepr(normalizeJSON(t.Extra[k])))
		}
	}
	var destTargets, buildTargets []bus.BuildTarget
	if err := c.Call(ctx, "getBuildTargets", nil, map[string]any{"destTagID": t.ID}, &destTargets); err != nil {
		return err
	}
	if err := c.Call(ctx, "getBuildTargets", nil, map[string]any{"buildTagID": t.ID}, &buildTargets); err != nil {
		return err
	}
	repoOf := func(tagID int64) (*bus.Repo, error) {
		var r *bus.Repo
		err := c.Call(ctx, "getRepo", []any{tagID}, nil, &r)
		if isInvalidMethod(err) {
			return nil, nil
		}
		return r, err
	}
	if len(destTargets) > 0 {
		a.println("Targets that build into this tag:")
		for _, tg := range destTargets {
			r, err := repoOf(tg.BuildTag)
			if err != nil {
				return err
			}
			if r == nil {
				a.printf("  %s (%s, no active repo)\n", tg.Name, tg.BuildTagName)
			} else {
				a.printf("  %s (%s, repo #%d)\n", tg.Name, tg.BuildTagName, r.ID)
			}
		}
	}
	if len(buildTargets) > 0 {
		a.println("This tag is a buildroot for one or more targets")
		r, err := repoOf(t.ID)
		if err != nil {
			return err
		}
		if r == nil {
			a.println("Current repo: no active repo")
		} else {
			a.printf("Current repo: repo#%d: %s\n", r.ID, r.CreationTime)
		}
		a.println("Targets that build from this tag:")
		for _, tg := range buildTargets {
			a.printf("  %s\n", tg.Name)
		}
	}
	var links []bus.InheritanceLink
	if err := c.Call(ctx, "getInheritanceData", []any{t.ID}, nil, &links); err != nil {
		return err
	}
	a.println("Inheritance:")
	for _, l := range links {
		a.printf("  %-4d %s %s [%d]\n", l.Priority, inheritanceFlags(l), l.Name, l.ParentID)
		if l.MaxDepth != nil {
			a.printf("    maxdepth: %d\n", *l.MaxDepth)
		}
		if l.PkgFilter != "" {
			a.printf("    package filter: %s\n", l.PkgFilter)
		}
	}
	return nil
}

// normalizeJSON turns values decoded without UseNumber back into json.Number
// for integers, so pyRepr prints 1 and not 1.0.
func normalizeJSON(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	if decodeJSON(b, &out) != nil {
		return v
	}
	return out
}

func (a *app) addTargetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "add-target <name> <build tag> [<dest tag>]",
		Short: "Create a new build target",
		Args:  rangeArgs(2, 3, "Please specify a target name, a build tag, and destination tag"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			name, buildTag := args[0], args[1]
			destTag := name
			if len(args) > 2 {
				destTag = args[2]
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			bt, err := a.getTag(cmd, c, buildTag)
			if err != nil {
				return err
			}
			if bt == nil {
				return failf("No such tag: %s", buildTag)
			}
			if bt.Arches == nil || strings.TrimSpace(*bt.Arches) == "" {
				return failf("Build tag has no arches: %s", buildTag)
			}
			dt, err := a.getTag(cmd, c, destTag)
			if err != nil {
				return err
			}
			if dt == nil {
				return failf("No such destination tag: %s", destTag)
			}
			return c.Call(ctx, "createBuildTarget", []any{name, buildTag, destTag}, nil, nil)
		},
	}
}

func (a *app) listTargetsCmd() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "list-targets [options]",
		Short: "List the build targets",
		Args:  exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			var targs []any
			if name != "" {
				targs = []any{name}
			}
			raw, err := c.CallRaw(ctx, "getBuildTargets", targs, nil)
			if err != nil {
				return err
			}
			var targets []bus.BuildTarget
			if err := json.Unmarshal(raw, &targets); err != nil {
				return err
			}
			if name != "" && len(targets) == 0 {
				return failf("No such build target: %s", name)
			}
			if a.jsonOut {
				return a.printJSON(raw)
			}
			sort.SliceStable(targets, func(i, j int) bool { return targets[i].Name < targets[j].Name })
			if !a.quiet {
				a.printf("%-30s %-30s %-30s\n", "Name", "Buildroot", "Destination")
				a.println(strings.Repeat("-", 93))
			}
			for _, t := range targets {
				a.printf("%-30s %-30s %-30s\n", t.Name, t.BuildTagName, t.DestTagName)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "Specify the build target name")
	return cmd
}

func (a *app) addGroupCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "add-group <tag> <group>",
		Short: "Add a group to a tag",
		Args:  exactArgs(2, "Please specify a tag name and a group name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			tag, group := args[0], args[1]
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			allowed := false
			for _, p := range []string{"admin", "tag"} {
				var ok bool
				if err := c.Call(ctx, "hasPerm", []any{p}, nil, &ok); err != nil {
					return err
				}
				if allowed = ok; allowed {
					break
				}
			}
			if !allowed {
				return usagef(cmd, "This action requires tag or admin privileges")
			}
			if _, err := a.mustTag(cmd, c, tag); err != nil {
				return err
			}
			var groups []bus.TagGroup
			if err := c.Call(ctx, "getTagGroups", []any{tag}, map[string]any{"inherit": false}, &groups); err != nil {
				return err
			}
			for _, g := range groups {
				if g.Name == group {
					return failf("Group %s already exists for tag %s", group, tag)
				}
			}
			return c.Call(ctx, "groupListAdd", []any{tag, group}, nil, nil)
		},
	}
}

func (a *app) groupPkgCmd(use, short, method string) *cobra.Command {
	return &cobra.Command{
		Use:   use + " <tag> <group> <pkg> [<pkg> ...]",
		Short: short,
		Args:  minArgs(3, "You must specify a tag name, group name, and one or more package names"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			for _, pkg := range args[2:] {
				if err := c.Call(ctx, method, []any{args[0], args[1], pkg}, nil, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func (a *app) listGroupsCmd() *cobra.Command {
	var showBlocked bool
	cmd := &cobra.Command{
		Use:   "list-groups [options] <tag> [<group>]",
		Short: "Print the group listings",
		Args:  rangeArgs(1, 2, "Incorrect number of arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			kw := map[string]any{}
			if showBlocked {
				kw["incl_blocked"] = true
			}
			raw, err := c.CallRaw(ctx, "getTagGroups", []any{args[0]}, kw)
			if err != nil {
				return err
			}
			var groups []bus.TagGroup
			if err := json.Unmarshal(raw, &groups); err != nil {
				return err
			}
			sort.SliceStable(groups, func(i, j int) bool { return groups[i].Name < groups[j].Name })
			if len(args) > 1 {
				var keep []bus.TagGroup
				for _, g := range groups {
					if g.Name == args[1] {
						keep = append(keep, g)
					}
				}
				groups = keep
			}
			if a.jsonOut {
				if groups == nil {
					groups = []bus.TagGroup{}
				}
				return a.printJSON(groups)
			}
			tagNames := map[int64]string{}
			var tags []bus.Tag
			if err := c.Call(ctx, "listTags", nil, nil, &tags); err != nil {
				return err
			}
			for _, t := range tags {
				tagNames[t.ID] = t.Name
			}
			tagName := func(id int64) string {
				if n, ok := tagNames[id]; ok {
					return n
				}
				return strconv.FormatInt(id, 10)
			}
			blocked := func(b bool) string {
				if b {
					return " [BLOCKED]"
				}
				return ""
			}
			for _, g := range groups {
				a.printf("%s  [%s]%s\n", g.Name, tagName(g.TagID), blocked(g.Blocked))
				reqs := append([]bus.TagGroupReq{}, g.GroupList...)
				sort.SliceStable(reqs, func(i, j int) bool { return reqs[i].Name < reqs[j].Name })
				for _, r := range reqs {
					a.printf("  @%s  [%s]%s\n", r.Name, tagName(r.TagID), blocked(r.Blocked))
				}
				pkgs := append([]bus.TagGroupPackage{}, g.PackageList...)
				sort.SliceStable(pkgs, func(i, j int) bool { return pkgs[i].Package < pkgs[j].Package })
				for _, p := range pkgs {
					bao := "None"
					if p.BaseArchOnly != nil {
						bao = pyRepr(*p.BaseArchOnly)
					}
					a.printf("  %s: %s, %s  [%s]%s\n", p.Package, bao, p.Type, tagName(p.TagID), blocked(p.Blocked))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&showBlocked, "show-blocked", false, "Show blocked packages and groups")
	return cmd
}

// tagPackages returns a tag's package list by name.
func (a *app) tagPackages(cmd *cobra.Command, c *bus.Client, tagID int64, inherited bool) (map[string]bus.TagPackage, error) {
	kw := map[string]any{"tagID": tagID, "with_owners": false}
	if inherited {
		kw["inherited"] = true
	}
	var pkgs []bus.TagPackage
	if err := c.Call(cmd.Context(), "listPackages", nil, kw, &pkgs); err != nil {
		return nil, err
	}
	out := map[string]bus.TagPackage{}
	for _, p := range pkgs {
		out[p.PackageName] = p
	}
	return out, nil
}

func (a *app) addPkgCmd() *cobra.Command {
	var owner, extraArches string
	var force bool
	cmd := &cobra.Command{
		Use:   "add-pkg [options] --owner <owner> <tag> <package> [<package> ...]",
		Short: "Add a package to the listing for tag",
		Args:  minArgs(2, "Please specify a tag and at least one package"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if owner == "" {
				return usagef(cmd, "Please specify an owner for the package(s)")
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			var u *bus.User
			if err := c.Call(ctx, "getUser", []any{owner}, nil, &u); err != nil {
				return err
			}
			if u == nil {
				return failf("No such user: %s", owner)
			}
			tag, err := a.mustTag(cmd, c, args[0])
			if err != nil {
				return err
			}
			existing, err := a.tagPackages(cmd, c, tag.ID, false)
			if err != nil {
				return err
			}
			var toAdd []string
			for _, p := range args[1:] {
				if _, ok := existing[p]; ok {
					a.printf("Package %s already exists in tag %s\n", p, args[0])
					continue
				}
				toAdd = append(toAdd, p)
			}
			// koji's --force has no default: None when not given
			kw := map[string]any{"force": nil, "block": false}
			if force {
				kw["force"] = true
			}
			if extraArches != "" {
				kw["extra_arches"] = parseArches(extraArches)
			}
			a.printf("Adding %d packages to tag %s\n", len(toAdd), tag.Name)
			for _, p := range toAdd {
				if err := c.Call(ctx, "packageListAdd", []any{args[0], p, owner}, kw, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&owner, "owner", "", "Specify owner")
	f.StringVar(&extraArches, "extra-arches", "", "Specify extra arches")
	f.BoolVar(&force, "force", false, "Override blocks if necessary")
	return cmd
}

func (a *app) blockPkgCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "block-pkg [options] <tag> <package> [<package> ...]",
		Short: "Block a package in the listing for tag",
		Args:  minArgs(2, "Please specify a tag and at least one package"),
		RunE: func(cmd *cobra.Command, args []string) error {
			missing := func(p string) { a.warn("Package %s doesn't exist in tag %s", p, args[0]) }
			return a.checkedPkgListCall(cmd, args, true, missing, "packageListBlock", map[string]any{"force": force})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "Override blocks and owner if necessary")
	return cmd
}

func (a *app) listPkgsCmd() *cobra.Command {
	var owner, tagName, pkg string
	var noinherit, showBlocked, showDups bool
	cmd := &cobra.Command{
		Use:   "list-pkgs [options]",
		Short: "Print the package listing for tag or for owner",
		Args:  exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			kw := map[string]any{}
			if owner != "" {
				var u *bus.User
				if err := c.Call(ctx, "getUser", []any{owner}, nil, &u); err != nil {
					return err
				}
				if u == nil {
					return failf("No such user: %s", owner)
				}
				kw["userID"] = u.ID
			}
			if tagName != "" {
				t, err := a.mustTag(cmd, c, tagName)
				if err != nil {
					return err
				}
				kw["tagID"] = t.ID
			}
			if pkg != "" {
				kw["pkgID"] = pkg
			}
			allPkgs := len(kw) == 0
			if tagName != "" {
				kw["inherited"] = !noinherit
				if showDups {
					kw["with_dups"] = true
				}
			}
			raw, err := c.CallRaw(ctx, "listPackages", nil, kw)
			if err != nil {
				return err
			}
			var pkgs []bus.TagPackage
			if err := json.Unmarshal(raw, &pkgs); err != nil {
				return err
			}
			if !allPkgs && !showBlocked {
				kept := pkgs[:0]
				for _, p := range pkgs {
					if !p.Blocked {
						kept = append(kept, p)
					}
				}
				pkgs = kept
			}
			if a.jsonOut {
				if pkgs == nil {
					pkgs = []bus.TagPackage{}
				}
				return a.printJSON(pkgs)
			}
			if len(pkgs) == 0 {
				return failf("(no matching packages)")
			}
			if !a.quiet {
				if allPkgs {
					a.println("Package")
					a.println(strings.Repeat("-", 23))
				} else {
					a.printf("%-23s %-23s %-16s %-15s\n", "Package", "Tag", "Extra Arches", "Owner")
					a.printf("%s %s %s %s\n", strings.Repeat("-", 23), strings.Repeat("-", 23), strings.Repeat("-", 16), strings.Repeat("-", 15))
				}
			}
			for _, p := range pkgs {
				if allPkgs || p.TagName == "" {
					a.println(p.PackageName)
					continue
				}
				line := fmt.Sprintf("%-23s %-23s %-16s %-15s", p.PackageName, p.TagName, strOr(p.ExtraArches, ""), strOr(p.OwnerName, ""))
				if p.Blocked {
					line += " [BLOCKED]"
				}
				a.println(strings.TrimRight(line, " "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&owner, "owner", "", "Specify owner")
	f.StringVar(&tagName, "tag", "", "Specify tag")
	f.StringVar(&pkg, "package", "", "Specify package")
	f.BoolVar(&noinherit, "noinherit", false, "Don't follow inheritance")
	f.BoolVar(&showBlocked, "show-blocked", false, "Show blocked packages")
	f.BoolVar(&showDups, "show-dups", false, "Show superseded owners")
	return cmd
}
