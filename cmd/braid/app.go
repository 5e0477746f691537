package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
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
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/embedded"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/storage/workqueue"
)

// app holds what the commands share: configuration, catalog, logger,
// metrics registry and the dependencies, each opened once (see open) and
// closed in reverse order by Close.
type app struct {
	cfg    *config.Config
	cat    *config.Catalog
	logger *slog.Logger
	reg    *prometheus.Registry

	nc       *nats.Conn
	js       jetstream.JetStream
	natsWait time.Duration // how long a start waits for NATS (0: defaults.NATSStartWait; < 0: not at all)
	// allLayers: this process runs every layer (braid up), expected to be
	// alone: its speed and archive groups take their partitions at once.
	allLayers bool
	log       *eventlog.Log
	rdb       redis.UniversalClient // the speed layer's commits, leases and positions, batch runs
	store     *speedstore.Store     // over rdb
	qrdb      redis.UniversalClient // queries (serving, audits)
	qstore    *speedstore.Store     // over qrdb
	lk        *lake.Lake
	views     *batchviews.Store
	// runLock is the batch run lock every process shares, in NATS (set
	// once NATS is connected); nil: the file store's own lock.
	runLock batchviews.RunLock
	queue   *workqueue.Queue // the batch work queue (with NATS and the batch views)
	// demoHooks is the demo's webhook receiver, served beside the
	// dashboard (braid up with an alert signing with its secret).
	demoHooks *demoHooks

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

// newApp loads what every command shares; use says where its PII key may
// come from (config.PIIKey): braid up alone may keep one in data_dir.
func newApp(cfg *config.Config, use config.PIIKeyUse) (*app, error) {
	a := &app{cfg: cfg, logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))}
	applyMemoryLimit(cfg, os.Getenv, a.logger)
	for _, w := range cfg.Warnings() {
		a.logger.Warn("config: " + w)
	}
	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	key, err := cfg.PIIKey(use, os.Getenv)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
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

// lakeDir is where the lake of a configuration lives.
func lakeDir(cfg *config.Config) string { return filepath.Join(cfg.DataDir, "lake") }

