package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/hub"
)

type result struct {
	out, err string
	code     int
}

// kojictl runs the CLI in-process against a profile file.
func kojictl(t *testing.T, profile, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := RunContext(ctx, append([]string{"-c", profile}, args...), strings.NewReader(stdin), &out, &errb)
	return result{out.String(), errb.String(), code}
}

// step is one kojictl invocation and what the user must see.
type step struct {
	name    string
	args    []string
	stdin   string
	code    int
	out     []string // substrings of stdout, or a regexp when prefixed with "re:"
	exact   *string  // whole stdout
	errText string   // substring of stderr
}

func ptr(s string) *string { return &s }

func runSteps(t *testing.T, profile string, steps []step) {
	t.Helper()
	for _, s := range steps {
		r := kojictl(t, profile, s.stdin, s.args...)
		if r.code != s.code {
			t.Fatalf("%s: kojictl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", s.name, strings.Join(s.args, " "), r.code, s.code, r.out, r.err)
		}
		for _, want := range s.out {
			if re, ok := strings.CutPrefix(want, "re:"); ok {
				if !regexp.MustCompile(re).MatchString(r.out) {
					t.Errorf("%s: stdout does not match %q:\n%s", s.name, re, r.out)
				}
			} else if !strings.Contains(r.out, want) {
				t.Errorf("%s: stdout lacks %q:\n%s", s.name, want, r.out)
			}
		}
		if s.exact != nil && r.out != *s.exact {
			t.Errorf("%s: stdout =\n%s\nwant\n%s", s.name, r.out, *s.exact)
		}
		if s.errText != "" && !strings.Contains(r.err, s.errText) {
			t.Errorf("%s: stderr lacks %q:\n%s", s.name, s.errText, r.err)
		}
		if s.errText == "" && s.code == 0 && strings.TrimSpace(r.err) != "" {
			t.Errorf("%s: unexpected stderr:\n%s", s.name, r.err)
		}
	}
}

func startHub(t *testing.T) *hub.TestHub {
	t.Helper()
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv(EnvConfig, "")
	return hub.StartTestHub(t, nil)
}

// userProfile writes a profile for a user on the test hub.
func userProfile(t *testing.T, h *hub.TestHub, user, password string) string {
	t.Helper()
	data, err := os.ReadFile(h.ProfilePath())
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`(?m)^user = .*$`).ReplaceAllString(string(data), "user = "+user)
	text = regexp.MustCompile(`(?m)^password = .*$`).ReplaceAllString(text, "password = "+password)
	path := filepath.Join(t.TempDir(), user+".conf")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestCommandsEndToEnd drives every command the hub supports, in the order
