package hub

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
	"github.com/kojibus/kojibus/bus/bustest"
)

// benchValue is the small value the benchmarks' raw KV puts and floors write.
var benchValue = []byte(`{"id": 1, "name": "f30-build-side-1", "extra": {"sidetag": true}}`)

// benchClientEnv, when set in the environment, makes the test binary a
// benchmark client process (see TestMain) instead of running tests.
const benchClientEnv = "KOJIBUS_BENCH_CLIENT"

// benchClientOp is one operation a client process can run.
type benchClientOp struct {
	// Kind is "kvput" (a KV put to Bucket under a new key), "request" (a
	// request to Subject, carrying the op's counter) or "call" (the API
	// Method with Args, as the logged-in profile user).
	Kind    string `json:"kind"`
	Bucket  string `json:"bucket,omitempty"`
	Subject string `json:"subject,omitempty"`
	Method  string `json:"method,omitempty"`
	Args    []any  `json:"args,omitempty"`
}

// benchClientSpec is what a client process connects with and can run.
type benchClientSpec struct {
	Profile string `json:"profile"` // kojictl.conf: the connection and login of the API calls
	// The connection of the raw ops, as the hub's role (a user's may not
	// use JetStream's API).
	URL      string                   `json:"url"`
	Password string                   `json:"password"`
	Ops      map[string]benchClientOp `json:"ops"`
}

// benchClient is a client in a process of its own, as kojictl and the
// clients Koji's hub was measured with are: its calls cost the machine what
// a remote caller's do (the other process woken for every message).
type benchClient struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startBenchClient starts the test binary again as a client process of h,
// logged in as the profile's admin; it stops when the benchmark ends.
func startBenchClient(b *testing.B, h *TestHub, ops map[string]benchClientOp) *benchClient {
	b.Helper()
	spec, err := json.Marshal(benchClientSpec{Profile: h.ProfilePath(), URL: h.URL(), Password: h.Embedded().Secrets[bus.RoleHub], Ops: ops})
	if err != nil {
		b.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), benchClientEnv+"="+string(spec))
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
	c := &benchClient{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(func() {
		_ = in.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("bench client: %v", err)
		}
	})
	if err := c.reply(); err != nil { // connected and logged in
		b.Fatal(err)
	}
	return c
}

// run has the client run n of op with inFlight at a time and returns how
// many gave up with a conflict and the processor time the client used.
func (c *benchClient) run(op string, n, inFlight int) (conflicts int64, cpu time.Duration, err error) {
	if _, err := fmt.Fprintf(c.in, "%s %d %d\n", op, n, inFlight); err != nil {
		return 0, 0, err
	}
	if err := c.reply(); err != nil {
		return 0, 0, err
	}
	if _, err := fmt.Sscanf(c.out.Text(), "ok %d %d", &conflicts, &cpu); err != nil {
		return 0, 0, fmt.Errorf("bench client: %q: %w", c.out.Text(), err)
	}
	return conflicts, cpu, nil
}

// reply reads the client's next line: "ok ..." or an error.
func (c *benchClient) reply() error {
	if !c.out.Scan() {
		return fmt.Errorf("bench client exited: %v", c.out.Err())
	}
	if line := c.out.Text(); !strings.HasPrefix(line, "ok") {
		return errors.New(line)
	}
	return nil
}

// benchClientMain is the client process: it connects as the spec says,
// prints "ok", then for each line "<op> <n> <in flight>" on stdin runs the
// op n times and prints "ok <conflicts> <processor ns used>" (or the first
// error).
func benchClientMain(spec string) int {
	var s benchClientSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		fmt.Println(err)
		return 1
	}
	ctx := context.Background()
	p, err := bus.LoadProfile(s.Profile, "")
	if err == nil {
		var c *bus.Client
		if c, err = p.Dial(ctx, "bench-client"); err == nil {
			defer c.Close()
			var raw *nats.Conn
			if raw, err = bus.Connect(ctx, bus.ConnectConfig{Name: "bench-client-raw", URLs: []string{s.URL}, User: bus.RoleHub, Password: s.Password}); err == nil {
				defer raw.Close()
				if err = p.Login(ctx, c); err == nil {
					err = serveBenchClient(ctx, c, raw, s.Ops, os.Stdin, os.Stdout)
				}
			}
		}
	}
	if err != nil {
		fmt.Println(err)
		return 1
	}
	return 0
}

func serveBenchClient(ctx context.Context, c *bus.Client, raw *nats.Conn, ops map[string]benchClientOp, in io.Reader, out io.Writer) error {
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
				_, err := kv.Put(ctx, "put."+strconv.FormatInt(counter.Add(1), 10), benchValue)
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
			return fmt.Errorf("bench client: unknown op kind %q", op.Kind)
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
			return fmt.Errorf("bench client: no op %q", name)
		}
		cpu := bustest.ProcessCPU()
		conflicts, err := bustest.RunInFlight(n, inFlight, op)
		if err != nil {
			return err
		}
		fmt.Fprintln(out, "ok", conflicts, int64(bustest.ProcessCPU()-cpu))
	}
	return lines.Err()
}
