package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/configs"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/embedded"
	"github.com/braid-data/braid/storage/eventlog"
)

// app holds what the commands share: configuration, catalog, logger,
// metrics registry and the connections, closed in reverse order.
type app struct {
	cfg    *config.Config
	cat    *config.Catalog
	logger *slog.Logger
	reg    *prometheus.Registry

	nc  *nats.Conn
	log *eventlog.Log
	rdb *redis.Client

	closers []func() error
}

// loadConfig reads --config, or the embedded demo configuration when path
// is empty and demo is allowed.
func loadConfig(path string, allowDemo bool) (*config.Config, error) {
	if path == "" {
		if !allowDemo {
			return nil, errors.New("--config is required")
		}
		return config.Parse(configs.Demo, os.Getenv)
	}
	return config.Load(path)
}

func newApp(cfg *config.Config) (*app, error) {
	a := &app{cfg: cfg, logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))}
	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	key, err := piiKey(cfg)
	if err != nil {
		return nil, err
	}
	a.cat, err = cfg.Compile(key)
	if err != nil {
		return nil, err
	}
	return a, nil
}

func logLevel() slog.Level {
	switch strings.ToLower(os.Getenv("BRAID_LOG_LEVEL")) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// piiKey returns the HMAC key for hashed PII: the configured environment
// variable, else a random key kept in <data_dir>/pii.key. Processes of one
// deployment must share it.
func piiKey(cfg *config.Config) ([]byte, error) {
	if cfg.PIIKeyEnv != "" {
		if v := os.Getenv(cfg.PIIKeyEnv); v != "" {
			return []byte(v), nil
		}
	}
	path := filepath.Join(cfg.DataDir, "pii.key")
	if b, err := os.ReadFile(path); err == nil {
		return []byte(strings.TrimSpace(string(b))), nil
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return nil, fmt.Errorf("pii key: %w", err)
	}
	k := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(k+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("pii key: %w", err)
	}
	return []byte(k), nil
}

func (a *app) onClose(f func() error) { a.closers = append(a.closers, f) }

// Close closes everything in reverse order of opening.
func (a *app) Close() error {
	var errs []error
	for i := len(a.closers) - 1; i >= 0; i-- {
		errs = append(errs, a.closers[i]())
	}
	a.closers = nil
	return errors.Join(errs...)
}

// connectNATS connects to nats.url, or starts the embedded server when the
// URL is empty and embedded is allowed.
func (a *app) connectNATS(ctx context.Context, allowEmbedded bool) error {
	url := a.cfg.NATS.URL
	if url == "" {
		if !allowEmbedded {
			return errors.New("nats.url is not set (BRAID_NATS_URL); only `braid up` runs an embedded server")
		}
		dir := filepath.Join(a.cfg.DataDir, "nats")
		srv, err := embedded.StartNATS(dir, 0)
		if err != nil {
			return err
		}
		a.onClose(srv.Close)
		url = srv.URL
		a.logger.Info("started embedded nats-server with JetStream", "url", url, "dir", dir)
	}
	opts := []nats.Option{nats.Name("braid"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				a.logger.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { a.logger.Info("nats reconnected", "url", c.ConnectedUrl()) })}
	n := a.cfg.NATS
	if n.User != "" {
		opts = append(opts, nats.UserInfo(n.User, n.Password))
	}
	if n.Creds != "" {
		opts = append(opts, nats.UserCredentials(n.Creds))
	}
	if n.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(n.NKey)
		if err != nil {
			return fmt.Errorf("nats.nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if n.TLSCA != "" {
		opts = append(opts, nats.RootCAs(n.TLSCA))
	}
	if n.TLSCert != "" {
		opts = append(opts, nats.ClientCert(n.TLSCert, n.TLSKey))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("connect nats %s: %w", url, err)
	}
	a.nc = nc
	a.onClose(func() error { return nc.Drain() })
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	a.log, err = eventlog.Open(ctx, js, a.cat.StreamOrder, eventlog.Options{
		Namespace: a.cfg.Namespace, Replicas: n.Replicas, DedupWindow: n.DedupWindow.D(), MaxAge: n.MaxAge.D(),
		MaxMsgs: n.MaxMsgs, MaxBytes: n.MaxBytes,
		DLQMaxAge: a.cfg.DLQ.MaxAge.D(), DLQMaxMsgs: a.cfg.DLQ.MaxMsgs, PublishTimeout: n.PublishTimeout.D(),
	})
	return err
}

// connectRedis connects to redis.url, or starts redis-server (else the
// embedded development server) when the URL is empty and that is allowed.
func (a *app) connectRedis(ctx context.Context, allowEmbedded bool) error {
	url := a.cfg.Redis.URL
	if url == "" {
		if !allowEmbedded {
			return errors.New("redis.url is not set (BRAID_REDIS_URL); only `braid up` starts its own Redis")
		}
		r, err := embedded.StartRedis(ctx, filepath.Join(a.cfg.DataDir, "redis"), a.logger)
		if err != nil {
			return err
		}
		a.onClose(r.Close)
		url = r.URL
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return fmt.Errorf("redis.url: %w", err)
	}
	a.rdb = redis.NewClient(opt)
	a.onClose(a.rdb.Close)
	if err := a.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", url, err)
	}
	return nil
}
