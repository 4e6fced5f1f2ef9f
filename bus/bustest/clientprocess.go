package bustest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
)

// clientProcessEnv, when set in the environment, makes a test binary a
// client process (see MaybeClientProcess) instead of running tests.
const clientProcessEnv = "KOJIBUS_CLIENT_PROCESS"

// ClientOp is one operation a client process can run.
type ClientOp struct {
	// Kind is "kvput" (a KV put of Value to Bucket under a new key),
	// "request" (a request to Subject, carrying the op's counter) or "call"
	// (the API Method with Args, as the logged-in profile user).
	Kind    string `json:"kind"`
	Bucket  string `json:"bucket,omitempty"`
	Value   []byte `json:"value,omitempty"`
	Subject string `json:"subject,omitempty"`
	Method  string `json:"method,omitempty"`
	Args    []any  `json:"args,omitempty"`
}

// clientSpec is what a client process connects with and can run.
type clientSpec struct {
	Profile string `json:"profile"` // kojictl.conf: the connection and login of the API calls
	// The connection of the raw ops, as the hub's role (a user's may not
	// use JetStream's API).
	URL      string              `json:"url"`
	Password string              `json:"password"`
	Ops      map[string]ClientOp `json:"ops"`
}

// ClientProcess is a benchmark's client in a process of its own, as
// kojictl and the clients Koji's hub was measured with are: its calls cost
// the machine what a remote caller's do (the other process woken for every
// message).
type ClientProcess struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// StartClientProcess starts the test binary again as a client process of a
// hub that can run ops: its calls go through the kojictl profile (and its
// login), its raw ops through a connection to url as the hub's role with
// hubPassword. It stops when the benchmark ends. The binary's TestMain must
// call MaybeClientProcess first.
func StartClientProcess(b testing.TB, profile, url, hubPassword string, ops map[string]ClientOp) *ClientProcess {
	b.Helper()
	spec, err := json.Marshal(clientSpec{Profile: profile, URL: url, Password: hubPassword, Ops: ops})
	if err != nil {
		b.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	// Told to run no tests, should its TestMain lack MaybeClientProcess.
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), clientProcessEnv+"="+string(spec))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &ClientProcess{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(func() {
		_ = in.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("client process: %v", err)
		}
	})
	if err := c.reply(); err != nil { // connected and logged in
		b.Fatal(err)
	}
	return c
}

// Run has the client run n of op with inFlight at a time and returns how
// many gave up with a conflict and the processor time the client used.
func (c *ClientProcess) Run(op string, n, inFlight int) (conflicts int64, cpu time.Duration, err error) {
	if _, err := fmt.Fprintf(c.in, "%s %d %d\n", op, n, inFlight); err != nil {
		return 0, 0, err
	}
	if err := c.reply(); err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(c.out.Text(), "ok %d %d", &conflicts, &cpu); err != nil {
		return 0, 0, fmt.Errorf("client process: %q: %w", c.out.Text(), err)
	}
	return conflicts, cpu, nil
}

// reply reads the client's next line: "ok ..." or an error.
func (c *ClientProcess) reply() error {
	if !c.out.Scan() {
		return fmt.Errorf("client process exited: %v", c.out.Err())
	}
	switch line := c.out.Text(); {
	case line == "PASS":
		// It ran (no) tests instead of being the client.
		return errors.New("client process: the test binary's TestMain does not call bustest.MaybeClientProcess")
	case !strings.HasPrefix(line, "ok"):
		return fmt.Errorf("client process: %s", line)
	}
	return nil
}

// MaybeClientProcess runs the client process when this process was started
// as one (StartClientProcess); it never returns then. Call it first thing
// in TestMain.
func MaybeClientProcess() {
	if spec := os.Getenv(clientProcessEnv); spec != "" {
		os.Exit(clientProcessMain(spec))
	}
}

// clientProcessMain is the client process: it connects as the spec says,
// prints "ok", then for each line "<op> <n> <in flight>" on stdin runs the
// op n times and prints "ok <conflicts> <processor ns used>" (or the first
// error).
func clientProcessMain(spec string) int {
	if err := runClientProcess(spec); err != nil {
		fmt.Println(err)
		return 1
	}
	return 0
}

func runClientProcess(spec string) error {
	var s clientSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		return err
	}
	ctx := context.Background()
	p, err := bus.LoadProfile(s.Profile, "")
	if err != nil {
		return err
	}
	c, err := p.Dial(ctx, "client-process")
	if err != nil {
		return err
	}
	defer c.Close()
	raw, err := bus.Connect(ctx, bus.ConnectConfig{Name: "client-process-raw", URLs: []string{s.URL}, User: bus.RoleHub, Password: s.Password})
	if err != nil {
		return err
	}
	defer raw.Close()
	if err := p.Login(ctx, c); err != nil {
		return err
	}
	return serveClientProcess(ctx, c, raw, s.Ops, os.Stdin, os.Stdout)
}

func serveClientProcess(ctx context.Context, c *bus.Client, raw *nats.Conn, ops map[string]ClientOp, in io.Reader, out io.Writer) error {
	js, err := jetstream.New(raw)
	if err != nil {
		return err
	}
	var counter atomic.Int64
	do := map[string]func() error{}
	for name, op := range ops {
		switch op.Kind {
		case "kvput":
			kv, err := js.KeyValue(ctx, op.Bucket)
			if err != nil {
				return err
			}
			do[name] = func() error {
				_, err := kv.Put(ctx, "put."+strconv.FormatInt(counter.Add(1), 10), op.Value)
				return err
			}
		case "request":
			do[name] = func() error {
				_, err := raw.Request(op.Subject, []byte(strconv.FormatInt(counter.Add(1), 10)), c.Timeout)
				return err
			}
		case "call":
			body, err := bus.NewRequest(op.Args, nil)
			if err != nil {
				return err
			}
			do[name] = func() error {
				_, err := c.CallBody(ctx, op.Method, body)
				return err
			}
		default:
			return fmt.Errorf("client process: unknown op kind %q", op.Kind)
		}
	}
	fmt.Fprintln(out, "ok")
	lines := bufio.NewScanner(in)
	for lines.Scan() {
		var name string
		var n, inFlight int
		if _, err := fmt.Sscan(lines.Text(), &name, &n, &inFlight); err != nil {
			return err
		}
		op := do[name]
		if op == nil {
			return fmt.Errorf("client process: no op %q", name)
		}
		cpu := ProcessCPU()
		conflicts, err := RunInFlight(n, inFlight, op)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, "ok", conflicts, int64(ProcessCPU()-cpu))
	}
	return lines.Err()
}
