package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/alerts"
	"github.com/braid-data/braid/speed"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/leases"
	"github.com/braid-data/braid/storage/speedstore"
)

// layers are the components a process runs (nil ones are not run here)
// and the stores they share (nil when the command did not open them).
type layers struct {
	speed    *speed.Layer
	archiver *batch.Archiver
	runner   *batch.Runner
	server   *serving.Server
	worker   *batch.Worker   // computes batch work units from the queue
	alerts   *alerts.Service // evaluates and delivers the alerts (with the server)
	schedule bool            // run the batch scheduler: views added or changed at once, then every batch.every

	lake   *lake.Lake
	views  *batchviews.Store
	store  *speedstore.Store // the speed layer's and batch runs' Redis client
	qstore *speedstore.Store // the queries' Redis client

	entities *speedstore.EntityReader // entity features (entityReader), made once
}

func (a *app) newSpeed(l *layers) {
	a.newSpeedFrom(l, batchviews.CutoffSource{Store: l.views, Catalog: a.cat})
}

// newSpeedFrom builds the speed layer; the partitions of the streams are
// shared out among the running speed processes by leases in Redis.
func (a *app) newSpeedFrom(l *layers, cutoffs speed.CutoffSource) {
	c := a.cfg
	logger := a.logger.With("layer", "speed")
	shares := leases.New(a.rdb, leases.Options{Namespace: c.Namespace, Role: "speed", TakeAtOnce: a.allLayers, Logger: logger})
	l.speed = speed.New(speed.Config{Namespace: c.Namespace, BatchSize: c.Speed.BatchSize, MaxWait: c.Speed.MaxWait.D(),
		Epoch: c.Epoch.D(), MaxCells: c.Speed.MaxCells}, a.log, l.store, cutoffs, shares, a.cat, logger, a.reg)
}

// newArchiver builds the archiver; the partitions of the streams are
// shared out among the running archive processes by leases in Redis.
func (a *app) newArchiver(l *layers) {
	c := a.cfg
	logger := a.logger.With("layer", "archive")
	retention := map[string]time.Duration{}
	for name, s := range c.Streams {
		retention[name] = s.Retention.D()
	}
	var shares batch.Shares
	if a.rdb != nil {
		shares = archiveShares{leases.New(a.rdb, leases.Options{Namespace: c.Namespace, Role: "archive", TakeAtOnce: a.allLayers, Logger: logger})}
	}
	l.archiver = batch.NewArchiver(batch.ArchiverConfig{MaxRows: c.Archive.MaxRows, MaxBytes: c.Archive.MaxBytes, MaxDelay: c.Archive.MaxDelay.D(),
		NoCompact: !c.Archive.Compact, TargetFileBytes: int64(c.Archive.TargetFileBytes), LogMaxAge: c.NATS.MaxAge.D(), Retention: retention,
		UpkeepEvery: c.Archive.UpkeepEvery.D(), Shares: shares},
		a.log, l.lake, a.cat, logger, a.reg)
}

// archiveShares is the archiver's Shares over a leases group.
type archiveShares struct{ g *leases.Group }

func (s archiveShares) Run(ctx context.Context, parts []batch.Partition, work func(ctx context.Context, p batch.Partition) error) error {
	lp := make([]leases.Partition, len(parts))
	for i, p := range parts {
		lp[i] = leases.Partition(p)
	}
	return s.g.Run(ctx, lp, func(ctx context.Context, p leases.Partition) error { return work(ctx, batch.Partition(p)) })
}

// newRunner builds the batch runner; with the event log open, on-demand
// runs wait (batch.settle_timeout) until the lake covers what the log held
// when they were asked for.
//
// With NATS, a run's work units go on the batch work queue, computed by
// every process's worker (newWorker); without it (braid batch run with no
// nats.url) by a pool in this process.
func (a *app) newRunner(l *layers) {
	c := a.cfg
	retention := map[string]time.Duration{}
	for name, s := range c.Streams {
		retention[name] = s.Retention.D()
	}
	cfg := batch.RunnerConfig{Epoch: c.Epoch.D(), SettleTimeout: c.Batch.SettleTimeout.D(),
		Threads: c.Batch.Threads, Workers: max(c.Batch.Workers, 1), Retention: retention}
	if a.log != nil {
		cfg.Log = logEnds{a.log}
	}
	if a.queue != nil {
		cfg.Executor = batch.NewQueueExecutor(a.queue)
	}
	if l.store != nil {
		cfg.Entities = l.store // the entities' batch part, materialised by every run
	}
	l.runner = batch.NewRunner(cfg, l.lake, l.views, l.store, a.cat, a.logger.With("layer", "batch"), a.reg)
}

