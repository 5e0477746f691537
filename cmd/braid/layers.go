package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
)

// layerFlags parses the flags every single-layer command shares.
func layerFlags(name string, args []string, extra func(*flag.FlagSet)) (*app, *flag.FlagSet, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	path := fs.String("config", "", "configuration file")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	cfg, err := loadConfig(*path, false)
	if err != nil {
		return nil, nil, err
	}
	a, err := newApp(cfg, config.PIIKeyShared)
	if err != nil {
		return nil, nil, err
	}
	return a, fs, nil
}

// runLayer is a single-layer command: the shared flags, then the
// dependencies d, then build adds the layer's components to l, which run
// until SIGINT or SIGTERM and then stop in order.
func runLayer(ctx context.Context, name string, args []string, d deps, build func(a *app, l *layers) error) error {
	a, _, err := layerFlags(name, args, nil)
	if err != nil {
		return err
	}
	defer a.Close()
	l, err := a.open(ctx, d)
	if err != nil {
		return err
	}
	if err := build(a, l); err != nil {
		return err
	}
	return a.runAll(ctx, l)
}

func cmdSpeed(ctx context.Context, args []string) error {
	return runLayer(ctx, "speed", args, deps{nats: true, redis: true, views: true}, func(a *app, l *layers) error {
		a.newSpeed(l)
		return nil
	})
}

func cmdArchive(ctx context.Context, args []string) error {
	return runLayer(ctx, "archive", args, deps{nats: true, redis: true, lake: true}, func(a *app, l *layers) error {
		a.newArchiver(l)
		return nil
	})
}

// cmdServe is the HTTP API alone: it answers POST /v1/batch/runs but does
// not schedule runs.
func cmdServe(ctx context.Context, args []string) error {
	return runLayer(ctx, "serve", args, deps{nats: true, redis: true, lake: true, views: true}, func(a *app, l *layers) error {
		a.newRunner(l)
		a.newWorker(l)
		return a.newServer(l)
	})
}

// cmdBatch is `braid batch` (a batch worker, which also schedules runs:
// the one holding the run lock runs them) or `braid batch run` (one run
// now, exit code 1 on failure).
func cmdBatch(ctx context.Context, args []string) error {
	once := len(args) > 0 && args[0] == "run"
	if once {
		args = args[1:]
	}
	var views string
	a, _, err := layerFlags("batch", args, func(fs *flag.FlagSet) {
		fs.StringVar(&views, "view", "", "comma-separated views to recompute (default: all)")
	})
	if err != nil {
		return err
	}
	defer a.Close()
	// The event log tells a run where the streams end, so that it covers
	// every event acknowledged before it was asked for; without nats.url
	// (or when NATS cannot be reached) it takes what the lake covers and
	// says covers_request false.
	if once && a.cfg.NATS.URL != "" {
		a.natsWait = -1 // one run now: without NATS it takes what the lake covers
		if err := a.connectNATS(ctx, false); err != nil {
			a.logger.Warn("no event log: the run covers what the lake holds, not necessarily every acknowledged event", "err", err)
		}
	}
	// Redis lets a run expire the speed epochs it absorbed; without it the
	// next run of a process that has Redis does that. A worker needs NATS
	// (the work queue); a single run without it computes in process.
	l, err := a.open(ctx, deps{nats: !once, redis: a.cfg.Redis.URL != "", lake: true, views: true})
	if err != nil {
		return err
	}
	a.newRunner(l)
	a.newWorker(l)
	if once && l.worker != nil {
		// This run's units are computed here too (and by any other worker).
		wctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := l.worker.Run(wctx); err != nil && wctx.Err() == nil {
				a.logger.Error("batch worker failed", "err", err)
			}
		}()
		defer func() { stop(); <-done }()
	}
	if !once {
		if a.cfg.Batch.Every.D() == 0 {
			a.logger.Info("batch.every is 0: runs only for views added or changed, and on demand (braid batch run, POST /v1/batch/runs)")
		}
		l.schedule = true
		return a.runAll(ctx, l)
	}
	var list []string
	if views != "" {
		list = strings.Split(views, ",")
		for _, v := range list {
			if _, ok := a.cat.Views[v]; !ok {
				return fmt.Errorf("unknown view %q", v)
			}
		}
	}
	run, err := l.runner.Run(ctx, list)
	b, _ := json.Marshal(run)
	fmt.Fprintln(os.Stderr, string(b))
	if run.Version == "" && err != nil {
		return err
	}
	covers := "no"
	if run.CoversRequest != nil && *run.CoversRequest {
		covers = "yes"
	}
	fmt.Printf("run %s %s: views=%s rows_read=%d rows_out=%d units_computed=%d units_reused=%d duration=%s version=%s covers_request=%s\n", run.ID, run.Status,
		strings.Join(run.Views, ","), run.RowsRead, run.RowsOut, run.UnitsComputed, run.UnitsReused, time.Duration(run.DurationMs)*time.Millisecond, run.Version, covers)
	for _, v := range slices.Sorted(maps.Keys(run.FailedViews)) {
		fmt.Printf("view %s failed: %s\n", v, run.FailedViews[v])
	}
	// Exit non-zero unless every view was computed: a partial run
	// published the others, but a view still needs attention.
	if run.Status != batchviews.StatusSucceeded {
		return fmt.Errorf("run %s %s: %s", run.ID, run.Status, run.Error)
	}
	return nil
}
