package buildroot

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Tag extra options that say where a tag's buildroots come from (read
// through getBuildConfig, so inherited).
const (
	// ExtraRootfs is a path on the builder: a root filesystem directory
	// (used as it is, read-only) or a tarball (any compression tar reads).
	ExtraRootfs = "kojibus.rootfs"
	// ExtraDebian is a Debian suite (e.g. bookworm) to bootstrap with
	// mmdebstrap, with the tag's build group packages included.
	ExtraDebian = "kojibus.rootfs.debian"
	// ExtraDebianMirror is the mirror (default: the builder's apt sources).
	ExtraDebianMirror = "kojibus.rootfs.debian.mirror"
	// ExtraDebianVariant is mmdebstrap's --variant (default minbase).
	ExtraDebianVariant = "kojibus.rootfs.debian.variant"
)

// Source is where a buildroot's root filesystem comes from.
type Source struct {
	Kind     string   `json:"kind"` // "dir", "tar" or "debian"
	Path     string   `json:"path,omitempty"`
	Suite    string   `json:"suite,omitempty"`
	Mirror   string   `json:"mirror,omitempty"`
	Variant  string   `json:"variant,omitempty"`
	Packages []string `json:"packages,omitempty"` // the build group's, for debian
	// Size and MTime of a tarball: part of the cache key, so a replaced
	// tarball is extracted again.
	Size  int64 `json:"size,omitempty"`
	MTime int64 `json:"mtime,omitempty"`
}

// ErrNoSource says the tag names no root filesystem.
var ErrNoSource = errors.New("no buildroot source")

// SourceFromExtra reads a tag's build config extras. groupPackages gives
// the tag's build group packages; it is called only for a Debian source
// (mmdebstrap installs them; a prepared rootfs is used as it is).
func SourceFromExtra(extra map[string]any, groupPackages func() ([]string, error)) (Source, error) {
	str := func(k string) string { s, _ := extra[k].(string); return strings.TrimSpace(s) }
	if suite := str(ExtraDebian); suite != "" {
		variant := str(ExtraDebianVariant)
		if variant == "" {
			variant = "minbase"
		}
		pkgs, err := groupPackages()
		if err != nil {
			return Source{}, err
		}
		sort.Strings(pkgs)
		return Source{Kind: "debian", Suite: suite, Mirror: str(ExtraDebianMirror), Variant: variant, Packages: pkgs}, nil
	}
	p := str(ExtraRootfs)
	if p == "" {
		return Source{}, fmt.Errorf("%w: set the tag extra %s (a rootfs directory or tarball on the builder) or %s (a Debian suite)", ErrNoSource, ExtraRootfs, ExtraDebian)
	}
	if !filepath.IsAbs(p) {
		return Source{}, fmt.Errorf("%s must be an absolute path: %s", ExtraRootfs, p)
	}
	fi, err := os.Stat(p)
	if err != nil {
		return Source{}, fmt.Errorf("buildroot source %s: %w", p, err)
	}
	if fi.IsDir() {
		return Source{Kind: "dir", Path: p}, nil
	}
	return Source{Kind: "tar", Path: p, Size: fi.Size(), MTime: fi.ModTime().UnixNano()}, nil
}

// Cache keeps one root filesystem per tag, repo and source, made once and
// shared read-only by every buildroot of that repo (each gets its own
// overlay). When a newer repo's entry is made, the tag's older unused ones
// are removed.
type Cache struct {
	dir string
	log *slog.Logger

	mu      sync.Mutex
	entries map[string]*cacheEntry
}

type cacheEntry struct {
	ready chan struct{}
	path  string
	err   error
	refs  int
}

// NewCache returns a cache under dir.
func NewCache(dir string, log *slog.Logger) *Cache {
	return &Cache{dir: dir, log: log, entries: map[string]*cacheEntry{}}
}