// checkLake refuses field types of the catalog's streams that the files in
// the lake cannot be read as (see "Changing a stream's schema" in the
// README), naming each stream, field, the type the lake holds and the ways
// out.
func checkLake(lk *lake.Lake, cat *config.Catalog) error {
	var all []lake.Conflict
	for _, name := range cat.StreamOrder {
		cs, err := lk.CheckFields(name, lake.DeclaredTypes(cat.Streams[name]))
		if err != nil {
			return fmt.Errorf("check the lake of stream %s: %w", name, err)
		}
		all = append(all, cs...)
	}
	if len(all) > 0 {
		return &lake.SchemaError{Conflicts: all}
	}
	return nil
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

// deps names the dependencies a command needs.
type deps struct {
	nats     bool // NATS and the event log
	redis    bool // Redis and the speed store
	lake     bool // the Parquet lake
	views    bool // the batch view versions
	embedded bool // start NATS / Redis in-process when their URL is empty (`braid up` only)
}

// open opens what d names, in a fixed order (lake, NATS, Redis, batch
// views), each at most once per app with its cleanup registered, and
// returns the stores as the shared part of the layers. The lake comes
// first: a configuration it cannot be read with stops the process before
// any server starts.
func (a *app) open(ctx context.Context, d deps) (*layers, error) {
	if d.lake {
		if _, err := a.stores(true, false); err != nil {
			return nil, err
		}
	}
	if d.nats {
		if err := a.connectNATS(ctx, d.embedded); err != nil {
			return nil, err
		}
	}
	if d.redis {
		if err := a.connectRedis(ctx, d.embedded); err != nil {
			return nil, err
		}
	}
	if d.views && a.js != nil {
		if err := a.openBatchQueue(ctx); err != nil {
			return nil, err
		}
	}
	return a.stores(d.lake, d.views)
}

// openBatchQueue opens the batch work queue and, when the batch views are
// on S3 (shared by hosts), the run lock every process shares; once.
func (a *app) openBatchQueue(ctx context.Context) error {
	if a.queue != nil {
		return nil
	}
	n := a.cfg.NATS
	var q *workqueue.Queue
	err := a.untilNATSReady(ctx, "open the batch work queue", func() (err error) {
		q, err = workqueue.Open(ctx, a.js, workqueue.Options{Namespace: a.cfg.Namespace, Replicas: n.Replicas, Logger: a.logger.With("component", "workqueue")})
		return err
	})
	if err != nil {
		return fmt.Errorf("open batch work queue: %w", err)
	}
	a.queue = q
	if a.cfg.Storage.IsS3() {
		var lock *workqueue.RunLock
		err := a.untilNATSReady(ctx, "open the batch run lock", func() (err error) {
			lock, err = workqueue.OpenRunLock(ctx, a.js, workqueue.LockOptions{Namespace: a.cfg.Namespace, Replicas: n.Replicas, Logger: a.logger.With("component", "runlock")})
			return err
		})
		if err != nil {
			return fmt.Errorf("open batch run lock: %w", err)
		}
		a.runLock = lock
	}
	return nil
}

// openStores opens the lake and the batch views (`braid audit`).
func (a *app) openStores() (*layers, error) { return a.stores(true, true) }

// stores opens the lake and the batch views when asked, each once, and
// returns them with the speed store (there whenever Redis is connected).
// The lake is opened only when every stream's declared field types can
// read the files it holds.
func (a *app) stores(withLake, withViews bool) (*layers, error) {
	if withLake && a.lk == nil {
		lk, err := openLake(a.cfg, os.Getenv, false, a.logger, a.reg)
		if err != nil {
			return nil, fmt.Errorf("open lake: %w", err)
		}
		if err := checkLake(lk, a.cat); err != nil {
			return nil, err
		}
		a.lk = lk
	}
	if withViews && a.views == nil {
		v, err := openViews(a.cfg, os.Getenv, a.runLock, a.logger)
		if err != nil {
			return nil, fmt.Errorf("open batch views: %w", err)
		}
		a.views = v
	}
	return &layers{lake: a.lk, views: a.views, store: a.store, qstore: a.qstore}, nil
}

// connectNATS connects to nats.url, or starts the embedded server when the
// URL is empty and embedded is allowed, and opens the event log; once.
func (a *app) connectNATS(ctx context.Context, allowEmbedded bool) error {
	if a.log != nil {
		return nil
	}
	url := a.cfg.NATS.URL
	if url == "" {
		if !allowEmbedded {
			return errors.New("nats.url is not set (BRAID_NATS_URL); only `braid up` runs an embedded server")
		}
		dir := filepath.Join(a.cfg.DataDir, "nats")
		srv, err := embedded.StartNATS(dir, 0)
		if err != nil {
			return fmt.Errorf("start embedded nats-server: %w", err)
		}
		a.onClose(srv.Close)
		url = srv.URL
		a.logger.Info("started embedded nats-server with JetStream", "url", url, "dir", dir)
	}
	opts, err := a.natsOptions()
	if err != nil {
		return err
	}
	// A server still starting is waited for (natsWait), not a reason to
	// exit: the processes of a deployment start in any order.
	nc, err := nats.Connect(url, append(opts, nats.RetryOnFailedConnect(true))...)
	if err != nil {
		return fmt.Errorf("connect nats %s: %w", redactURL(url), err)
	}
	if err := a.untilNATSReady(ctx, "connect to NATS at "+redactURL(url), func() error {
		if !nc.IsConnected() {
			return nats.ErrNoServers
		}
		return nil
	}); err != nil {
		nc.Close()
		return err
	}
	a.nc = nc
	a.onClose(func() error { return nc.Drain() })
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	a.js = js
	n := a.cfg.NATS
	parts := make(map[string]int, len(a.cat.Streams))
	for name, st := range a.cat.Streams {
		parts[name] = st.Partitions
	}
	var l *eventlog.Log
	err = a.untilNATSReady(ctx, "open the event log", func() (err error) {
		l, err = eventlog.Open(ctx, js, a.cat.StreamOrder, eventlog.Options{
			Namespace: a.cfg.Namespace, Partitions: parts, Replicas: n.Replicas, DedupWindow: n.DedupWindow.D(), MaxAge: n.MaxAge.D(),
			MaxMsgs: n.MaxMsgs, MaxBytes: n.MaxBytes,
			DLQMaxAge: a.cfg.DLQ.MaxAge.D(), DLQMaxRecords: a.cfg.DLQ.MaxRecords, LateMaxMsgs: a.cfg.DLQ.MaxLate, PublishTimeout: n.PublishTimeout.D(),
			Logger: a.logger,
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("open event log: %w", err)
	}
	a.log = l
	return nil
}

// untilNATSReady calls f (what: for the log) until it succeeds, fails
// with an error other than those of a NATS server or cluster still
// starting (no connection yet, timeouts, no responders, JetStream not
// enabled yet, its cluster unavailable or short of nodes for the
// replicas), or natsWait (default
// defaults.NATSStartWait) has passed; it says what it waits for every 5 s.
func (a *app) untilNATSReady(ctx context.Context, what string, f func() error) error {
	wait := a.natsWait
	if wait == 0 {
		wait = defaults.NATSStartWait
	}
	deadline := time.Now().Add(wait)
	pause, said := 100*time.Millisecond, time.Now()
	for {
		err := f()
		if err == nil || !natsStarting(err) || wait < 0 || time.Now().After(deadline) {
			return err
		}
		if time.Since(said) >= 5*time.Second {
			a.logger.Warn("waiting for NATS", "to", what, "err", err, "gives_up_in", time.Until(deadline).Round(time.Second))
			said = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// jsErrCodeClusterNoPeers is JetStream's "no suitable peers for
// placement": fewer nodes of a cluster are up than a stream's replicas.
const jsErrCodeClusterNoPeers jetstream.ErrorCode = 10005

// natsStarting tells the errors of a NATS server or cluster still starting
// (a cluster with fewer nodes up than nats.replicas among them).
func natsStarting(err error) bool {
	var api *jetstream.APIError
	if errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeJetStreamNotEnabled || api.ErrorCode == jsErrCodeClusterNoPeers || api.Code == 503) {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrNoServers) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, nats.ErrJetStreamNotEnabled)
}

// natsOptions are the connection options: reconnect forever, to any
// server of nats.url (comma-separated: a cluster's nodes, of which the
// client also learns the others), a quarter of a second apart; notice a
// server that went away without closing the connection (a host lost)
// within about 15 s; log disconnects; and the configured credentials and
// TLS.
func (a *app) natsOptions() ([]nats.Option, error) {
	opts := []nats.Option{nats.Name("braid"), nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(5 * time.Second), nats.MaxPingsOutstanding(2),
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
			return nil, fmt.Errorf("nats.nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if n.TLSCA != "" {
		opts = append(opts, nats.RootCAs(n.TLSCA))
	}
	if n.TLSCert != "" {
		opts = append(opts, nats.ClientCert(n.TLSCert, n.TLSKey))
	}
	return opts, nil
}

// connectRedis connects to redis.url, or starts redis-server (else the
// embedded development server) when the URL is empty and that is allowed,
// and makes the speed store; once. With redis.cluster the URL lists some
// of the cluster's nodes and the clients are cluster clients
// (clusterOptions).
func (a *app) connectRedis(ctx context.Context, allowEmbedded bool) error {
	if a.rdb != nil {
		return nil
	}
	url := a.cfg.Redis.URL
	if url == "" {
		if !allowEmbedded {
			return errors.New("redis.url is not set (BRAID_REDIS_URL); only `braid up` starts its own Redis")
		}
		r, err := embedded.StartRedis(ctx, filepath.Join(a.cfg.DataDir, "redis"), a.logger)
		if err != nil {
			return fmt.Errorf("start redis: %w", err)
		}
		a.onClose(r.Close)
		url = r.URL
	}
	// Two clients, each with a pool of its own: the speed layer's commits,
	// leases and positions (and batch runs' expiry) on one, queries on the
	// other, so that queries, however many or heavy, never keep the speed
	// layer waiting for a connection. Their round trips are bounded (a
	// read of speed cells fetches at most readFields fields per round
	// trip), so Redis itself serves the speed layer in between.
	var rdb, qrdb redis.UniversalClient
	if a.cfg.Redis.Cluster {
		seeds, err := parseSeeds(url)
		if err != nil {
			return err
		}
		rdb = redis.NewClusterClient(clusterOptions(seeds, redisSpeedPool, redisSpeedPoolTimeout))
		qrdb = redis.NewClusterClient(clusterOptions(seeds, redisQueryPool, redisQueryPoolTimeout))
	} else {
		opt, err := redis.ParseURL(url)
		if err != nil {
			return fmt.Errorf("redis.url: %w", err)
		}
		wopt, qopt := *opt, *opt
		redisClientOptions(&wopt, redisSpeedPool, redisSpeedPoolTimeout)
		redisClientOptions(&qopt, redisQueryPool, redisQueryPoolTimeout)
		rdb, qrdb = redis.NewClient(&wopt), redis.NewClient(&qopt)
	}
	a.onClose(rdb.Close)
	a.onClose(qrdb.Close)
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis %s: %w", redactURL(url), err)
	}
	a.rdb, a.store = rdb, speedstore.New(rdb, a.cfg.Namespace)
	a.qrdb, a.qstore = qrdb, speedstore.New(qrdb, a.cfg.Namespace)
	return nil
}

// The Redis clients' pools and timeouts (a redis.url query parameter such
// as pool_size or read_timeout wins; with a cluster, the first node's). A
// cluster client's pools are per node.
const (
	redisSpeedPool        = 16
	redisSpeedPoolTimeout = 5 * time.Second // an outage beyond it: the partitions' leases lapse meanwhile (defaults.LeaseTTL)
	redisQueryPool        = 16
	redisQueryPoolTimeout = 10 * time.Second
	redisTimeout          = 5 * time.Second // one command or pipeline: dial, write, read
	// redisClusterReload is how often a cluster client reloads its slot
	// map: after a failover, commits to the lost master's slots fail until
	// it does (go-redis's default, 60 s, left them failing for over 30 s).
	redisClusterReload = 500 * time.Millisecond
)

// parseSeeds reads redis.url as a Redis Cluster's seeds: URLs separated
// by commas, with the same user and password.
func parseSeeds(raw string) ([]*redis.Options, error) {
	var seeds []*redis.Options
	for _, s := range strings.Split(raw, ",") {
		opt, err := redis.ParseURL(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("redis.url: %w", err)
		}
		if opt.DB != 0 {
			return nil, fmt.Errorf("redis.url: %s: a Redis Cluster has only database 0", redactURL(s))
		}
		if len(seeds) > 0 && (opt.Username != seeds[0].Username || opt.Password != seeds[0].Password) {
			return nil, errors.New("redis.url: the cluster's nodes are given different users or passwords")
		}
		seeds = append(seeds, opt)
	}
	return seeds, nil
}

// clusterOptions makes a cluster client's options from its seeds: their
// addresses; the first's credentials, TLS, pool and timeouts (defaults as
// for one server); the slot map reloaded every redisClusterReload.
func clusterOptions(seeds []*redis.Options, pool int, poolTimeout time.Duration) *redis.ClusterOptions {
	o := *seeds[0]
	redisClientOptions(&o, pool, poolTimeout)
	co := &redis.ClusterOptions{
		Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
		PoolSize: o.PoolSize, PoolTimeout: o.PoolTimeout, MinIdleConns: o.MinIdleConns, MaxRetries: o.MaxRetries,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		ClusterStateReloadInterval: redisClusterReload,
	}
	for _, s := range seeds {
		co.Addrs = append(co.Addrs, s.Addr)
	}
	return co
}

func redisClientOptions(o *redis.Options, pool int, poolTimeout time.Duration) {
	if o.PoolSize == 0 {
		o.PoolSize = pool
	}
	if o.PoolTimeout == 0 {
		o.PoolTimeout = poolTimeout
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = redisTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = redisTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = redisTimeout
	}
}

// redactURL hides the password of URLs (redis://user:secret@host) in
// messages; a list of NATS URLs is redacted one by one.
func redactURL(raw string) string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			if _, has := u.User.Password(); has {
				parts[i] = u.Redacted()
			}
		}
	}
	return strings.Join(parts, ",")
}
