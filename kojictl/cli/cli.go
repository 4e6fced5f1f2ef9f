// Package cli is kojictl: Koji's command line verbs, options and output
// formats, talking to a kojibus hub over NATS. Run is the whole program;
// kojictl/main.go only calls it, so tests drive the CLI in-process.
package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

// Exit codes: koji's. 1 for a failed command (hub fault, error()), 2 for a
// usage error (parser.error()).
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// EnvConfig names the environment variable holding the default profile file.
const EnvConfig = "KOJIBUS_CONFIG"

// usageError is koji's parser.error(): usage text, the message, exit 2.
type usageError struct {
	cmd *cobra.Command
	msg string
}

func (e *usageError) Error() string { return e.msg }

// exitError is koji's error(): a message on stderr (may be empty) and an exit code.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd, msg: fmt.Sprintf(format, args...)}
}

func failf(format string, args ...any) error {
	return &exitError{code: exitFail, msg: fmt.Sprintf(format, args...)}
}

// app is one kojictl invocation: global options, the profile, the lazily
// opened connection and session.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	configPath  string
	profileName string
	quiet       bool
	jsonOut     bool
	noauth      bool
	// passwordStdin: a profile without a password reads it from stdin.
	passwordStdin bool

	profile *bus.Profile
	client  *bus.Client
	// authed: the client carries a session; ownSession: this run opened it
	// and closes it at exit (koji logs out at the end of every command).
	authed     bool
	ownSession bool
}

// Run runs kojictl with args (without the program name) and returns the exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return RunContext(ctx, args, stdin, stdout, stderr)
}

// RunContext is Run with a caller-provided context.
func RunContext(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(globalsBeforeVerb(args))
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	a.close()
	return a.report(root, err)
}

// report prints err as koji does and returns the exit code.
func (a *app) report(root *cobra.Command, err error) int {
	if err == nil {
		return exitOK
	}
	if a.jsonOut {
		return a.reportJSON(err)
	}
	var ue *usageError
	var ee *exitError
	var f *bus.Fault
	switch {
	case errors.As(err, &ue):
		cmd := ue.cmd
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(a.stderr, "Usage: %s\n(Specify the --help global option for a list of other help options)\n\nkojictl: error: %s\n", cmd.UseLine(), ue.msg)
		return exitUsage
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintln(a.stderr, ee.msg)
		}
		return ee.code
	case errors.As(err, &f):
		fmt.Fprintln(a.stderr, f.Error())
		return exitFail
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(a.stderr, "kojictl: interrupted")
		return exitFail
	}
	if isCobraUsage(err) {
		fmt.Fprintf(a.stderr, "Usage: %s\n(Specify the --help global option for a list of other help options)\n\nkojictl: error: %s\n", root.UseLine(), err)
		return exitUsage
	}
	fmt.Fprintf(a.stderr, "kojictl: error: %s\n", err)
	return exitFail
}

// reportJSON prints err under --json as one JSON object on stderr:
// {"error": text, "exit_code": N} with the fault's code and name for a hub
// fault, so that scripts reading JSON need no text parsing.
func (a *app) reportJSON(err error) int {
	out := map[string]any{"error": err.Error(), "exit_code": exitFail}
	var ue *usageError
	var ee *exitError
	var f *bus.Fault
	switch {
	case errors.As(err, &ue) || isCobraUsage(err):
		out["exit_code"] = exitUsage
	case errors.As(err, &ee):
		if ee.msg == "" {
			return ee.code // the JSON answer is already on stdout
		}
		out["exit_code"] = ee.code
	case errors.As(err, &f):
		out["error"], out["fault_code"], out["fault_name"] = f.Message, f.Code, f.Name
	case errors.Is(err, context.Canceled):
		out["error"] = "interrupted"
	}
	b, _ := json.Marshal(out)
	fmt.Fprintln(a.stderr, string(b))
	return out["exit_code"].(int)
}

// pflag's errors, and the optparse texts koji prints for them.
var (
	flagValueError = regexp.MustCompile(`^invalid argument "(.*)" for "(?:-[^,]+, )?(--[^"]+)" flag: strconv\.Parse(Int|Uint|Float|Bool): parsing "[^"]*": (.*)$`)
	flagNegNumber  = regexp.MustCompile(`^unknown shorthand flag: '.' in (-[0-9.]+)$`)
	flagUnknown    = regexp.MustCompile(`^unknown (?:shorthand )?flag: (?:'.' in )?(-\S+)$`)
	flagNeedsValue = regexp.MustCompile(`^flag needs an argument: (?:'.' in )?(-\S+)$`)
)

