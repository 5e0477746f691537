package testenv

import (
	"bufio"
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

var (
	natsdOnce sync.Once
	natsdPath string
	natsdErr  error
)

// NatsdBin returns the tests/natsd binary: $BRAID_NATSD_BIN, else one built
// once for this test process.
func NatsdBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BRAID_NATSD_BIN"); p != "" {
		return p
	}
	natsdOnce.Do(func() {
		dir, err := os.MkdirTemp("", "braid-natsd")
		if err != nil {
			natsdErr = err
			return
		}
		natsdPath = filepath.Join(dir, "natsd")
		cmd := exec.Command("go", "build", "-o", natsdPath, "./tests/natsd")
		cmd.Dir = RepoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			natsdErr = fmt.Errorf("go build ./tests/natsd: %v\n%s", err, out)
		}
	})
	if natsdErr != nil {
		t.Fatal(natsdErr)
	}
	return natsdPath
}

// NATSProc is a JetStream nats-server running as a process of its own
// (tests/natsd), so a test can kill -9 it and start it again on the same
// port and store directory while braid processes stay connected.
type NATSProc struct {
	URL  string
	Port int
	Dir  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
	out  strings.Builder
}

// StartNATSProc starts natsd on a free port with its own store directory;
// it is killed at the end of the test.
func StartNATSProc(t testing.TB) *NATSProc {
	t.Helper()
	n := &NATSProc{Port: FreePort(t), Dir: t.TempDir()}
	n.URL = fmt.Sprintf("nats://127.0.0.1:%d", n.Port)
	n.Start(t)
	t.Cleanup(func() {
		n.Kill()
		if t.Failed() {
			t.Logf("natsd output:\n%s", n.Output())
		}
	})
	return n
}

// Start starts the server (again) on its port and directory and waits until
// it accepts connections. It fails the test if it is already running.
func (n *NATSProc) Start(t testing.TB) {
	t.Helper()
	if n.cmd != nil {
		t.Fatalf("natsd already running")
	}
	cmd := exec.Command(NatsdBin(t), "-port", strconv.Itoa(n.Port), "-dir", n.Dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = lockedWriter{&n.mu, &n.out}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start natsd: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			n.mu.Lock()
			n.out.WriteString(line + "\n")
			n.mu.Unlock()
			if !signalled && strings.HasPrefix(line, "ready ") {
				signalled = true
				close(ready)
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("natsd exited before ready: %v\n%s", err, n.Output())
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("natsd not ready after 60s\n%s", n.Output())
	}
	n.cmd, n.done = cmd, done
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