// an admin would set up a build system, and checks what each one prints.
func TestCommandsEndToEnd(t *testing.T) {
	h := startHub(t)
	p := h.ProfilePath()
	credsFile := filepath.Join(t.TempDir(), "builder1.conf")
	runSteps(t, p, []step{
		{name: "hello", args: []string{"hello"}, out: []string{"re:(?m)^.+, kojiadmin!\n\nYou are using the hub at nats://.+ \\(Koji 1\\.35\\.3\\)\nAuthenticated via password\n$"}},
		{name: "hello noauth", args: []string{"--noauth", "hello"}, out: []string{"Not authenticated\n", ", anonymous user!\n"}},
		{name: "list-api one", args: []string{"list-api", "getTag"}, exact: ptr("getTag(tagInfo, strict=False, event=None, blocked=False)\ndescription: Get tag information based on the tagInfo (a tag name or id)\n")},
		{name: "list-api all", args: []string{"list-api"}, out: []string{"re:^_listapi\\(\\)\n  description: List every API method with its signature\n", "\ncreateTag(name, parent=None"}},
		{name: "list-api unknown", args: []string{"list-api", "noSuchMethod"}, code: 2, errText: "kojictl: error: Unknown method: noSuchMethod"},
		{name: "call echo filtered", args: []string{"call", "echo", "1.5"}, exact: ptr("1.5\n")},
		{name: "call python kwargs", args: []string{"call", "echo", "--python", "value={'a': [1, None, True]}"}, exact: ptr("{'a': [1, None, True]}\n")},
		{name: "call json output", args: []string{"call", "--json-output", "echo", "value=None"}, exact: ptr("null\n")},
		{name: "call json input", args: []string{"call", "--json-input", "-", "echo"}, stdin: `{"args": [{"x": 1}]}`, exact: ptr("{'x': 1}\n")},
		{name: "call fault", args: []string{"call", "getTag", "nosuch", "strict=True"}, code: 1, errText: "GenericError: No such tagInfo: 'nosuch'"},
		{name: "call bad python", args: []string{"call", "--python", "echo", "[1,"}, code: 2, errText: "invalid Python literal"},

		{name: "add-user", args: []string{"add-user", "--password-stdin", "alice"}, stdin: "alice-password\n", out: []string{"re:^Added user alice \\(\\d+\\)\n$"}},
		{name: "add-user dup", args: []string{"add-user", "alice"}, code: 1, errText: "GenericError: user already exists: alice"},
		{name: "grant-permission", args: []string{"grant-permission", "tag", "alice"}},
		{name: "grant-permission new", args: []string{"grant-permission", "--new", "--description", "run roots", "runroot", "alice"}},
		{name: "grant-permission no user", args: []string{"grant-permission", "tag", "nobody"}, code: 2, errText: "kojictl: error: No such user: nobody"},
		{name: "grant-permission description without new", args: []string{"grant-permission", "--description", "x", "tag", "alice"}, code: 2, errText: "Option new must be specified with option description."},
		{name: "list-permissions user", args: []string{"list-permissions", "--user", "alice"}, exact: ptr("tag\nrunroot\n")},
		{name: "list-permissions mine", args: []string{"list-permissions", "--mine"}, exact: ptr("admin\n")},
		{name: "list-permissions all", args: []string{"list-permissions"}, out: []string{"Permission name           Description\n", "\nadmin\n", "\nrunroot                   run roots\n"}},
		{name: "revoke-permission", args: []string{"revoke-permission", "runroot", "alice"}},
		{name: "list-permissions after revoke", args: []string{"list-permissions", "--user", "alice"}, exact: ptr("tag\n")},
		{name: "revoke-permission absent", args: []string{"revoke-permission", "runroot", "alice"}, code: 1, errText: "GenericError: user alice does not have permission: runroot"},
		{name: "disable-user", args: []string{"disable-user", "alice"}, exact: ptr("")},
		{name: "disabled user cannot log in", args: []string{"call", "login", "alice", "alice-password"}, code: 1, errText: "AuthError: logins by alice are not allowed"},
		{name: "enable-user", args: []string{"enable-user", "alice"}, exact: ptr("")},
		{name: "enabled user logs in", args: []string{"call", "login", "alice", "alice-password"}, out: []string{"session-key"}},
		{name: "disable-user no user", args: []string{"disable-user", "nobody"}, code: 1, errText: "GenericError: No such user: 'nobody'"},
		{name: "disable-user no argument", args: []string{"disable-user"}, code: 2, errText: "You must specify the username of the user to disable"},
		{name: "enable-user two arguments", args: []string{"enable-user", "alice", "bob"}, code: 2, errText: "This command only accepts one argument (username)"},

		{name: "add-host", args: []string{"add-host", "--creds-out", credsFile, "builder1", "x86_64", "aarch64"}, out: []string{"re:^builder1 added: id \\d+\n"}},
		{name: "add-host again", args: []string{"add-host", "builder1", "x86_64"}, code: 1, errText: "builder1 is already in the database"},
		{name: "add-host second", args: []string{"add-host", "builder2", "x86_64"}, out: []string{"builder2 added"}},
		{name: "edit-host", args: []string{"edit-host", "--capacity", "4", "--description", "big box", "builder1"}, exact: ptr("Edited builder1\n")},
		{name: "edit-host nothing", args: []string{"edit-host", "--capacity", "4", "builder1"}, exact: ptr("No changes made to builder1\n")},
		{name: "edit-host missing", args: []string{"edit-host", "--capacity", "4", "nohost"}, code: 1, errText: "No such host: nohost"},
		{name: "disable-host", args: []string{"disable-host", "builder2"}},
		{name: "list-hosts", args: []string{"list-hosts"}, exact: ptr(
			"Hostname Enb Rdy Load/Cap  Arches           Last Update\n" +
				"-------------------------------------------------------\n" +
				"builder1 Y   N    0.0/4.0  x86_64,aarch64   -\n" +
				"builder2 N   N    0.0/2.0  x86_64           -\n")},
		{name: "list-hosts enabled quiet", args: []string{"--quiet", "list-hosts", "--enabled", "--arch", "aarch64"}, exact: ptr("builder1 Y   N    0.0/4.0  x86_64,aarch64   -\n")},
		{name: "list-hosts disabled", args: []string{"list-hosts", "--disabled", "--quiet"}, out: []string{"builder2"}},
		{name: "enable-host", args: []string{"enable-host", "builder2"}},
		{name: "enable-host missing", args: []string{"enable-host", "nohost"}, code: 1, errText: "No such host: nohost"},
		{name: "add-host-to-channel no channel", args: []string{"add-host-to-channel", "builder1", "runroot"}, code: 1, errText: "No such channel: runroot"},
		{name: "add-host-to-channel new", args: []string{"add-host-to-channel", "--new", "builder1", "runroot"}},
		{name: "add-host-to-channel dup", args: []string{"add-host-to-channel", "builder1", "runroot"}, code: 1, errText: "GenericError: host builder1 is already subscribed to the runroot channel"},
		{name: "add-host-to-channel no host", args: []string{"add-host-to-channel", "nohost", "default"}, code: 1, errText: "No such host: nohost"},
		{name: "list-hosts channel", args: []string{"list-hosts", "--channel", "runroot", "--show-channels", "--quiet"}, out: []string{"re:^builder1 .* default runroot\n$"}},
		{name: "hostinfo", args: []string{"hostinfo", "builder1"}, out: []string{"Name: builder1\n", "Arches: x86_64 aarch64\n", "Capacity: 4.0\n", "Description: big box\n", "Enabled: yes\nReady: no\nLast Update: never\nChannels: default runroot\nActive Buildroots:\nNone\n"}},
		{name: "hostinfo missing", args: []string{"hostinfo", "nohost"}, code: 1, errText: "No such host: nohost"},
		{name: "list-channels", args: []string{"list-channels"}, out: []string{"Channel   Enabled  Ready Disbld   Load    Cap   Perc", "\ndefault         2      0      0      0      6      0%\n", "\nrunroot         1      0      0      0      4      0%\n"}},
		{name: "list-channels simple", args: []string{"list-channels", "--simple", "--quiet"}, out: []string{"\nrunroot\n"}},
		{name: "remove-host-from-channel", args: []string{"remove-host-from-channel", "builder1", "runroot"}},
		{name: "remove-host-from-channel not member", args: []string{"remove-host-from-channel", "builder1", "runroot"}, code: 1, errText: "Host builder1 is not a member of channel runroot"},

		{name: "add-tag base", args: []string{"add-tag", "f30"}},
		{name: "add-tag build", args: []string{"add-tag", "--parent", "f30", "--arches", "x86_64,aarch64", "-x", "mock.package_manager=dnf", "-x", "repo.auto=true", "-x", "n=3", "f30-build"}},
		{name: "add-tag dup extra", args: []string{"add-tag", "-x", "a=1", "-x", "a=2", "f31"}, code: 2, errText: "Duplicate extra key: a"},
		{name: "add-tag exists", args: []string{"add-tag", "f30"}, code: 1, errText: "GenericError: "},
		{name: "edit-tag", args: []string{"edit-tag", "-x", "rpm.macro.dist=.fc30", "-x", "with_debuginfo=False", "-r", "n", "--lock", "--perm", "admin", "f30-build"}},
		{name: "taginfo", args: []string{"taginfo", "f30-build"}, out: []string{
			"re:^Tag: f30-build \\[\\d+\\]\nArches: x86_64 aarch64\nGroups: \nLOCKED\nRequired permission: 'admin'\n",
			"Tag options:\n  mock.package_manager : 'dnf'\n  repo.auto : True\n  rpm.macro.dist : '.fc30'\n  with_debuginfo : False\n",
			"re:Inheritance:\n  0    \\.\\.\\.\\. f30 \\[\\d+\\]\n$"}},
		{name: "edit-tag unlock", args: []string{"edit-tag", "--unlock", "--no-perm", "f30-build"}},
		{name: "add-tag other", args: []string{"add-tag", "extras"}},
		{name: "add-tag-inheritance", args: []string{"add-tag-inheritance", "--priority", "10", "--maxdepth", "1", "--intransitive", "--pkg-filter", "^foo", "f30-build", "extras"}},
		{name: "add-tag-inheritance same priority", args: []string{"add-tag-inheritance", "--priority", "10", "f30", "extras"}},
		{name: "add-tag-inheritance again", args: []string{"add-tag-inheritance", "--priority", "20", "f30-build", "extras"}, code: 1, errText: "Please use --force if this is what you really want to do."},
		{name: "add-tag-inheritance priority clash", args: []string{"add-tag-inheritance", "--priority", "10", "f30-build", "f30", "--force"}, code: 1, errText: "There is already an active inheritance with that priority on f30-build"},
		{name: "add-tag-inheritance no tag", args: []string{"add-tag-inheritance", "nosuch", "f30"}, code: 2, errText: "No such tag: nosuch"},
		{name: "taginfo inheritance", args: []string{"taginfo", "f30-build"}, out: []string{"re:  10   MFI\\. extras \\[\\d+\\]\n    maxdepth: 1\n    package filter: \\^foo\n"}},
		{name: "list-tags", args: []string{"list-tags"}, exact: ptr("extras\nf30\nf30-build\n")},
		{name: "list-tags pattern", args: []string{"list-tags", "f30*"}, exact: ptr("f30\nf30-build\n")},
		{name: "list-tags show-id", args: []string{"list-tags", "--show-id", "extras"}, out: []string{"re:^extras \\[\\d+\\]\n$"}},
		{name: "add-target", args: []string{"add-target", "f30-candidate", "f30-build", "f30"}},
		{name: "add-target no arches", args: []string{"add-target", "bad", "f30", "f30"}, code: 1, errText: "Build tag has no arches: f30"},
		{name: "add-target no dest", args: []string{"add-target", "bad", "f30-build", "nosuch"}, code: 1, errText: "No such destination tag: nosuch"},
		{name: "list-targets", args: []string{"list-targets"}, exact: ptr(
			"Name                           Buildroot                      Destination                   \n" +
				strings.Repeat("-", 93) + "\n" +
				"f30-candidate                  f30-build                      f30                           \n")},
		{name: "taginfo targets", args: []string{"taginfo", "f30"}, out: []string{"Targets that build into this tag:\n  f30-candidate (f30-build, "}},
		{name: "taginfo buildroot", args: []string{"taginfo", "f30-build"}, out: []string{"This tag is a buildroot for one or more targets\n", "Targets that build from this tag:\n  f30-candidate\n"}},

		{name: "add-group", args: []string{"add-group", "f30-build", "build"}},
		{name: "add-group dup", args: []string{"add-group", "f30-build", "build"}, code: 1, errText: "Group build already exists for tag f30-build"},
		{name: "add-group no tag", args: []string{"add-group", "nosuch", "build"}, code: 1, errText: "No such tag: nosuch"},
		{name: "add-group-pkg", args: []string{"add-group-pkg", "f30-build", "build", "bash", "coreutils"}},
		{name: "block-group-pkg", args: []string{"block-group-pkg", "f30-build", "build", "vim"}},
		{name: "list-groups", args: []string{"list-groups", "f30-build"}, exact: ptr("build  [f30-build]\n  bash: None, mandatory  [f30-build]\n  coreutils: None, mandatory  [f30-build]\n")},
		{name: "list-groups blocked", args: []string{"list-groups", "--show-blocked", "f30-build", "build"}, out: []string{"  vim: None, mandatory  [f30-build] [BLOCKED]\n"}},
		{name: "list-groups other group", args: []string{"list-groups", "f30-build", "nogroup"}, exact: ptr("")},

		{name: "add-pkg no owner", args: []string{"add-pkg", "f30", "foo"}, code: 2, errText: "Please specify an owner for the package(s)"},
		{name: "add-pkg", args: []string{"add-pkg", "--owner", "alice", "f30", "foo", "bar"}, exact: ptr("Adding 2 packages to tag f30\n")},
		{name: "add-pkg again", args: []string{"add-pkg", "--owner", "alice", "f30", "foo"}, exact: ptr("Package foo already exists in tag f30\nAdding 0 packages to tag f30\n")},
		{name: "add-pkg no user", args: []string{"add-pkg", "--owner", "nobody", "f30", "foo"}, code: 1, errText: "No such user: nobody"},
		{name: "block-pkg", args: []string{"block-pkg", "f30", "bar"}},
		{name: "block-pkg missing", args: []string{"block-pkg", "f30", "nopkg"}, code: 1, errText: "Package nopkg doesn't exist in tag f30"},
		{name: "list-pkgs tag", args: []string{"list-pkgs", "--tag", "f30"}, exact: ptr(
			"Package                 Tag                     Extra Arches     Owner          \n" +
				"----------------------- ----------------------- ---------------- ---------------\n" +
				"foo                     f30                                      alice\n")},
		{name: "list-pkgs blocked", args: []string{"list-pkgs", "--tag", "f30", "--show-blocked", "--quiet"}, out: []string{"bar                     f30                                      alice           [BLOCKED]\n"}},
		{name: "list-pkgs inherited", args: []string{"list-pkgs", "--tag", "f30-build", "--quiet"}, out: []string{"foo                     f30 "}},
		{name: "list-pkgs all", args: []string{"list-pkgs"}, out: []string{"Package\n-----------------------\n", "\nfoo\n"}},
		{name: "list-pkgs no tag", args: []string{"list-pkgs", "--tag", "nosuch"}, code: 1, errText: "No such tag: nosuch"},

		{name: "import-build", args: []string{"import-build", "--source", "git://x/foo#1", "foo-1.0-1"}, out: []string{"re:^Imported build foo-1\\.0-1 \\(id \\d+\\)\n$"}},
		{name: "import-build second", args: []string{"import-build", "foo-1.1-1"}},
		{name: "import-build bad nvr", args: []string{"import-build", "foo"}, code: 2, errText: "invalid format: foo"},
		{name: "tag-build", args: []string{"tag-build", "f30", "foo-1.0-1", "foo-1.1-1"}, exact: ptr("")},
		{name: "tag-build no build", args: []string{"tag-build", "f30", "nope-1-1"}, code: 1, errText: "GenericError: "},
		{name: "list-tagged", args: []string{"list-tagged", "f30"}, out: []string{
			"Build                                     Tag                   Built by\n",
			"\nfoo-1.1-1                                 f30                   kojiadmin\n",
			"\nfoo-1.0-1                                 f30                   kojiadmin\n"}},
		{name: "list-tagged latest inherit", args: []string{"--quiet", "list-tagged", "--latest", "--inherit", "f30-build", "foo"}, exact: ptr("foo-1.1-1                                 f30                   kojiadmin\n")},
		{name: "untag-build", args: []string{"untag-build", "f30", "foo-1.1-1"}},
		{name: "list-tagged after untag", args: []string{"--quiet", "list-tagged", "f30"}, exact: ptr("foo-1.0-1                                 f30                   kojiadmin\n")},
		{name: "list-tags of a build", args: []string{"list-tags", "--build", "foo-1.0-1"}, exact: ptr("f30\n")},
		{name: "list-tags of an untagged build", args: []string{"list-tags", "--build", "foo-1.1-1"}, exact: ptr("")},
		{name: "untag-build no build", args: []string{"untag-build", "f30", "nope-1-1"}, code: 1, errText: "No such build: nope-1-1"},
		{name: "list-tagged no tag", args: []string{"list-tagged", "nosuch"}, code: 1, errText: "No such tag: nosuch"},
	})

	// The credentials file add-host --creds-out wrote logs in as the host.
	st, err := os.Stat(credsFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("creds file mode %v, want 0600", st.Mode().Perm())
	}
	prof, err := bus.LoadProfile(credsFile, "koji")
	if err != nil {
		t.Fatal(err)
	}
	if prof.Host != "builder1" || prof.User != "builder1" || prof.AuthType != "password" || prof.Password == "" {
		t.Errorf("creds profile = %+v", prof)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc, err := prof.Dial(ctx, "test-host")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	if err := prof.Login(ctx, hc); err != nil {
		t.Fatalf("host login with --creds-out file: %v", err)
	}
	var hostID int64
	if err := hc.Call(ctx, "host.getID", nil, nil, &hostID); err != nil || hostID == 0 {
		t.Errorf("host.getID = %d, %v", hostID, err)
	}

	// Rotated credentials: the new file connects, the old one no longer does.
	rotated := filepath.Join(t.TempDir(), "builder1-new.conf")
	runSteps(t, p, []step{
		{name: "rotate-host-creds", args: []string{"rotate-host-creds", "--creds-out", rotated, "builder1"}, out: []string{"new credentials of builder1 written to"}},
		{name: "rotate-host-creds no file", args: []string{"rotate-host-creds", "builder1"}, code: 1, errText: "--creds-out is required"},
	})
	if c, err := prof.Dial(ctx, "test-host-old"); err == nil {
		c.Close()
		t.Error("the host's old credentials still connect after rotate-host-creds")
	}
	newProf, err := bus.LoadProfile(rotated, "koji")
	if err != nil {
		t.Fatal(err)
	}
	nc, err := newProf.Dial(ctx, "test-host-new")
	if err != nil {
		t.Fatalf("rotated credentials: %v", err)
	}
	nc.Close()
}

// TestJSONOutput checks that --json prints parseable JSON with Koji's fields.
func TestJSONOutput(t *testing.T) {
	h := startHub(t)
	p := h.ProfilePath()
	runSteps(t, p, []step{
		{name: "add-host", args: []string{"add-host", "b1", "x86_64"}},
		{name: "add-tag", args: []string{"add-tag", "--arches", "x86_64", "-x", "k=1", "t1"}},
		{name: "add-target", args: []string{"add-target", "tgt", "t1"}, code: 1, errText: "No such destination tag: tgt"},
		{name: "add-target ok", args: []string{"add-target", "tgt", "t1", "t1"}},
		{name: "add-group", args: []string{"add-group", "t1", "build"}},
		{name: "add-group-pkg", args: []string{"add-group-pkg", "t1", "build", "bash"}},
		{name: "add-pkg", args: []string{"add-pkg", "--owner", "kojiadmin", "t1", "foo"}},
		{name: "import-build", args: []string{"import-build", "foo-1-1"}},
		{name: "tag-build", args: []string{"tag-build", "t1", "foo-1-1"}},
	})
	tests := []struct {
		args  []string
		check func(t *testing.T, v any)
	}{
		{[]string{"hello"}, func(t *testing.T, v any) {
			m := v.(map[string]any)
			if m["version"] != "1.35.3" || m["user"].(map[string]any)["name"] != "kojiadmin" {
				t.Errorf("hello: %v", m)
			}
		}},
		{[]string{"list-hosts"}, func(t *testing.T, v any) {
			l := v.([]any)
			if len(l) != 1 || l[0].(map[string]any)["name"] != "b1" || l[0].(map[string]any)["arches"] != "x86_64" {
				t.Errorf("list-hosts: %v", l)
			}
		}},
		{[]string{"list-hosts", "--show-channels"}, func(t *testing.T, v any) {
			if ch := v.([]any)[0].(map[string]any)["channels"]; len(ch.([]any)) != 1 || ch.([]any)[0] != "default" {
				t.Errorf("list-hosts channels: %v", ch)
			}
		}},
		{[]string{"hostinfo", "b1"}, func(t *testing.T, v any) {
			if m := v.(map[string]any); m["name"] != "b1" || m["capacity"] == nil {
				t.Errorf("hostinfo: %v", m)
			}
		}},
		{[]string{"list-channels"}, func(t *testing.T, v any) {
			found := false
			for _, c := range v.([]any) {
				m := c.(map[string]any)
				if m["name"] == "default" {
					found = m["enabled_host"] == 1.0 && m["capacity"] == 2.0
				}
			}
			if !found {
				t.Errorf("list-channels: %v", v)
			}
		}},
		{[]string{"list-tags"}, func(t *testing.T, v any) {
			if l := v.([]any); len(l) != 1 || l[0].(map[string]any)["name"] != "t1" {
				t.Errorf("list-tags: %v", l)
			}
		}},
		{[]string{"taginfo", "t1"}, func(t *testing.T, v any) {
			m := v.(map[string]any)
			if m["name"] != "t1" || m["extra"].(map[string]any)["k"] != 1.0 || m["arches"] != "x86_64" {
				t.Errorf("taginfo: %v", m)
			}
		}},
		{[]string{"list-targets"}, func(t *testing.T, v any) {
			if l := v.([]any); len(l) != 1 || l[0].(map[string]any)["build_tag_name"] != "t1" {
				t.Errorf("list-targets: %v", l)
			}
		}},
		{[]string{"list-groups", "t1"}, func(t *testing.T, v any) {
			g := v.([]any)[0].(map[string]any)
			if g["name"] != "build" || g["packagelist"].([]any)[0].(map[string]any)["package"] != "bash" {
				t.Errorf("list-groups: %v", g)
			}
		}},
		{[]string{"list-pkgs", "--tag", "t1"}, func(t *testing.T, v any) {
			if l := v.([]any); len(l) != 1 || l[0].(map[string]any)["package_name"] != "foo" {
				t.Errorf("list-pkgs: %v", l)
			}
		}},
		{[]string{"list-tagged", "t1"}, func(t *testing.T, v any) {
			if l := v.([]any); len(l) != 1 || l[0].(map[string]any)["nvr"] != "foo-1-1" {
				t.Errorf("list-tagged: %v", l)
			}
		}},
		{[]string{"list-permissions"}, func(t *testing.T, v any) {
			if l := v.([]any); len(l) < 10 || l[0].(map[string]any)["name"] != "admin" {
				t.Errorf("list-permissions: %v", l)
			}
		}},
		{[]string{"list-permissions", "--mine"}, func(t *testing.T, v any) {
			if l := v.([]any); len(l) != 1 || l[0] != "admin" {
				t.Errorf("list-permissions --mine: %v", l)
			}
		}},
		{[]string{"list-api", "getTag"}, func(t *testing.T, v any) {
			if s, _ := v.(map[string]any)["getTag"].(string); !strings.HasPrefix(s, "getTag(tagInfo") {
				t.Errorf("list-api: %v", v)
			}
		}},
		{[]string{"call", "getTag", "t1"}, func(t *testing.T, v any) {
			if v.(map[string]any)["name"] != "t1" {
				t.Errorf("call: %v", v)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, "_"), func(t *testing.T) {
			r := kojictl(t, p, "", append([]string{"--json"}, tt.args...)...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.err)
			}
			var v any
			if err := json.Unmarshal([]byte(r.out), &v); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, r.out)
			}
			tt.check(t, v)
		})
	}
}