// newWorker makes this process a batch worker: batch.workers units at a
// time from the work queue (none when it is 0, or without NATS).
func (a *app) newWorker(l *layers) {
	if a.queue == nil || a.cfg.Batch.Workers == 0 {
		return
	}
	comp := batch.NewComputer(batch.ComputeConfig{Threads: a.cfg.Batch.Threads}, l.lake, l.views, a.cat)
	a.onClose(comp.Close)
	l.worker = batch.NewWorker(a.queue, comp, a.cfg.Batch.Workers, a.logger.With("layer", "batch-worker"))
}

// newServer builds the HTTP API and, when the catalog has alerts, their
// evaluation and delivery over the server's query engine.
func (a *app) newServer(l *layers) error {
	o := a.servingOptions(l)
	if len(a.cat.AlertOrder) > 0 {
		eng, err := serving.NewEngine(o)
		if err != nil {
			return err
		}
		a.onClose(eng.Close)
		o.Engine = eng
		if l.alerts, err = a.newAlerts(eng); err != nil {
			return err
		}
		o.Alerts = l.alerts
	}
	var err error
	if l.server, err = serving.New(o); err != nil {
		return err
	}
	a.onClose(l.server.Close)
	return nil
}

// runAll runs the given layers until ctx ends, then stops them: the HTTP
// server first (no new ingest), then the consumers flush, commit and ack.
func (a *app) runAll(parent context.Context, l *layers, extra ...func(context.Context)) error {
	// One layer failing stops the others too (each flushes and commits what
	// it holds), so the process exits whole, never half running.
	ctx, stop := context.WithCancel(parent)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	goRun := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				a.logger.Error("layer failed", "layer", name, "err", err)
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	if l.speed != nil {
		goRun("speed", l.speed.Run)
	}
	if l.archiver != nil {
		goRun("archive", l.archiver.Run)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.servePprof(ctx, os.Getenv(pprofEnv)); err != nil {
			a.logger.Error("pprof listener failed; running without it", "err", err)
		}
	}()
	wg.Add(1)
	go func() { defer wg.Done(); a.watchMemory(ctx) }()
	if l.worker != nil {
		goRun("batch-worker", l.worker.Run)
	}
	if l.alerts != nil {
		goRun("alerts", l.alerts.Run)
	}
	if l.runner != nil && l.schedule {
		goRun("batch", func(ctx context.Context) error { l.runner.Schedule(ctx, a.cfg.Batch.Every.D()); return nil })
	}
	var srv *http.Server
	if l.server != nil {
		ln, err := net.Listen("tcp", a.cfg.HTTP.Addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", a.cfg.HTTP.Addr, err)
		}
		// Its Shutdown closes the server: live (SSE) streams end and bodies
		// still arriving are cut, so it waits only for requests storing events.
		srv = l.server.HTTPServer()
		a.logger.Info("serving HTTP", "addr", ln.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("http: %w", err)
			}
		}()
	}
	for _, f := range extra {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	var first error
	select {
	case <-ctx.Done():
	case first = <-errs:
	}
	a.logger.Info("shutting down")
	stop()
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		a.logger.Info("stopped")
	case <-time.After(30 * time.Second):
		a.logger.Error("layers still running 30s after shutdown began; exiting")
	}
	return first
}

func cmdUp(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	path := fs.String("config", "", "configuration file (default: the embedded demo configuration)")
	withDemo := fs.Bool("demo", false, "also run the synthetic event generator")
	rate := fs.Int("demo-rate", 50, "demo events per second per stream")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*path, true)
	if err != nil {
		return err
	}
	a, err := newApp(cfg, config.PIIKeyOwn)
	if err != nil {
		return err
	}
	defer a.Close()
	l, err := a.open(ctx, deps{nats: true, redis: true, lake: true, views: true, embedded: true})
	if err != nil {
		return err
	}
	a.allLayers = true
	a.newSpeed(l)
	a.newArchiver(l)
	a.newRunner(l)
	a.newWorker(l)
	l.schedule = true
	a.useDemoHooks()
	if err := a.newServer(l); err != nil {
		return err
	}
	var extra []func(context.Context)
	if *withDemo {
		d := &demo{base: "http://" + loopback(cfg.HTTP.Addr), rate: *rate, logger: a.logger.With("layer", "demo")}
		extra = append(extra, d.run)
	}
	return a.runAll(ctx, l, extra...)
}

// loopback turns a listen address such as ":8080" into one to dial.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}
