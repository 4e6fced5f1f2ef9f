// Package rabbittest starts a real RabbitMQ (Debian's rabbitmq-server with
// the AMQP 1.0 plugin) for tests: its own ports, TLS only, client
// certificates required, files in a temporary directory.
package rabbittest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
)

// AllQueue is a durable queue bound to amq.topic with routing key koji.#;
// receive from it with the address /amq/queue/kojibus-all.
const AllQueue = "kojibus-all"

// Broker is a running RabbitMQ.
type Broker struct {
	dir      string
	Port     int // amqps on 127.0.0.1
	epmdPort int
	node     string
	CA       string
	HubPEM   string // client certificate and key, CN=kojihub (the bridge)
	AdminPEM string // client certificate and key, CN=kojiadmin (test receivers)
	cmd      *exec.Cmd
	env      []string
}

const rabbitServer = "/usr/lib/rabbitmq/bin/rabbitmq-server"

// FreePort returns a TCP port free on 127.0.0.1 now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Start starts a broker for the test; it is stopped at cleanup.
func Start(t testing.TB) *Broker {
	t.Helper()
	if _, err := os.Stat(rabbitServer); err != nil {
		t.Fatalf("RabbitMQ is not installed (go tool task deps installs it): %v", err)
	}
	// The broker runs as the rabbitmq user, which cannot enter t.TempDir().
	dir, err := os.MkdirTemp("", "kojibus-rabbit-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	r := &Broker{dir: dir, Port: FreePort(t), epmdPort: FreePort(t), node: fmt.Sprintf("kojibus%d@localhost", FreePort(t))}
	certs := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certs, 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestPKI(t, certs)
	r.CA = filepath.Join(certs, "ca.crt")
	r.HubPEM = filepath.Join(certs, "kojihub.pem")
	r.AdminPEM = filepath.Join(certs, "kojiadmin.pem")
	defs := map[string]any{
		"vhosts": []any{map[string]any{"name": "/"}},
		"users": []any{
			map[string]any{"name": "kojihub", "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""},
			map[string]any{"name": "kojiadmin", "password_hash": "", "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": ""},
		},
		// A durable queue bound to every koji.# message: unlike a
		// /topic/ subscription it collects messages sent before a
		// receiver attaches (after a restart, say).
		"queues":   []any{map[string]any{"name": AllQueue, "vhost": "/", "durable": true, "auto_delete": false, "arguments": map[string]any{}}},
		"bindings": []any{map[string]any{"source": "amq.topic", "vhost": "/", "destination": AllQueue, "destination_type": "queue", "routing_key": "koji.#", "arguments": map[string]any{}}},
		"permissions": []any{
			map[string]any{"user": "kojihub", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
			map[string]any{"user": "kojiadmin", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
		},
	}
	defsJSON, _ := json.Marshal(defs)
	files := map[string]string{
		"definitions.json": string(defsJSON),
		"enabled_plugins":  "[rabbitmq_amqp1_0,rabbitmq_auth_mechanism_ssl].\n",
		"rabbitmq.conf": fmt.Sprintf(`listeners.tcp = none
listeners.ssl.default = 127.0.0.1:%d
ssl_options.cacertfile = %s
ssl_options.certfile = %s
ssl_options.keyfile = %s
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
auth_mechanisms.1 = EXTERNAL
ssl_cert_login_from = common_name
amqp1_0.default_user = none
amqp1_0.default_vhost = /
disk_free_limit.absolute = 50MB
load_definitions = %s
management.load_definitions = %s
`, r.Port, r.CA, filepath.Join(certs, "server.crt"), filepath.Join(certs, "server.key"),
			filepath.Join(dir, "definitions.json"), filepath.Join(dir, "definitions.json")),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.env = []string{
		"HOME=" + dir,
		"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
		"RABBITMQ_PID_FILE=" + filepath.Join(dir, "rabbit.pid"),
		"RABBITMQ_NODENAME=" + r.node,
		"RABBITMQ_DIST_PORT=" + strconv.Itoa(FreePort(t)),
		"ERL_EPMD_ADDRESS=127.0.0.1",
		"ERL_EPMD_PORT=" + strconv.Itoa(r.epmdPort),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
		"PATH=/usr/lib/rabbitmq/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8",
	}
	if out, err := exec.Command("chown", "-R", "rabbitmq:rabbitmq", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	r.Start(t)
	t.Cleanup(func() {
		r.Stop(t)
		// rabbitmq-server started an epmd of its own on its port.
		_ = exec.Command("runuser", "-u", "rabbitmq", "--", "env", "ERL_EPMD_PORT="+strconv.Itoa(r.epmdPort), "epmd", "-kill").Run()
	})
	return r
}

// Start starts the broker and waits until it accepts an AMQP connection.
func (r *Broker) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command("runuser", "-u", "rabbitmq", "--", "env")
	cmd.Args = append(cmd.Args, r.env...)
	cmd.Args = append(cmd.Args, rabbitServer)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	logf, err := os.OpenFile(filepath.Join(r.dir, "console.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.cmd = cmd
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(90 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := r.Dial(ctx, r.AdminPEM)
		cancel()
		if err == nil {
			_ = conn.Close()
			go func() { <-exited }()
			return
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(r.dir, "console.log"))
			t.Fatalf("rabbitmq-server exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(r.dir, "console.log"))
			t.Fatalf("rabbitmq did not come up: %v\n%s", err, log)
		}
		// The broker takes about 9 s to start; it has no readiness signal
		// but its port, so this waits on connection attempts.
		time.Sleep(250 * time.Millisecond)
	}
}

// Stop stops the broker (SIGTERM to its process group, then SIGKILL).
func (r *Broker) Stop(t testing.TB) {
	t.Helper()
	if r.cmd == nil || r.cmd.Process == nil {
		return
	}
	pgid := r.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for syscall.Kill(-pgid, 0) == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	r.cmd = nil
}

// CPUTime is the processor time the broker's processes have used so far
// (user and system, from /proc), so a benchmark on one machine can tell
// the broker's share from its own.
func (r *Broker) CPUTime() time.Duration {
	if r.cmd == nil || r.cmd.Process == nil {
		return 0
	}
	pgid := r.cmd.Process.Pid
	entries, _ := os.ReadDir("/proc")
	var ticks uint64
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// After "(comm)": state ppid pgrp session tty tpgid flags minflt
		// cminflt majflt cmajflt utime stime ...
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 13 || f[2] != strconv.Itoa(pgid) {
			continue
		}
		u, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		ticks += u + st
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// URL is the broker's amqps URL.
func (r *Broker) URL() string { return fmt.Sprintf("amqps://localhost:%d", r.Port) }

// TLSConfig is a client TLS configuration with the given certificate.
func (r *Broker) TLSConfig(pemFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(pemFile, pemFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(r.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "localhost"}, nil
}

// Dial connects with the given client certificate (SASL EXTERNAL).
func (r *Broker) Dial(ctx context.Context, pemFile string) (*amqp.Conn, error) {
	tc, err := r.TLSConfig(pemFile)
	if err != nil {
		return nil, err
	}
	return amqp.Dial(ctx, r.URL(), &amqp.ConnOptions{TLSConfig: tc, SASLType: amqp.SASLTypeExternal(""), HostName: "localhost"})
}

// Receive attaches a receiver (as kojiadmin) to address and returns the
// messages it gets, acknowledged.
func (r *Broker) Receive(t testing.TB, address string) <-chan *amqp.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := r.Dial(ctx, r.AdminPEM)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	sess, err := conn.NewSession(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	rcv, err := sess.NewReceiver(ctx, address, &amqp.ReceiverOptions{Credit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan *amqp.Message, 100000)
	go func() {
		for {
			m, err := rcv.Receive(context.Background(), nil)
			if err != nil {
				return
			}
			_ = rcv.AcceptMessage(context.Background(), m)
			out <- m
		}
	}()
	return out
}

// writeTestPKI writes a CA, the broker's certificate (localhost) and two
// client certificates as Koji deploys them (certificate and key in one PEM).
func writeTestPKI(t testing.TB, dir string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kojibus test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	writePEM(t, filepath.Join(dir, "ca.crt"), pemBlock("CERTIFICATE", caDER))
	issue := func(serial int64, cn string, server bool) ([]byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature,
		}
		if server {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		} else {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return pemBlock("CERTIFICATE", der), pemBlock("EC PRIVATE KEY", keyDER)
	}
	crt, key := issue(2, "localhost", true)
	writePEM(t, filepath.Join(dir, "server.crt"), crt)
	writePEM(t, filepath.Join(dir, "server.key"), key)
	for i, cn := range []string{"kojihub", "kojiadmin"} {
		crt, key := issue(int64(3+i), cn, false)
		writePEM(t, filepath.Join(dir, cn+".pem"), append(crt, key...))
	}
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}

func writePEM(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Renice sets the nice value of every thread of the broker's processes.
func (r *Broker) Renice(nice int) error {
	if r.cmd == nil || r.cmd.Process == nil {
		return errors.New("rabbittest: broker not running")
	}
	return syscall.Setpriority(syscall.PRIO_PGRP, r.cmd.Process.Pid, nice)
}