// TestErrors covers Koji-style error reporting and exit codes.
func TestErrors(t *testing.T) {
	h := startHub(t)
	p := h.ProfilePath()
	alice := userProfile(t, h, "alice", "alice-secret-pw")
	runSteps(t, p, []step{
		{name: "add-user alice", args: []string{"add-user", "--password", "alice-secret-pw", "alice"}},
		{name: "completion", args: []string{"completion", "bash"}, out: []string{"bash completion V2 for kojictl"}},
		{name: "unknown command", args: []string{"no-such-command"}, code: 2, errText: "kojictl: error: unknown command"},
		{name: "unknown flag", args: []string{"list-tags", "--bogus"}, code: 2, errText: "kojictl: error: no such option: --bogus"},
		{name: "missing args", args: []string{"add-tag"}, code: 2, errText: "Usage: kojictl add-tag [options] <name>"},
		{name: "too many args", args: []string{"wait-repo", "a", "b"}, code: 2, errText: "Only one tag may be specified"},
		{name: "mutually exclusive", args: []string{"wait-repo", "--request", "--no-request", "x"}, code: 2},
		{name: "fault", args: []string{"taginfo", "nosuch"}, code: 1, errText: "No such tag: nosuch"},
		{name: "hub fault text", args: []string{"call", "getTag", "nosuch", "strict=True"}, code: 1, errText: "GenericError: No such tagInfo: 'nosuch'\n"},
		{name: "invalid method", args: []string{"call", "noSuchMethod"}, code: 1, errText: "GenericError: Invalid method: noSuchMethod"},
		{name: "parameter error", args: []string{"call", "getTag"}, code: 1, errText: "ParameterError: getTag() missing 1 required positional argument: 'tagInfo'"},
		{name: "noauth write", args: []string{"--noauth", "add-tag", "x"}, code: 1, errText: "ActionNotAllowed"},
	})
	runSteps(t, alice, []step{
		{name: "no permission", args: []string{"add-tag", "x"}, code: 1, errText: "ActionNotAllowed: "},
		{name: "add-group without perm", args: []string{"add-group", "x", "build"}, code: 2, errText: "This action requires tag or admin privileges"},
		{name: "hello as alice", args: []string{"hello"}, out: []string{", alice!\n"}},
	})
	runSteps(t, p, []step{{name: "nothing created", args: []string{"list-tags"}, exact: ptr("")}})
}

