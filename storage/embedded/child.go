package embedded

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Children of braid (its redis-server) must not outlive it. On Linux the
// kernel kills a child when its parent dies (childAttr sets Pdeathsig); the
// pid file catches the rest: a restart over the same data_dir kills a
// redis-server that a previous braid, killed before it could stop it,
// left running.

// starter starts children from one goroutine locked to its OS thread for
// the life of the process. Pdeathsig fires when the thread that started the
// child exits, not the process, and the Go runtime ends a thread when a
// goroutine locked to it returns; this thread never does.
var starter struct {
	once sync.Once
	reqs chan startReq
}

type startReq struct {
	cmd  *exec.Cmd
	done chan error
}

// startChild starts cmd so that it dies with this process.
func startChild(cmd *exec.Cmd) error {
	cmd.SysProcAttr = childAttr()
	starter.once.Do(func() {
		starter.reqs = make(chan startReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for r := range starter.reqs {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	starter.reqs <- startReq{cmd: cmd, done: done}
	return <-done
}

// PidFile is the file under a redis directory naming the redis-server braid
// runs there: "<redis-server pid> <braid pid> <port>\n".
const PidFile = "redis-server.pid"

func writePidFile(dir string, pid, port int) error {
	path := filepath.Join(dir, PidFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d %d\n", pid, os.Getpid(), port), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func removePidFile(dir string) error {
	if err := os.Remove(filepath.Join(dir, PidFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove redis-server pid file: %w", err)
	}
	return nil
}

// proc is what the system says about a process.
type proc struct {
	ppid    int
	zombie  bool   // exited, not yet reaped: gone for every purpose here
	cmdline string // as the process shows it (redis-server rewrites it to "redis-server 127.0.0.1:<port>")
	cwd     string // "" when unknown (redis-server runs in its --dir)
}

// isRedisFor reports whether p is a redis-server braid started in dir on port.
func (p proc) isRedisFor(dir string, port int) bool {
	if !strings.Contains(p.cmdline, "redis-server") {
		return false
	}
	if p.cwd != "" {
		real, err := filepath.EvalSymlinks(dir)
		return p.cwd == dir || (err == nil && p.cwd == real)
	}
	return strings.Contains(p.cmdline, ":"+strconv.Itoa(port)) || strings.Contains(p.cmdline, "--port "+strconv.Itoa(port))
}

// killOrphan kills the redis-server named by dir's pid file when the braid
// process that started it is gone, and waits until it has exited. It
// refuses to start when that braid process still runs it.
func killOrphan(dir string, logger *slog.Logger) error {
	path := filepath.Join(dir, PidFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	var pid, owner, port int
	if _, err := fmt.Sscanf(string(data), "%d %d %d", &pid, &owner, &port); err != nil || pid <= 0 {
		logger.Warn("ignoring an unreadable redis-server pid file", "path", path)
		return removePidFile(dir)
	}
	p, ok := inspect(pid)
	if !ok || p.zombie || !p.isRedisFor(dir, port) {
		return removePidFile(dir) // gone, or the pid is another process's now
	}
	if p.ppid == owner {
		return fmt.Errorf("redis-server %d in %s belongs to braid process %d, which still runs: two braid processes cannot share a data_dir", pid, dir, owner)
	}
	logger.Warn("killing the redis-server a previous braid left running (it was stopped without stopping it)", "pid", pid, "dir", dir)
	if pr, err := os.FindProcess(pid); err == nil {
		_ = pr.Signal(os.Kill)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p, ok := inspect(pid); !ok || p.zombie {
			return removePidFile(dir)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server %d left running in %s by a previous braid did not exit after SIGKILL", pid, dir)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
