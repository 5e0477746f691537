// Package embedded starts the servers `braid up` needs on a laptop when no
// external ones are configured: a real nats-server with JetStream as a
// library, and a redis-server process (or, when none is installed, an
// embedded Redis-protocol server for development only).
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"
)

// NATS is an embedded nats-server.
type NATS struct {
	srv *server.Server
	URL string
}

// StartNATS runs a JetStream-enabled nats-server on 127.0.0.1 storing under
// dir. Port 0 picks a free port.
func StartNATS(dir string, port int) (*NATS, error) {
	if port == 0 {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		port = p
	}
	opts := &server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir, NoSigs: true, NoLog: true, ServerName: "braid-embedded"}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		s.Shutdown()
		return nil, errors.New("embedded nats: not ready after 15s")
	}
	return &NATS{srv: s, URL: fmt.Sprintf("nats://127.0.0.1:%d", port)}, nil
}

// Close shuts the server down and waits for it.
func (n *NATS) Close() error {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	return nil
}

// Redis is a Redis started by braid: a redis-server process or, failing
// that, an in-process development server.
type Redis struct {
	URL  string
	Dev  bool // true: the embedded development server (not durable, single process)
	cmd  *exec.Cmd
	dir  string // of redis-server, holding its pid file
	mini *miniredis.Miniredis
}

// StartRedis starts redis-server (own port, own dir, no persistence) when one
// is on PATH, else the embedded development server with a loud warning.
// The redis-server dies with this process (on Linux), and a redis-server
// left running in dir by a braid process that is gone is killed first.
func StartRedis(ctx context.Context, dir string, logger *slog.Logger) (*Redis, error) {
	// Absolute: redis-server changes into --dir before it opens --logfile,
	// so a relative data_dir would name a log file that does not exist.
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("redis dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis dir: %w", err)
	}
	if path, err := exec.LookPath("redis-server"); err == nil {
		if err := killOrphan(dir, logger); err != nil {
			return nil, err
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		cmd := exec.Command(path, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--protected-mode", "no")
		if err := startChild(cmd); err != nil {
			return nil, fmt.Errorf("start redis-server: %w", err)
		}
		r := &Redis{URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port), cmd: cmd, dir: dir}
		if err := writePidFile(dir, cmd.Process.Pid, port); err != nil {
			_ = r.Close()
			return nil, err
		}
		if err := waitRedis(ctx, r.URL); err != nil {
			_ = r.Close()
			return nil, err
		}
		logger.Info("started redis-server", "url", r.URL, "dir", dir)
		return r, nil
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("embedded redis: %w", err)
	}
	logger.Warn("!!! DEVELOPMENT ONLY: no redis-server on PATH and no redis.url configured; using an embedded Redis-protocol server. Speed-layer state lives in this process's memory. Install redis-server or set redis.url for anything real.")
	return &Redis{URL: "redis://" + m.Addr() + "/0", Dev: true, mini: m}, nil
}

func waitRedis(ctx context.Context, url string) error {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := redis.NewClient(opt)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := c.Ping(ctx).Err(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server at %s not ready", url)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Close stops the server.
func (r *Redis) Close() error {
	if r.mini != nil {
		r.mini.Close()
	}
	if r.cmd != nil && r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = r.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = r.cmd.Process.Kill()
			<-done
		}
		return removePidFile(r.dir)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
