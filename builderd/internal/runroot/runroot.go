// Package runroot is the builder side of Koji's runroot plugin: it reads
// /etc/kojid/plugins/runroot.conf exactly as Koji 1.35's
// plugins/builder/runroot.py does (same options, same defaults, same
// GenericError messages) and plans the mounts of one runroot task the way
// the plugin's _get_path_params, do_extra_mounts and do_mounts do, without
// mounting anything.
//
// The one kojibus addition: a requested read-write bind mount whose source
// resolves through a symlink to somewhere outside its [pathN] section's path
// is refused (see Config.Plan).
package runroot

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
)

// DefaultConfigPath is where kojid reads the plugin's configuration.
const DefaultConfigPath = "/etc/kojid/plugins/runroot.conf"

// PathSection is one [pathN] section: where a mountpoint seen inside the
// buildroot comes from on the builder.
type PathSection struct{ Name, Mountpoint, Path, Fstype, Options string }

// Config is runroot.conf.
type Config struct {
	// DefaultMounts are mounted (with their section's options) in every runroot.
	DefaultMounts []string
	// SafeRoots are the prefixes a requested read-write mount must start with.
	SafeRoots []string
	// PathSubs are applied in order, as plain string replacements, to
	// requested mounts.
	PathSubs [][2]string
	// Paths are the [pathN] sections in numeric order of N.
	Paths []PathSection
	// InternalDevSetup is [runroot] internal_dev_setup, nil when unset.
	InternalDevSetup *bool
}

// Mount is one planned mount.
type Mount struct {
	Source  string // device, export or (bind) host directory
	Target  string // path inside the buildroot, e.g. /mnt/koji
	Fstype  string
	Options string
	// ReadWrite is set for requested mounts (their "ro" rewritten to "rw").
	ReadWrite bool
}

// LoadConfig reads runroot.conf. Like Koji (non-strict read_config_files),
// a missing file gives the defaults. Errors name the file and wrap the
// *bus.Fault or *config.ParseError.
func LoadConfig(path string) (*Config, error) {
	f, err := config.Load(path)
	if errors.Is(err, os.ErrNotExist) {
		return &Config{}, nil
	}
	if err != nil {
		return nil, err // config.Load already names the file
	}
	return configFrom(f)
}

// ParseConfig parses runroot.conf text; name is used in error messages.
func ParseConfig(name string, data []byte) (*Config, error) {
	f, err := config.Parse(name, data)
	if err != nil {
		return nil, err
	}
	return configFrom(f)
}

