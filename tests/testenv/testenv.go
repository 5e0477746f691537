// Package testenv holds the fixtures of Braid's tests. It starts the real
// servers they run against: an embedded nats-server with JetStream (or one
// as a process of its own) and a redis-server process, each on a free port
// with its own directory, stopped when the test ends; and braid itself. A
// Stack is one braid deployment under test (servers, config, process), a
// Catalog the streams and views a test declares, built from the standard
// ones (E2E, Orders, Clicks and their views) with what the test changes.
package testenv

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/storage/eventlog"
)

// FreePort returns a TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// NATS is an embedded nats-server with JetStream.
type NATS struct {
	URL    string
	Server *server.Server
	Dir    string
	Port   int
}

// StartNATS starts a JetStream-enabled nats-server on a free port, storing
// under a temporary directory; it is shut down at the end of the test.
func StartNATS(t testing.TB) *NATS {
	t.Helper()
	dir := t.TempDir()
	n := &NATS{Dir: dir, Port: FreePort(t)}
	n.start(t)
	t.Cleanup(n.Stop)
	return n
}

func (n *NATS) start(t testing.TB) {
	opts := &server.Options{Host: "127.0.0.1", Port: n.Port, JetStream: true, StoreDir: n.Dir, NoSigs: true, NoLog: true}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatalf("nats server not ready")
	}
	n.Server = s
	n.URL = fmt.Sprintf("nats://127.0.0.1:%d", n.Port)
}

// Stop shuts the server down (idempotent).
func (n *NATS) Stop() {
	if n.Server != nil {
		n.Server.Shutdown()
		n.Server.WaitForShutdown()
		n.Server = nil
	}
}

// Restart stops the server and starts it again on the same port and store.
func (n *NATS) Restart(t testing.TB) {
	n.Stop()
	n.start(t)
}

// JetStream connects to the server; the connection closes with the test.
func (n *NATS) JetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// StoredMessages returns the data of every message a JetStream stream
// holds, in sequence order.
func StoredMessages(t testing.TB, js jetstream.JetStream, stream string) [][]byte {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("read %s message %d: %v", stream, seq, err)
		}
		out = append(out, m.Data)
	}
	return out
}

// StoredEvents returns every event a clean log stream holds (each log
// record unpacked), in log order.
func StoredEvents(t testing.TB, js jetstream.JetStream, stream string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, data := range StoredMessages(t, js, stream) {
		if err := eventlog.Unpack(data, func(_ int, _, rec []byte) error {
			out = append(out, rec)
			return nil
		}); err != nil {
			t.Fatalf("read %s: %v", stream, err)
		}
	}
	return out
}

// Redis is a redis-server process.
type Redis struct {
	Addr string
	URL  string
	Port int
	Dir  string
	cmd  *exec.Cmd
}

// RedisServerPath finds redis-server or fails the test: Braid's tests run
// against a real Redis (scripts/provision, run by make test, installs it).
func RedisServerPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found on PATH: install it (apt-get install redis-server); scripts/provision (make test) does")
	}
	return p
}

// StartRedis starts a redis-server without persistence on a free port; it is
// stopped at the end of the test.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	r := &Redis{Port: FreePort(t), Dir: t.TempDir()}
	r.start(t)
	t.Cleanup(r.Stop)
	return r
}

func (r *Redis) start(t testing.TB) {
	t.Helper()
	r.cmd = exec.Command(RedisServerPath(t), "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.Dir, "--protected-mode", "no")
	r.cmd.Stdout, r.cmd.Stderr = nil, nil
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	r.Addr = fmt.Sprintf("127.0.0.1:%d", r.Port)
	r.URL = "redis://" + r.Addr + "/0"
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := c.Ping(context.Background()).Err(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s not ready", r.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (idempotent). Without persistence its data is gone.
func (r *Redis) Stop() {
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Kill()
		_ = r.cmd.Wait()
		r.cmd = nil
	}
}

// Restart stops the server and starts an empty one on the same port.
func (r *Redis) Restart(t testing.TB) {
	r.Stop()
	r.start(t)
}

// Client returns a client closed at the end of the test.
func (r *Redis) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

var nsCounter atomic.Int64

// Namespace returns a namespace unique to this test and process, for NATS
// stream names and Redis key prefixes.
func Namespace(t testing.TB) string {
	name := strings.ToLower(t.Name())
	var b strings.Builder
	for _, r := range name {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		}
	}
	s := b.String()
	if len(s) > 16 {
		s = s[:16]
	}
	return fmt.Sprintf("t%s%d%d", s, os.Getpid()%10000, nsCounter.Add(1))
}

// RepoRoot returns the module root (for configs/ and the built binary).
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("go.mod not found above %s", dir)
		}
		dir = parent
	}
}

// Logger returns a slog logger writing to the test log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Eventually polls f every 200 ms until it returns "" (and returns how
// long that took) or timeout passes: then the test fails with what and
// f's last answer. Tests never fail on timing: the timeout is generous.
func Eventually(t testing.TB, what string, timeout time.Duration, f func() string) time.Duration {
	t.Helper()
	start := time.Now()
	var last string
	for time.Since(start) < timeout {
		if last = f(); last == "" {
			return time.Since(start)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: still not true after %s: %s", what, timeout, last)
	return 0
}
