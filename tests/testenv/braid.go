package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// BraidBin returns the braid binary: $BRAID_BIN (make test builds it), else
// one built once for this test process.
func BraidBin(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("BRAID_BIN"); p != "" {
		return p
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "braid-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "braid")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/braid")
		cmd.Dir = RepoRoot(t)
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// PIIKey is the PII key the braid processes of the tests share:
// StartBraid and RunBraid set PIIKeyEnv to it in the child's environment
// (separate layers refuse to start without it when a stream has PII fields),
// unless the test passes an environment of its own (StartBraidEnv,
// RunBraidEnv; see WithoutPIIKey).
const (
	PIIKey    = "braid-test-pii-key"
	PIIKeyEnv = "BRAID_PII_KEY" // the default pii_key_env
)

// BraidEnv is the environment StartBraid and RunBraid give braid: this
// process's, with PIIKeyEnv set to PIIKey.
func BraidEnv() []string {
	return append(WithoutPIIKey(), PIIKeyEnv+"="+PIIKey)
}

// WithoutPIIKey is this process's environment without PIIKeyEnv (a
// deployment that did not set the key).
func WithoutPIIKey() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, PIIKeyEnv+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// Proc is a running braid process.
type Proc struct {
	Cmd   *exec.Cmd
	Base  string // http://127.0.0.1:PORT when it serves HTTP
	out   *bytes.Buffer
	mu    sync.Mutex
	done  chan error
	ended bool
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// StartBraid runs `braid args...` in BraidEnv (the shared test PII key
// set); when base is set it waits for /readyz. The process is killed at
// the end of the test, and its output logged if the test failed.
func StartBraid(t testing.TB, base string, args ...string) *Proc {
	t.Helper()
	return StartBraidEnv(t, base, BraidEnv(), args...)
}

// StartBraidEnv is StartBraid in the environment env.
func StartBraidEnv(t testing.TB, base string, env []string, args ...string) *Proc {
	t.Helper()
	p := &Proc{out: &bytes.Buffer{}, done: make(chan error, 1), Base: base}
	p.Cmd = exec.Command(BraidBin(t), args...)
	p.Cmd.Env = env
	p.Cmd.Stdout = lockedWriter{&p.mu, p.out}
	p.Cmd.Stderr = lockedWriter{&p.mu, p.out}
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start braid: %v", err)
	}
	go func() { p.done <- p.Cmd.Wait() }()
	t.Cleanup(func() {
		if !p.ended {
			_ = p.Cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("braid %s output:\n%s", strings.Join(args, " "), p.Output())
		}
	})
	if base != "" {
		deadline := time.Now().Add(90 * time.Second)
		for {
			resp, err := http.Get(base + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			select {
			case err := <-p.done:
				p.ended = true
				t.Fatalf("braid exited before ready: %v\n%s", err, p.Output())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("braid not ready after 90s\n%s", p.Output())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return p
}

// Output is what the process printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Stop sends SIGTERM and returns the exit error (nil for exit code 0).
func (p *Proc) Stop(t testing.TB) error {
	t.Helper()
	return p.signal(t, syscall.SIGTERM)
}

// Kill sends SIGKILL and waits for the process.
func (p *Proc) Kill(t testing.TB) {
	t.Helper()
	_ = p.signal(t, syscall.SIGKILL)
}

func (p *Proc) signal(t testing.TB, sig syscall.Signal) error {
	if p.ended {
		return nil
	}
	_ = p.Cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		p.ended = true
		return err
	case <-time.After(60 * time.Second):
		_ = p.Cmd.Process.Kill()
		t.Fatalf("braid did not stop within 60s of %v", sig)
		return nil
	}
}

// RunBraid runs a braid command to completion in BraidEnv (the shared
// test PII key set) and returns its combined output and exit code.
func RunBraid(t testing.TB, args ...string) (string, int) {
	t.Helper()
	return RunBraidEnv(t, BraidEnv(), args...)
}

// RunBraidEnv is RunBraid in the environment env.
func RunBraidEnv(t testing.TB, env []string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, BraidBin(t), args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run braid: %v", err)
	}
	return string(out), code
}
