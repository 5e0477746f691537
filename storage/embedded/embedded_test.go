package embedded_test

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
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/storage/embedded"
)

// TestStartRedisRelativeDir: braid up's redis-server starts with a relative
// data_dir (the demo's ./data) and answers.
func TestStartRedisRelativeDir(t *testing.T) {
	needRedisServer(t)
	t.Chdir(t.TempDir())
	ctx := context.Background()
	r, err := embedded.StartRedis(ctx, "data/redis", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.Dev {
		t.Fatal("the embedded development server answered, not redis-server")
	}
	opt, err := redis.ParseURL(r.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("get: %q %v", got, err)
	}
}

// startStray starts a redis-server in dir the way StartRedis does, without
// braid, and writes dir's pid file naming it and owner as the braid process
// that started it. It returns the process's exit, once it has one.
func startStray(t *testing.T, dir string, owner int) (pid int, exited <-chan error) {
	t.Helper()
	port := freePort(t)
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--protected-mode", "no")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	if err := os.WriteFile(filepath.Join(dir, embedded.PidFile), fmt.Appendf(nil, "%d %d %d\n", cmd.Process.Pid, owner, port), 0o644); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", port)})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatal("stray redis-server not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cmd.Process.Pid, done
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// deadPid is the pid of a process that has exited.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("redis-server", "--version")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.ProcessState.Pid()
}

// TestStartRedisKillsAStray: a redis-server left running in the directory
// by a braid process that is gone is killed before a new one starts, and
// the pid file names the new one until Close removes it.
func TestStartRedisKillsAStray(t *testing.T) {
	needRedisServer(t)
	dir := t.TempDir()
	stray, exited := startStray(t, dir, deadPid(t))
	r, err := embedded.StartRedis(context.Background(), dir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("the stray redis-server %d still runs", stray)
	}
	data, err := os.ReadFile(filepath.Join(dir, embedded.PidFile))
	var pid, owner, port int
	if _, serr := fmt.Sscanf(string(data), "%d %d %d", &pid, &owner, &port); err != nil || serr != nil || pid == stray || owner != os.Getpid() || !strings.Contains(r.URL, fmt.Sprintf(":%d/", port)) {
		t.Fatalf("pid file %q (%v) after start, url %s", data, err, r.URL)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, embedded.PidFile)); !os.IsNotExist(err) {
		t.Fatalf("pid file after Close: %v", err)
	}
}

// TestStartRedisRefusesALiveOwnersDir: the redis-server of a braid
// process that still runs is left alone, and StartRedis refuses the
// directory; a pid file naming no redis-server (its process gone, or the
// pid reused) is dropped.
func TestStartRedisRefusesALiveOwnersDir(t *testing.T) {
	needRedisServer(t)
	dir := t.TempDir()
	_, exited := startStray(t, dir, os.Getpid()) // this process is its parent: a live owner
	_, err := embedded.StartRedis(context.Background(), dir, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "still runs") {
		t.Fatalf("StartRedis beside a live owner: %v", err)
	}
	select {
	case err := <-exited:
		t.Fatalf("the live owner's redis-server was stopped: %v", err)
	default:
	}

	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, embedded.PidFile), fmt.Appendf(nil, "%d %d 1\n", os.Getpid(), deadPid(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := embedded.StartRedis(context.Background(), other, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("a pid file naming this test process (no redis-server): %v", err)
	}
	_ = r.Close()
}

func needRedisServer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server is not on PATH (make test installs it: scripts/provision)")
	}
}