// TestProfileLoading covers -c, $KOJIBUS_CONFIG, -p and the profile errors.
func TestProfileLoading(t *testing.T) {
	h := startHub(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good, err := os.ReadFile(h.ProfilePath())
	if err != nil {
		t.Fatal(err)
	}
	multi := write("multi.conf", string(good)+"\n[other]\nserver = "+h.Profile.Server+"\nauthtype = noauth\n")
	badPW := write("badpw.conf", regexp.MustCompile(`(?m)^password = .*$`).ReplaceAllString(string(good), "password = wrong"))
	tests := []struct {
		name    string
		args    []string
		env     string
		code    int
		errText string
		out     string
	}{
		{"missing file", []string{"-c", filepath.Join(dir, "nope.conf"), "hello"}, "", 1, "nope.conf: no such file or directory", ""},
		{"missing profile", []string{"-c", h.ProfilePath(), "-p", "nosuch", "hello"}, "", 1, "no profile [nosuch] (have: koji)", ""},
		{"no server", []string{"-c", write("noserver.conf", "[koji]\nuser = x\n"), "hello"}, "", 1, "profile [koji] has no server", ""},
		{"bad authtype", []string{"-c", write("badauth.conf", "[koji]\nserver = nats://127.0.0.1:1\nauthtype = kerberos\n"), "hello"}, "", 1, `unknown authtype "kerberos"`, ""},
		{"parse error", []string{"-c", write("broken.conf", "server = x\n"), "hello"}, "", 1, "line 1: option outside of any section", ""},
		{"bad password", []string{"-c", badPW, "hello"}, "", 1, "AuthError: invalid username or password", ""},
		{"env default", []string{"list-tags"}, h.ProfilePath(), 0, "", ""},
		{"env default missing", []string{"list-tags"}, filepath.Join(dir, "absent.conf"), 1, "absent.conf", ""},
		{"-p other noauth profile", []string{"-c", multi, "-p", "other", "hello"}, "", 0, "", "Not authenticated\n"},
		{"-p koji of multi", []string{"-c", multi, "-p", "koji", "hello"}, "", 0, "", ", kojiadmin!\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvConfig, tt.env)
			var out, errb bytes.Buffer
			code := Run(tt.args, strings.NewReader(""), &out, &errb)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out.String(), errb.String())
			}
			if !strings.Contains(errb.String(), tt.errText) {
				t.Errorf("stderr %q lacks %q", errb.String(), tt.errText)
			}
			if !strings.Contains(out.String(), tt.out) {
				t.Errorf("stdout %q lacks %q", out.String(), tt.out)
			}
		})
	}
}