func configFrom(f *config.File) (*Config, error) {
	c, err := readConfig(f)
	if err != nil {
		var pe *config.ParseError
		if errors.As(err, &pe) || f.Name == "" {
			return nil, err // a ParseError already names the file
		}
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	return c, nil
}

// readConfig follows RunRootTask._read_config step by step, so that a file
// with several problems reports the same one first.
func readConfig(f *config.File) (*Config, error) {
	c := &Config{}

	if rr := f.Section("runroot"); rr != nil {
		if _, ok := rr.Get("internal_dev_setup"); ok {
			v, err := rr.Bool("internal_dev_setup", false)
			if err != nil {
				return nil, err
			}
			c.InternalDevSetup = &v
		}
	}

	paths := f.Section("paths")
	if v, ok := paths.Get("default_mounts"); ok {
		c.DefaultMounts = splitList(v)
	}
	if v, ok := paths.Get("safe_roots"); ok {
		c.SafeRoots = splitList(v)
	}
	if v, ok := paths.Get("path_subs"); ok {
		for _, line := range pySplitLines(v) {
			line = strings.TrimFunc(line, pyIsSpace)
			if line == "" {
				continue
			}
			sub := strings.Split(line, ",")
			if len(sub) != 2 {
				// Koji formats the split list: ['a', 'b', 'c']
				return nil, bus.GenericError("bad runroot substitution: %s", pyList(sub))
			}
			c.PathSubs = append(c.PathSubs, [2]string{strings.TrimSpace(sub[0]), strings.TrimSpace(sub[1])})
		}
	}

	// [pathN] sections, sorted by N (stable: Python's sorted keeps file order
	// for path1/path01). Koji selects them with re.match(r'path\d+') and sorts
	// with int(name[4:]), which raises for e.g. "path1x"; that is refused here.
	type numbered struct {
		name, num string
	}
	var secs []numbered
	for _, name := range f.Sections() {
		rest, ok := strings.CutPrefix(name, "path")
		if !ok || rest == "" {
			continue
		}
		r, _ := utf8.DecodeRuneInString(rest)
		if !unicode.IsDigit(r) {
			continue // not matched by path\d+
		}
		if strings.TrimLeft(rest, "0123456789") != "" {
			return nil, bus.GenericError("bad config: invalid path section name: %s", name)
		}
		secs = append(secs, numbered{name, strings.TrimLeft(rest, "0")})
	}
	sort.SliceStable(secs, func(i, j int) bool {
		a, b := secs[i].num, secs[j].num
		if len(a) != len(b) {
			return len(a) < len(b)
		}
		return a < b
	})
	for _, s := range secs {
		sec := f.Section(s.name)
		ps := PathSection{Name: s.name}
		var ok [4]bool
		ps.Mountpoint, ok[0] = sec.Get("mountpoint")
		ps.Path, ok[1] = sec.Get("path")
		ps.Fstype, ok[2] = sec.Get("fstype")
		ps.Options, ok[3] = sec.Get("options")
		if !ok[0] || !ok[1] || !ok[2] || !ok[3] {
			return nil, bus.GenericError("bad config: missing options in %s section", s.name)
		}
		c.Paths = append(c.Paths, ps)
	}

	// Koji checks only the left side of path_subs; kojibus checks both.
	all := append(append([]string{}, c.DefaultMounts...), c.SafeRoots...)
	for _, sub := range c.PathSubs {
		all = append(all, sub[0], sub[1])
	}
	for _, p := range all {
		if !strings.HasPrefix(p, "/") {
			return nil, bus.GenericError("bad config: all paths (default_mounts, safe_roots, path_subs) needs to be absolute: %s", p)
		}
	}
	return c, nil
}

// splitList splits a comma-separated option, trimming items and dropping
// empty ones.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// planned is a Mount plus the section it was resolved through.
type planned struct {
	Mount
	section *PathSection
	request string // the normalised requested mount (read-write only)
}

// Plan validates and lists the mounts of one runroot task: the default
// mounts first (with their section's options), then the requested
// read-write mounts (the task's "mounts" option). Nothing is returned unless
// every mount is valid, and the first error is the one Koji would raise.
//
// Requested mounts are normalised (path.Clean; unlike Python's
// os.path.normpath it does not keep a leading "//"), must start with one of
// SafeRoots, then get PathSubs applied; a mount requested twice is listed
// once. Bind sources must be existing directories on the host.
//
// kojibus addition (Koji does not check this): a requested read-write bind
// mount must not escape its section through a symlink. After
// filepath.EvalSymlinks, its source must still lie under the section's
// (resolved) path, otherwise the mount is refused with "read-write mount
// point is not safe". Otherwise a symlink planted under a writable safe root
// (e.g. /mnt/workdir/tmp/x -> /etc) would be bind-mounted read-write into
// the buildroot. Non-bind sources (server:/export) are not local paths and
// are not checked. The check is made at planning time; the caller should
// mount promptly.
func (c *Config) Plan(requested []string) ([]Mount, error) {
	var defaults []planned
	for _, d := range c.DefaultMounts {
		m, err := c.pathParams(d, false)
		if err != nil {
			return nil, err
		}
		defaults = append(defaults, m)
	}
	if err := checkMounts(defaults); err != nil {
		return nil, err
	}

	var extra []planned
	seen := map[string]bool{}
	for _, req := range requested {
		mount := path.Clean(req)
		safe := false
		for _, root := range c.SafeRoots {
			if strings.HasPrefix(mount, root) {
				safe = true
				break
			}
		}
		// normpath should have removed any .. dirs, but just in case...
		if !safe || strings.Contains(mount, "/../") {
			return nil, bus.GenericError("read-write mount point is not safe: %s", mount)
		}
		target := mount
		for _, sub := range c.PathSubs {
			target = strings.ReplaceAll(target, sub[0], sub[1])
		}
		if seen[target] {
			continue
		}
		seen[target] = true
		m, err := c.pathParams(target, true)
		if err != nil {
			return nil, err
		}
		m.request = mount
		extra = append(extra, m)
	}
	if err := checkMounts(extra); err != nil {
		return nil, err
	}

	out := make([]Mount, 0, len(defaults)+len(extra))
	for _, m := range append(defaults, extra...) {
		out = append(out, m.Mount)
	}
	return out, nil
}

// pathParams is Koji's _get_path_params: the first section whose mountpoint
// is a string prefix of p.
func (c *Config) pathParams(p string, rw bool) (planned, error) {
	var sec *PathSection
	for i := range c.Paths {
		if strings.HasPrefix(p, c.Paths[i].Mountpoint) {
			sec = &c.Paths[i]
			break
		}
	}
	if sec == nil {
		return planned{}, bus.GenericError("bad config: missing corresponding mountpoint")
	}
	opts := strings.Split(sec.Options, ",")
	for i, o := range opts {
		if rw && o == "ro" {
			opts[i] = "rw"
		}
	}
	rel := strings.TrimPrefix(p[len(sec.Mountpoint):], "/") // one slash only, as Koji
	return planned{
		Mount: Mount{
			Source:    pyJoin(sec.Path, rel),
			Target:    p,
			Fstype:    sec.Fstype,
			Options:   strings.Join(opts, ","),
			ReadWrite: rw,
		},
		section: sec,
	}, nil
}

// checkMounts is the validation half of Koji's do_mounts (same order, per
// mount), plus the kojibus symlink check for read-write bind mounts.
func checkMounts(ms []planned) error {
	for i := range ms {
		m := &ms[i]
		if !strings.HasPrefix(m.Target, "/") {
			return bus.GenericError("invalid mount point: %s", m.Target)
		}
		opts := strings.Split(m.Options, ",")
		if contains(opts, "bind") {
			if st, err := os.Stat(m.Source); err != nil || !st.IsDir() {
				return bus.GenericError("No such directory or mount: %s", m.Source)
			}
			m.Fstype = "none"
			if m.ReadWrite && !within(m.Source, m.section.Path) {
				return bus.GenericError("read-write mount point is not safe: %s", m.request)
			}
		}
		if contains(opts, "bg") {
			return bus.GenericError("bad config: background mount not allowed")
		}
	}
	return nil
}

// within reports whether src, with symlinks resolved, lies under root (also
// resolved). Anything that cannot be resolved is not within.
func within(src, root string) bool {
	rs, err := filepath.EvalSymlinks(src)
	if err != nil {
		return false
	}
	rr, err := filepath.EvalSymlinks(root)
	if err != nil {
		return false
	}
	return rs == rr || strings.HasPrefix(rs, strings.TrimSuffix(rr, "/")+"/")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// pyJoin is Python's os.path.join(a, b) for two components: an absolute b
// replaces a, an empty b leaves a trailing slash.
func pyJoin(a, b string) string {
	switch {
	case strings.HasPrefix(b, "/"):
		return b
	case a == "" || strings.HasSuffix(a, "/"):
		return a + b
	default:
		return a + "/" + b
	}
}

// pyList renders a list of strings as Python's str(list) does.
func pyList(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = bus.PyStr(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// QuoteCommand turns a list command into the shell string Koji runs
// (cmdstr in runroot.py): every argument single-quoted, each embedded single
// quote replaced by
//
//	'\''
func QuoteCommand(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// ResultText is the task result Koji reports for a successful (string)
// command: "<basename of the first word without '='> completed
// successfully", or "(none) completed successfully" when every word is an
// assignment, as Koji does. Words are split as Python's str.split().
func ResultText(command string) string {
	cmd := "(none)"
	for _, w := range strings.FieldsFunc(command, pyIsSpace) {
		if !strings.Contains(w, "=") {
			cmd = w[strings.LastIndex(w, "/")+1:] // os.path.basename
			break
		}
	}
	return cmd + " completed successfully"
}

// pySplitLines is Python's str.splitlines().
func pySplitLines(s string) []string {
	var lines []string
	for s != "" {
		i := strings.IndexFunc(s, func(r rune) bool {
			switch r {
			case '\n', '\r', '\v', '\f', 0x1c, 0x1d, 0x1e, 0x85, 0x2028, 0x2029:
				return true
			}
			return false
		})
		if i < 0 {
			lines = append(lines, s)
			break
		}
		lines = append(lines, s[:i])
		_, n := utf8.DecodeRuneInString(s[i:])
		if strings.HasPrefix(s[i:], "\r\n") {
			n = 2
		}
		s = s[i+n:]
	}
	return lines
}

// pyIsSpace is Python's str.isspace for one character (it also counts the
// \x1c-\x1f separators).
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f)
}