// optparseText says a flag error in the user's words, as koji's optparse
// does, instead of pflag's Go internals (strconv.ParseInt: ...).
func optparseText(err error) string {
	msg := err.Error()
	if m := flagValueError.FindStringSubmatch(msg); m != nil {
		kind := map[string]string{"Int": "integer", "Uint": "integer", "Float": "floating-point", "Bool": "boolean"}[m[3]]
		if strings.Contains(m[4], "out of range") {
			return fmt.Sprintf("option %s: %s value out of range: '%s'", m[2], kind, m[1])
		}
		return fmt.Sprintf("option %s: invalid %s value: '%s'", m[2], kind, m[1])
	}
	if m := flagNegNumber.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("no such option: %s (a negative value goes after '=', as in --priority=%s)", m[1], m[1])
	}
	if m := flagUnknown.FindStringSubmatch(msg); m != nil {
		return "no such option: " + m[1]
	}
	if m := flagNeedsValue.FindStringSubmatch(msg); m != nil {
		return m[1] + " option requires 1 argument"
	}
	return msg
}

// isCobraUsage recognises cobra's own errors (unknown command, bad flag).
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument", "invalid argument", "required flag", "accepts ", "requires at least", "if any flags in the group"} {
		if strings.HasPrefix(msg, p) || strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "kojictl",
		Short:         "kojibus command line client (Koji's verbs over NATS)",
		SilenceErrors: true,
		SilenceUsage:  true,
		Long: `kojictl is the kojibus client. It speaks Koji's command names, options and
output formats, and reaches the hub over NATS with a koji-style profile:
-c FILE (default $` + EnvConfig + `, then ~/.config/kojictl.conf), -p NAME (default "koji").`,
	}
	pf := root.PersistentFlags()
	pf.StringVarP(&a.configPath, "config", "c", "", "profile file (default $"+EnvConfig+", then ~/.config/kojictl.conf)")
	// -p is --profile only before the command (globalsBeforeVerb), as in
	// koji; after it, -p is the command's own (runroot's --package).
	pf.StringVar(&a.profileName, "profile", "koji", "profile (section of the profile file) to use; -p NAME before the command")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "run quietly: no headers, no progress")
	pf.BoolVar(&a.jsonOut, "json", false, "machine-readable JSON output")
	pf.BoolVar(&a.noauth, "noauth", false, "do not authenticate")
	pf.BoolVar(&a.passwordStdin, "password-stdin", false, "read the password of a profile that has user but no password from standard input (else it is asked on the terminal)")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usagef(cmd, "%s", optparseText(err)) })
	for _, group := range [][]*cobra.Command{
		a.miscCommands(), a.userCommands(), a.hostCommands(), a.tagCommands(),
		a.buildCommands(), a.repoCommands(), a.eventCommands(), a.taskCommands(), a.bridgeCommands(), a.policyCommands(), a.sidetagCommands(), a.runrootCommands(),
	} {
		root.AddCommand(group...)
	}
	return root
}

// globalsBeforeVerb rewrites the global -p NAME (koji's --profile), given
// before the command verb, to --profile NAME: koji's global options come
// before the command, so a -p after it is the command's own.
func globalsBeforeVerb(args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--":
			return append(out, args[i:]...)
		case arg == "-p":
			out = append(out, "--profile")
			continue
		case strings.HasPrefix(arg, "-p"):
			out = append(out, "--profile="+strings.TrimPrefix(arg, "-p"))
			continue
		case arg == "-c" || arg == "--config" || arg == "--profile":
			out = append(out, arg)
			if i+1 < len(args) {
				i++
				out = append(out, args[i])
			}
			continue
		case !strings.HasPrefix(arg, "-") || arg == "-":
			return append(out, args[i:]...) // the verb and its own arguments
		}
		out = append(out, arg)
	}
	return out
}

// configFile resolves the profile file: -c, then $KOJIBUS_CONFIG, then ~/.config/kojictl.conf.
func (a *app) configFile() (string, error) {
	if a.configPath != "" {
		return a.configPath, nil
	}
	if p := os.Getenv(EnvConfig); p != "" {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no profile file: use -c FILE or set $%s (%w)", EnvConfig, err)
	}
	return filepath.Join(home, ".config", "kojictl.conf"), nil
}

func (a *app) loadProfile() (*bus.Profile, error) {
	if a.profile != nil {
		return a.profile, nil
	}
	path, err := a.configFile()
	if err != nil {
		return nil, err
	}
	p, err := bus.LoadProfile(path, a.profileName)
	if err != nil {
		return nil, err
	}
	a.profile = p
	return p, nil
}