// Get returns the root filesystem for a tag's repo, making it when needed
// (its output to out), and a release to call when the buildroot is gone.
func (c *Cache) Get(ctx context.Context, tagID, repoID int64, src Source, out io.Writer) (string, func(), error) {
	if src.Kind == "dir" {
		return src.Path, func() {}, nil
	}
	key := cacheKey(tagID, repoID, src)
	c.mu.Lock()
	e, ok := c.entries[key]
	if !ok {
		e = &cacheEntry{ready: make(chan struct{}), path: filepath.Join(c.dir, key)}
		c.entries[key] = e
		go c.make(tagID, e, src, out)
	}
	e.refs++
	c.mu.Unlock()
	release := func() {
		c.mu.Lock()
		e.refs--
		c.mu.Unlock()
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		release()
		return "", nil, ctx.Err()
	}
	if e.err != nil {
		release()
		c.mu.Lock()
		if c.entries[key] == e {
			delete(c.entries, key) // the next buildroot tries again
		}
		c.mu.Unlock()
		return "", nil, e.err
	}
	return e.path, release, nil
}

// make builds an entry into a temporary directory renamed into place, so a
// half-made root is never used, and an entry left by an earlier builderd
// is reused.
func (c *Cache) make(tagID int64, e *cacheEntry, src Source, out io.Writer) {
	defer close(e.ready)
	if fi, err := os.Stat(e.path); err == nil && fi.IsDir() {
		return
	}
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		e.err = err
		return
	}
	tmp, err := os.MkdirTemp(c.dir, ".new-")
	if err != nil {
		e.err = err
		return
	}
	// Not the task's context: other buildroots may be waiting on this one.
	var cmd *exec.Cmd
	switch src.Kind {
	case "tar":
		cmd = exec.Command("tar", "--numeric-owner", "-C", tmp, "-xf", src.Path)
	case "debian":
		args := []string{"--variant=" + src.Variant, "--skip=cleanup/apt/lists"}
		if len(src.Packages) > 0 {
			args = append(args, "--include="+strings.Join(src.Packages, ","))
		}
		args = append(args, src.Suite, tmp)
		if src.Mirror != "" {
			args = append(args, src.Mirror)
		}
		cmd = exec.Command("mmdebstrap", args...)
	default:
		e.err = fmt.Errorf("unknown buildroot source kind %q", src.Kind)
		return
	}
	fmt.Fprintf(out, "making buildroot cache: %s\n", strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		_ = os.RemoveAll(tmp)
		e.err = fmt.Errorf("%s: %w", strings.Join(cmd.Args, " "), err)
		return
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		e.err = err
		return
	}
	if err := os.Rename(tmp, e.path); err != nil {
		_ = os.RemoveAll(tmp)
		e.err = err
		return
	}
	c.log.Info("buildroot cache made", "path", e.path)
	c.prune(tagID, e)
}

// prune removes the tag's other cache entries nobody uses.
func (c *Cache) prune(tagID int64, keep *cacheEntry) {
	prefix := strconv.FormatInt(tagID, 10) + "-"
	names, _ := os.ReadDir(c.dir)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range names {
		p := filepath.Join(c.dir, n.Name())
		if !strings.HasPrefix(n.Name(), prefix) || p == keep.path {
			continue
		}
		if e, ok := c.entries[n.Name()]; ok {
			if e.refs > 0 {
				continue
			}
			delete(c.entries, n.Name())
		}
		if err := os.RemoveAll(p); err != nil {
			c.log.Warn("remove old buildroot cache", "path", p, "err", err)
		}
	}
}

// cacheKey names an entry <tag>-<repo>-<hash of the source> (a tarball's
// size and time included).
func cacheKey(tagID, repoID int64, src Source) string {
	h := sha256.New()
	_ = json.NewEncoder(h).Encode(src)
	return fmt.Sprintf("%d-%d-%s", tagID, repoID, hex.EncodeToString(h.Sum(nil))[:16])
}
