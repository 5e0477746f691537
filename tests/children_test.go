package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/embedded"
	"github.com/braid-data/braid/tests/testenv"
)

func childrenCatalog() testenv.Catalog {
	return testenv.Catalog{
		Epoch:   "1s",
		Batch:   "every: 0",
		Streams: []testenv.Stream{{Name: "events", Time: "ts", Fields: []string{"ts: time", "kind: string"}}},
		Views:   []testenv.View{{Name: "per_min", Stream: "events", Window: "1m", Measures: []string{"n: count()"}}},
	}
}

// procState reads a process's state letter and parent from /proc ("" when
// there is no such process).
func procState(pid int) (state string, ppid int, cmdline string) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, ""
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	ppid, _ = strconv.Atoi(f[1])
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return f[0], ppid, string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '}))
}

// running: the process exists and has not exited (a zombie waiting for
// its new parent to reap it has).
func running(pid int) bool {
	state, _, _ := procState(pid)
	return state != "" && state != "Z" && state != "X"
}

// pidFile reads the pid file braid up writes for its redis-server.
func pidFile(t *testing.T, dataDir string) (redisPid, braidPid, port int) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, "redis", embedded.PidFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Sscanf(string(data), "%d %d %d", &redisPid, &braidPid, &port); err != nil {
		t.Fatalf("pid file %q: %v", data, err)
	}
	return redisPid, braidPid, port
}

// TestRedisDiesWithBraid: the redis-server braid up starts does not outlive
// a braid killed with SIGKILL.
func TestRedisDiesWithBraid(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux kills a child with its parent; elsewhere the next start kills it (TestRestartKillsAStrayRedis)")
	}
	testenv.RedisServerPath(t)
	st := testenv.Up(t, childrenCatalog().YAML(), testenv.WithoutRedis())
	p := st.Braid
	braid := p.Cmd.Process.Pid
	redisPid, owner, _ := pidFile(t, st.DataDir)
	state, ppid, cmdline := procState(redisPid)
	if owner != braid || ppid != braid || !strings.Contains(cmdline, "redis-server") || !running(redisPid) {
		t.Fatalf("pid file names %d (owner %d): state %q, parent %d, %q; braid is %d", redisPid, owner, state, ppid, cmdline, braid)
	}
	t.Cleanup(func() {
		if _, _, c := procState(redisPid); running(redisPid) && strings.Contains(c, "redis-server") {
			_ = syscall.Kill(redisPid, syscall.SIGKILL)
		}
	})

	p.Kill(t)
	eventually(t, "braid's redis-server gone after kill -9 of braid", 30*time.Second, func() string {
		if running(redisPid) {
			state, ppid, _ := procState(redisPid)
			return fmt.Sprintf("redis-server %d still runs (state %s, parent %d)", redisPid, state, ppid)
		}
		return ""
	})
}

// TestRestartKillsAStrayRedis: a redis-server left running in data_dir by
// a braid that died without stopping it (simulated: started here, with the
// pid file written the way braid writes it, naming a braid process that
// has exited) is killed when braid up starts again; the new braid's own
// redis-server is in the pid file, which a clean stop removes.
func TestRestartKillsAStrayRedis(t *testing.T) {
	redisServer := testenv.RedisServerPath(t)
	st := testenv.NewStack(t, childrenCatalog().YAML(), testenv.WithoutRedis())
	dir := filepath.Join(st.DataDir, "redis")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	gone := exec.Command(testenv.BraidBin(t), "check", "--config", filepath.Join(dir, "none.yaml"))
	_ = gone.Run() // exits at once: its pid is a braid that is gone
	port := testenv.FreePort(t)
	stray := exec.Command(redisServer, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--protected-mode", "no")
	if err := stray.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- stray.Wait() }()
	t.Cleanup(func() { _ = stray.Process.Kill() })
	writeFile(t, filepath.Join(dir, embedded.PidFile), fmt.Sprintf("%d %d %d\n", stray.Process.Pid, gone.ProcessState.Pid(), port))

	p := st.Start("up")
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the stray redis-server %d still runs after braid up started\n%s", stray.Process.Pid, p.Output())
	}
	if !strings.Contains(p.Output(), "killing the redis-server a previous braid left running") {
		t.Errorf("braid up did not say it killed the stray redis-server:\n%s", p.Output())
	}
	redisPid, owner, _ := pidFile(t, st.DataDir)
	if redisPid == stray.Process.Pid || owner != p.Cmd.Process.Pid {
		t.Fatalf("pid file names %d of %d; the stray was %d, braid is %d", redisPid, owner, stray.Process.Pid, p.Cmd.Process.Pid)
	}
	if err := p.Stop(t); err != nil {
		t.Fatalf("braid up stop: %v\n%s", err, p.Output())
	}
	if _, err := os.Stat(filepath.Join(dir, embedded.PidFile)); !os.IsNotExist(err) {
		t.Errorf("pid file after a clean stop: %v", err)
	}
}