// TestLoginLogout checks that login keeps a session that later commands
// reuse, and that logout ends it on the hub.
func TestLoginLogout(t *testing.T) {
	h := startHub(t)
	p := userProfile(t, h, "kojiadmin", "")
	good, _ := os.ReadFile(h.ProfilePath())
	if err := os.WriteFile(p, good, 0o600); err != nil {
		t.Fatal(err)
	}
	runSteps(t, p, []step{
		{name: "logout when not logged in", args: []string{"logout"}, exact: ptr("Not logged in\n")},
		{name: "login", args: []string{"login"}, exact: ptr("Successfully logged in as kojiadmin\n")},
	})
	runSteps(t, p, []step{
		{name: "hello on kept session", args: []string{"hello"}, out: []string{", kojiadmin!\n"}},
		{name: "write on kept session", args: []string{"add-tag", "kept"}},
	})
	// kojibus: the connection itself is the user's, so a kept session does
	// not stand in for the password (docs/security.md).
	broken := regexp.MustCompile(`(?m)^password = .*$`).ReplaceAllString(string(good), "password = wrong")
	if err := os.WriteFile(p, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	runSteps(t, p, []step{
		{name: "kept session without the password", args: []string{"hello"}, code: 1, errText: "AuthError: invalid username or password"},
	})
	if err := os.WriteFile(p, good, 0o600); err != nil {
		t.Fatal(err)
	}
	runSteps(t, p, []step{
		{name: "logout", args: []string{"logout"}, exact: ptr("Logged out\n")},
		{name: "logout again", args: []string{"logout"}, exact: ptr("Not logged in\n")},
	})
}

// TestWaitRepo covers wait-repo's paths the hub can serve: a current repo,
// a repo request, builds that must appear, and koji's timeout text.
func TestWaitRepo(t *testing.T) {
	h := startHub(t)
	p := h.ProfilePath()
	runSteps(t, p, []step{
		{name: "add-tag manual", args: []string{"add-tag", "--arches", "x86_64", "manual"}},
		{name: "add-tag auto", args: []string{"add-tag", "--arches", "x86_64", "-x", "repo.auto=True", "auto"}},
		{name: "add-target", args: []string{"add-target", "auto-candidate", "auto", "auto"}},
		{name: "timeout", args: []string{"wait-repo", "--timeout", "0.01", "manual"}, code: 1,
			errText: "manual is not a build tag for any target\nThe --request option is recommended for faster results\nThis tag is not configured for automatic regeneration\nUnsuccessfully waited 0:00 for a new manual repo\n"},
		{name: "timeout quiet", args: []string{"--quiet", "wait-repo", "--timeout", "0.01", "manual"}, code: 1},
		{name: "no such tag", args: []string{"wait-repo", "nosuch"}, code: 2, errText: "No such tag: nosuch"},
		{name: "request", args: []string{"wait-repo", "--request", "manual"}, out: []string{"re:^Got repo \\d+\n$"}, errText: "manual is not a build tag for any target"},
		{name: "auto repo", args: []string{"wait-repo", "--target", "auto-candidate"}, out: []string{"re:^Got repo \\d+\n$"}, errText: "The --request option is recommended"},
		{name: "add-pkg", args: []string{"add-pkg", "--owner", "kojiadmin", "auto", "foo"}},
		{name: "import-build", args: []string{"import-build", "foo-1-1"}},
		{name: "build not tagged yet", args: []string{"--quiet", "wait-repo", "--timeout", "0.01", "--build", "foo-1-1", "auto"}, code: 1},
		{name: "build not tagged text", args: []string{"wait-repo", "--timeout", "0.01", "--build", "foo-1-1", "auto"}, code: 1,
			errText: "No foo builds in tag auto\nUnsuccessfully waited 0:00 for foo-1-1 to appear in the auto repo\n"},
		{name: "tag-build", args: []string{"tag-build", "auto", "foo-1-1"}},
		{name: "build in repo", args: []string{"--quiet", "wait-repo", "--build", "foo-1-1", "auto"}, exact: ptr("")},
		{name: "json", args: []string{"--json", "--quiet", "wait-repo", "auto"}, out: []string{`"tag_name": "auto"`, `"state": 1`}},
		{name: "regen-repo", args: []string{"regen-repo", "manual"}, out: []string{"Regenerating repo for tag: manual\n", "re:Got repo \\d+\n$"}, errText: "manual is not a build tag"},
		{name: "regen-repo nowait", args: []string{"regen-repo", "--nowait", "--target", "auto-candidate"}, out: []string{"Regenerating repo for tag: auto\n", "re:Created repo request: \\d+\n$"}},
		{name: "regen-repo no tag", args: []string{"regen-repo", "nosuch"}, code: 1, errText: "No such tag: nosuch"},
	})
}

// TestWaitRepoWaitsForEvent starts wait-repo before the build is tagged:
// it must return once the tag-build and the repo that follows happen.
func TestWaitRepoWaitsForEvent(t *testing.T) {
	h := startHub(t)
	p := h.ProfilePath()
	runSteps(t, p, []step{
		{name: "add-tag", args: []string{"add-tag", "--arches", "x86_64", "-x", "repo.auto=True", "auto"}},
		{name: "add-pkg", args: []string{"add-pkg", "--owner", "kojiadmin", "auto", "foo"}},
		{name: "import-build", args: []string{"import-build", "foo-2-1"}},
	})
	done := make(chan result, 1)
	go func() {
		done <- kojictl(t, p, "", "--quiet", "wait-repo", "--timeout", "1", "--build", "foo-2-1", "auto")
	}()
	select {
	case r := <-done:
		t.Fatalf("wait-repo returned before the build was tagged: %+v", r)
	case <-time.After(500 * time.Millisecond):
	}
	runSteps(t, p, []step{{name: "tag-build", args: []string{"tag-build", "auto", "foo-2-1"}}})
	select {
	case r := <-done:
		if r.code != 0 {
			t.Fatalf("wait-repo: exit %d: %s", r.code, r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("wait-repo did not return after the build was tagged")
	}
}

// TestWatchEvents reads the event stream: --last, --filter, --since, --json.
func TestWatchEvents(t *testing.T) {
	h := startHub(t)
	p := h.ProfilePath()
	// Events reach the stream just after their commit: wait for the last one.
	tagged := make(chan *nats.Msg, 1)
	sub, err := h.Admin.Conn().ChanSubscribe(bus.EventPrefix+"build.tag", tagged)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := h.Admin.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	runSteps(t, p, []step{
		{name: "add-tag", args: []string{"add-tag", "--arches", "x86_64", "t"}},
		{name: "add-pkg", args: []string{"add-pkg", "--owner", "kojiadmin", "t", "foo"}},
		{name: "import-build", args: []string{"import-build", "foo-1-1"}},
		{name: "tag-build", args: []string{"tag-build", "t", "foo-1-1"}},
	})
	select {
	case <-tagged:
	case <-time.After(10 * time.Second):
		t.Fatal("no build.tag event")
	}
	r := kojictl(t, p, "", "watch-events", "--last", "1", "--filter", "build.tag")
	if r.code != 0 || !regexp.MustCompile(`^\d+ build\.tag .*name=foo .*release=1 tag=t type=Tag user=kojiadmin version=1\n$`).MatchString(r.out) {
		t.Fatalf("watch-events --last 1 --filter build.tag: %d\n%s%s", r.code, r.out, r.err)
	}
	r = kojictl(t, p, "", "watch-events", "--filter", "*.add")
	if r.code != 0 || !strings.Contains(r.out, " package.add ") || strings.Contains(r.out, "build.tag") {
		t.Fatalf("watch-events --filter *.add: %d\n%s%s", r.code, r.out, r.err)
	}
	r = kojictl(t, p, "", "--json", "watch-events", "--filter", "build.tag")
	var ev struct {
		ID      uint64         `json:"id"`
		Seq     uint64         `json:"seq"`
		Address string         `json:"address"`
		Props   map[string]any `json:"props"`
		Body    map[string]any `json:"body"`
	}
	if err := json.Unmarshal([]byte(r.out), &ev); err != nil || ev.Address != "build.tag" || ev.Props["tag"] != "t" || ev.Body["build"] == nil || ev.Seq == 0 {
		t.Fatalf("watch-events --json: %v\n%s%s", err, r.out, r.err)
	}
	r = kojictl(t, p, "", "watch-events", "--since", strconvU(ev.Seq))
	if r.code != 0 || !strings.HasPrefix(r.out, strconvU(ev.ID)+" build.tag ") {
		t.Fatalf("watch-events --since %d: %d\n%s%s", ev.Seq, r.code, r.out, r.err)
	}
	all := kojictl(t, p, "", "watch-events")
	last3 := kojictl(t, p, "", "watch-events", "--last", "3")
	lines := strings.Split(strings.TrimSpace(all.out), "\n")
	if want := strings.Join(lines[len(lines)-3:], "\n") + "\n"; last3.out != want {
		t.Errorf("--last 3 =\n%s\nwant\n%s", last3.out, want)
	}
	runSteps(t, p, []step{{name: "two start options", args: []string{"watch-events", "--last", "1", "--since", "1"}, code: 2}})

	// --follow from the next sequence prints an event that happens after it started.
	js, err := jetstream.New(h.Admin.Conn())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- RunContext(ctx, []string{"-c", p, "watch-events", "--follow", "--since", strconvU(info.State.LastSeq + 1), "--filter", "tag.*"}, strings.NewReader(""), &out, &out)
	}()
	runSteps(t, p, []step{{name: "add-tag followed", args: []string{"add-tag", "followed"}}})
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(out.String(), "tag=followed") {
		select {
		case <-deadline.C:
			t.Fatalf("--follow did not print the new tag event:\n%s", out.String())
		case code := <-done:
			t.Fatalf("--follow exited (%d) before the event:\n%s", code, out.String())
		case <-tick.C:
		}
	}
	cancel()
	if code := <-done; code != 1 {
		t.Errorf("interrupted --follow: exit %d", code)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func strconvU(n uint64) string { return strconv.FormatUint(n, 10) }