// anon returns a connected client without logging in.
func (a *app) anon(ctx context.Context) (*bus.Client, error) {
	if a.client != nil {
		return a.client, nil
	}
	p, err := a.loadProfile()
	if err != nil {
		return nil, err
	}
	if err := a.profilePassword(p); err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := p.Dial(dctx, "kojictl")
	if err != nil {
		return nil, fmt.Errorf("cannot connect to %s: %w", p.Server, err)
	}
	a.client = c
	return c, nil
}

// session returns a client logged in as the profile says (koji's
// activate_session), unless --noauth. A session saved by "kojictl login" is
// reused while the hub still accepts it.
func (a *app) session(ctx context.Context) (*bus.Client, error) {
	c, err := a.anon(ctx)
	if err != nil || a.authed || a.noauth {
		return c, err
	}
	if hdr, ok := a.readCachedSession(); ok {
		c.SetSession(hdr)
		var u *bus.LoggedInUser
		if err := c.Call(ctx, "getLoggedInUser", nil, nil, &u); err == nil && u != nil {
			a.authed = true
			return c, nil
		}
		c.SetSession("")
		a.removeCachedSession()
	}
	if err := a.profile.Login(ctx, c); err != nil {
		return nil, err
	}
	a.authed = a.profile.AuthType != "noauth"
	a.ownSession = a.authed
	return c, nil
}

// close ends a session this run opened and closes the connection.
func (a *app) close() {
	if a.client == nil {
		return
	}
	if a.ownSession {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = a.client.Call(ctx, "logout", nil, nil, nil)
		cancel()
	}
	a.client.Close()
	a.client = nil
}

// sessionCachePath is where "kojictl login" keeps a session for the
// profile: $XDG_CACHE_HOME/kojictl (or ~/.cache/kojictl), one file per
// profile file and profile name, mode 0600.
func (a *app) sessionCachePath() (string, error) {
	path, err := a.configFile()
	if err != nil {
		return "", err
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	dir := os.Getenv("XDG_CACHE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".cache")
	}
	sum := sha256.Sum256([]byte(path + "\x00" + a.profileName))
	return filepath.Join(dir, "kojictl", a.profileName+"-"+hex.EncodeToString(sum[:8])+".session"), nil
}

type cachedSession struct {
	Session string `json:"session"`
	User    string `json:"user"`
	Server  string `json:"server"`
}

func (a *app) readCachedSession() (string, bool) {
	path, err := a.sessionCachePath()
	if err != nil {
		return "", false
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	var cs cachedSession
	if json.Unmarshal(data, &cs) != nil || cs.Session == "" || (a.profile != nil && cs.Server != a.profile.Server) {
		return "", false
	}
	return cs.Session, true
}

func (a *app) writeCachedSession(user string) (string, error) {
	path, err := a.sessionCachePath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("session cache: %w", err)
	}
	data, _ := json.Marshal(cachedSession{Session: a.client.Session(), User: user, Server: a.profile.Server})
	return path, bus.WriteFileAtomic(path, data, 0o600)
}

func (a *app) removeCachedSession() bool {
	path, err := a.sessionCachePath()
	if err != nil {
		return false
	}
	return os.Remove(path) == nil
}

// println writes a line to stdout.
func (a *app) println(args ...any) { fmt.Fprintln(a.stdout, args...) }

// printf writes to stdout.
func (a *app) printf(format string, args ...any) { fmt.Fprintf(a.stdout, format, args...) }

// warn writes a line to stderr (koji's warn()).
func (a *app) warn(format string, args ...any) { fmt.Fprintf(a.stderr, format+"\n", args...) }

// printJSON writes v (a Go value or raw JSON) indented, as --json output.
func (a *app) printJSON(v any) error {
	if raw, ok := v.(json.RawMessage); ok {
		var x any
		if err := decodeJSON(raw, &x); err != nil {
			return err
		}
		v = x
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(a.stdout, string(b))
	return err
}

// isInvalidMethod reports whether err is the hub's "Invalid method" fault:
// the method is not (yet) provided by this hub or its plugins.
func isInvalidMethod(err error) bool {
	var f *bus.Fault
	return errors.As(err, &f) && f.Code == bus.CodeGenericError && strings.HasPrefix(f.Message, "Invalid method:")
}

// args checks positional argument counts, with koji's usage errors.
func exactArgs(n int, msg string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef(cmd, "%s", msg)
		}
		return nil
	}
}

func minArgs(n int, msg string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usagef(cmd, "%s", msg)
		}
		return nil
	}
}

func rangeArgs(lo, hi int, msg string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < lo || len(args) > hi {
			return usagef(cmd, "%s", msg)
		}
		return nil
	}
}

func asFault(err error, f **bus.Fault) bool { return errors.As(err, f) }
