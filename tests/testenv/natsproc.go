package testenv

import (
	"bufio"
	"debug/buildinfo"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsServerModule is the module of nats-server: the tests embed it as a
// library and run its binary, of the same version (go.mod's).
const natsServerModule = "github.com/nats-io/nats-server/v2"

var (
	natsServerOnce sync.Once
	natsServerPath string
	natsServerErr  error
)

// NatsServerBin returns a nats-server binary of the version go.mod
// requires: $BRAID_NATS_SERVER (make test: bin/nats-server, which
// scripts/provision installs and keeps), else bin/nats-server when it is
// that version, else one built once for this test process with go install.
func NatsServerBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BRAID_NATS_SERVER"); p != "" {
		return p
	}
	natsServerOnce.Do(func() {
		root := RepoRoot(t)
		version := natsServerVersion(root)
		if version == "" {
			natsServerErr = fmt.Errorf("go.mod does not require %s", natsServerModule)
			return
		}
		if p := filepath.Join(root, "bin", "nats-server"); isNatsServer(p, version) {
			natsServerPath = p
			return
		}
		dir, err := os.MkdirTemp("", "braid-nats-server")
		if err != nil {
			natsServerErr = err
			return
		}
		cmd := exec.Command("go", "install", natsServerModule+"@"+version)
		cmd.Env = append(os.Environ(), "GOBIN="+dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			natsServerErr = fmt.Errorf("go install %s@%s (scripts/provision keeps one in bin/): %v\n%s", natsServerModule, version, err, out)
			return
		}
		natsServerPath = filepath.Join(dir, "nats-server")
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return natsServerPath
}

// natsServerVersion is the version of nats-server go.mod requires (the one
// the tests embed), read the way scripts/provision reads it.
func natsServerVersion(root string) string {
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require ")); len(f) >= 2 && f[0] == natsServerModule {
			return f[1]
		}
	}
	return ""
}

// isNatsServer reports whether path is a nats-server binary of version.
func isNatsServer(path, version string) bool {
	bi, err := buildinfo.ReadFile(path)
	return err == nil && bi.Path == natsServerModule && bi.Main.Version == version
}

// NATSProc is a JetStream nats-server running as a process of its own
// (NatsServerBin), so a test can kill -9 it and start it again on the same
// port and store directory while braid processes stay connected.
type NATSProc struct {
	URL  string
	Port int
	Dir  string
	// args are the server's arguments (nil: JetStream on Port, storing
	// in Dir); a cluster's nodes run a configuration file of their own.
	args []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
	out  strings.Builder
}

// StartNATSProc starts nats-server on a free port with its own store
// directory; it is killed at the end of the test.
func StartNATSProc(t testing.TB) *NATSProc {
	t.Helper()
	n := &NATSProc{Port: FreePort(t), Dir: t.TempDir()}
	n.URL = fmt.Sprintf("nats://127.0.0.1:%d", n.Port)
	n.Start(t)
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			t.Logf("nats-server output:\n%s", n.Output())
		}
	})
	return n
}

// Start starts the server (again) on its port and directory and waits until
// it accepts connections. It fails the test if it is already running.
func (n *NATSProc) Start(t testing.TB) {
	t.Helper()
	if err := n.start(NatsServerBin(t)); err != nil {
		t.Fatal(err)
	}
}

// start is Start of the binary bin, failing with an error (it may run on
// a goroutine other than the test's).
func (n *NATSProc) start(bin string) error {
	if n.cmd != nil {
		return fmt.Errorf("nats-server already running")
	}
	args := n.args
	if args == nil {
		args = []string{"-js", "-a", "127.0.0.1", "-p", strconv.Itoa(n.Port), "-sd", n.Dir}
	}
	cmd := exec.Command(bin, args...)
	logs, err := cmd.StderrPipe() // nats-server logs to stderr
	if err != nil {
		return err
	}
	cmd.Stdout = lockedWriter{&n.mu, &n.out}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start nats-server: %w", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(logs)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			n.mu.Lock()
			n.out.WriteString(line + "\n")
			n.mu.Unlock()
			if !signalled && strings.HasSuffix(line, "Server is ready") {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, logs)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-ready:
	case err := <-done:
		return fmt.Errorf("nats-server exited before ready: %v\n%s", err, n.Output())
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("nats-server not ready after 60s\n%s", n.Output())
	}
	n.cmd, n.done = cmd, done
	return nil
}

// Kill sends SIGKILL and waits for the process (idempotent).
func (n *NATSProc) Kill() { _ = n.signal(syscall.SIGKILL) }

// Stop sends SIGTERM and returns the exit error (nil for exit code 0).
func (n *NATSProc) Stop() error { return n.signal(syscall.SIGTERM) }

func (n *NATSProc) signal(sig syscall.Signal) error {
	if n.cmd == nil {
		return nil
	}
	_ = n.cmd.Process.Signal(sig)
	var err error
	select {
	case err = <-n.done:
	case <-time.After(60 * time.Second):
		_ = n.cmd.Process.Kill()
		err = <-n.done
	}
	n.cmd = nil
	return err
}

// Output is what the server printed so far.
func (n *NATSProc) Output() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.out.String()
}

// JetStream connects to the server (reconnecting across restarts); the
// connection closes with the test.
func (n *NATSProc) JetStream(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(n.URL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
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

// Signal sends sig to a braid process and waits for it to end; it returns
// the exit error (nil for exit code 0, also when the process had already
// exited with 0 before the signal).
func (p *Proc) Signal(t testing.TB, sig syscall.Signal) error {
	t.Helper()
	return p.signal(t, sig)
}
