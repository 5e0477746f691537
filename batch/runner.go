package batch

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	_ "github.com/duckdb/duckdb-go/v2" // database/sql driver "duckdb"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
)

// RunnerConfig configures batch runs.
type RunnerConfig struct {
	Epoch   time.Duration // arrival-epoch length; cutoffs are epoch starts (default defaults.Epoch)
	Threads int           // DuckDB threads of the in-process workers (0: DuckDB's default)
	Memory  string        // DuckDB memory_limit of the in-process workers, e.g. "1GB" ("": default)
	// Log tells where each stream's log ends. With it, an on-demand run
	// (Run, Start) waits, at most SettleTimeout, until the lake covers
	// every record the log held when the run was asked for; without it
	// (nil) the run takes what the lake covers and records covers_request
	// false. Scheduled runs never wait.
	Log           LogEnds
	SettleTimeout time.Duration // 0: no wait (the run still says whether it covers the request)
	// Executor computes a run's work units (nil: a Pool of Workers
	// goroutines in this process, with a Computer of its own per run).
	Executor UnitExecutor
	Workers  int // goroutines of the in-process pool (0: 1)
	// Lock is the run lock; nil: the view store's (LockRuns). With runs
	// started on more than one host it must be one they share
	// (workqueue.RunLock).
	Lock batchviews.RunLock
	// Retention, by stream, drops old dates from the views: window-start
	// dates before the UTC date of (run start - retention) get no unit
	// and their parts are left out of the version. A stream missing, or
	// 0: kept forever.
	Retention map[string]time.Duration
	// Entities, when set, is where every run materialises the entities'
	// batch part after it published (entities.go); nil: no entities.
	Entities EntityStore
}

// Runner computes batch view versions from the lake. One run at a time
// (across processes: the run lock). A run plans each view's work units
// (PlanView) on the lake's manifests and the version it builds on, has
// the executor compute the changed ones, and publishes the parts, new and
// carried over, as one version.
type Runner struct {
	cfg    RunnerConfig
	lk     RunLake
	views  ViewVersions
	lock   batchviews.RunLock
	speed  SpeedExpirer
	cat    *config.Catalog
	logger *slog.Logger

	mu sync.Mutex // held for the whole of a run

	runs     *prometheus.CounterVec
	duration prometheus.Histogram
	rowsRead prometheus.Counter
	rowsOut  prometheus.Counter
	lastOK   prometheus.Gauge
}

// NewRunner returns a runner. speed may be nil (no speed layer to expire);
// reg may be nil.
func NewRunner(cfg RunnerConfig, lk RunLake, views ViewVersions, speed SpeedExpirer, cat *config.Catalog, logger *slog.Logger, reg prometheus.Registerer) *Runner {
	if cfg.Epoch < time.Millisecond {
		cfg.Epoch = defaults.Epoch
	}
	if logger == nil {
		logger = slog.Default()
	}
	if rv := reflect.ValueOf(speed); speed != nil && rv.Kind() == reflect.Pointer && rv.IsNil() {
		speed = nil // a typed nil (*speedstore.Store)(nil) means no speed layer
	}
	if rv := reflect.ValueOf(cfg.Log); cfg.Log != nil && rv.Kind() == reflect.Pointer && rv.IsNil() {
		cfg.Log = nil
	}
	if rv := reflect.ValueOf(cfg.Entities); cfg.Entities != nil && rv.Kind() == reflect.Pointer && rv.IsNil() {
		cfg.Entities = nil
	}
	cfg.SettleTimeout = max(cfg.SettleTimeout, 0)
	cfg.Workers = max(cfg.Workers, 1)
	var lock batchviews.RunLock = runLockFunc(views.LockRuns)
	if cfg.Lock != nil {
		lock = cfg.Lock
	}
	f := promauto.With(reg)
	r := &Runner{cfg: cfg, lk: lk, views: views, lock: lock, speed: speed, cat: cat, logger: logger.With("component", "batch"),
		runs:     f.NewCounterVec(prometheus.CounterOpts{Name: "braid_batch_runs_total", Help: "Batch runs by final status."}, []string{"status"}),
		duration: f.NewHistogram(prometheus.HistogramOpts{Name: "braid_batch_run_duration_seconds", Help: "Duration of batch runs.", Buckets: prometheus.ExponentialBuckets(0.05, 2, 14)}),
		rowsRead: f.NewCounter(prometheus.CounterOpts{Name: "braid_batch_rows_read_total", Help: "Lake rows (before the cutoff) read by batch runs."}),
		rowsOut:  f.NewCounter(prometheus.CounterOpts{Name: "braid_batch_rows_out_total", Help: "Batch view rows (window and group cells) written by batch runs."}),
		lastOK:   f.NewGauge(prometheus.GaugeOpts{Name: "braid_batch_last_success_timestamp_seconds", Help: "When the last batch run succeeded."}),
	}
	// Runs a dead process left "running" are failed runs; say so now, not
	// only at the next run (unless a run is in progress elsewhere).
	if unlock, err := r.lock.Lock(); err == nil {
		r.recoverInterrupted()
		unlock()
	}
	return r
}

// runLockFunc adapts a lock function to batchviews.RunLock.
type runLockFunc func() (func(), error)

func (f runLockFunc) Lock() (func(), error) { return f() }

func (r *Runner) recoverInterrupted() {
	n, err := r.views.RecoverInterrupted()
	if err != nil {
		r.logger.Error("mark interrupted batch runs", "err", err)
	} else if n > 0 {
		r.logger.Warn("batch runs interrupted by a stopped process marked failed", "runs", n)
	}
}

// Start begins an on-demand run of views (nil: all) in the background and
// returns its id; ErrBusy when a run is in progress. Like Run, it covers
// what the log held when it was called. The run's record (Store.Run) tells
// its progress and result.
func (r *Runner) Start(views []string) (string, error) {
	req, err := r.request(context.Background(), views)
	if err != nil {
		return "", err
	}
	if !r.mu.TryLock() {
		return "", ErrBusy
	}
	id := batchviews.NewID()
	go func() {
		defer r.mu.Unlock()
		_, _ = r.run(context.Background(), id, req)
	}()
	return id, nil
}

// Run computes views (nil or empty: all) synchronously, waiting for a run
// in progress to end first. It is an on-demand run: it notes where each
// stream's log ends now and waits, at most SettleTimeout, until the lake
// covers those records and the arrival epoch of the last one has closed,
// then takes its cutoffs (the record's covers_request says whether the
// wait got there). It returns the run record: on failure with status
// failed (the previous version stays current) and the error; when some
// views failed and the others were published, with status partial and an
// error matching ErrViewsFailed.
func (r *Runner) Run(ctx context.Context, views []string) (batchviews.Run, error) {
	req, err := r.request(ctx, views)
	if err != nil {
		return batchviews.Run{}, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.run(ctx, batchviews.NewID(), req)
}

// request is what a run is asked to do: its views and, for an on-demand
// run, when it was asked and where the logs of their streams ended then.
type request struct {
	names []string
	at    time.Time            // zero: a scheduled run, which takes what is covered
	ends  map[Partition]LogEnd // by stream partition; one missing is asked for when the run starts
}

// request notes an on-demand request for views at this moment.
func (r *Runner) request(ctx context.Context, views []string) (request, error) {
	at := time.Now().UTC()
	names, err := r.resolve(views)
	if err != nil {
		return request{}, err
	}
	return request{names: names, at: at, ends: r.noteEnds(ctx, r.streamsOf(names))}, nil
}

// streamsOf lists the streams of views once each, in view order.
func (r *Runner) streamsOf(names []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		if s := r.cat.Views[n].Stream.Name; !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// Stale lists the views whose current batch rows were computed under
// another definition, or that have none: a view added or changed since.
func (r *Runner) Stale() ([]string, error) {
	cur, err := r.views.Current()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range r.cat.ViewOrder {
		if cur == nil || cur.Views[n].Definition != r.cat.Views[n].Definition() {
			out = append(out, n)
		}
	}
	return out, nil
}

// Rebuild runs the stale views (Stale) now, if there are any, so that a
// view added or changed since the last run has its exact history; it
// tries again, with a growing pause, until a run succeeds or ctx ends.
func (r *Runner) Rebuild(ctx context.Context) {
	pause := time.Second
	for ctx.Err() == nil {
		stale, err := r.Stale()
		if err == nil && len(stale) == 0 {
			return
		}
		if err == nil {
			// Like a scheduled run, it takes what the lake covers: the
			// speed layer's state of these views starts at an earlier
			// cutoff (batchviews.Store.StreamCutoff), so any cutoff now
			// makes them whole.
			r.logger.Info("batch run for views added or changed since the last run", "views", stale)
			r.mu.Lock()
			var rec batchviews.Run
			rec, err = r.run(ctx, batchviews.NewID(), request{names: stale})
			r.mu.Unlock()
			if err == nil || rec.Status == batchviews.StatusPartial {
				return // views that failed are tried again by the next run
			}
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, batchviews.ErrLocked) {
			r.logger.Info("another process is running a batch run; the run for added or changed views waits", "pause", pause)
		} else {
			r.logger.Error("batch run for added or changed views failed; trying again", "err", err, "pause", pause)
		}
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Minute)
	}
}

// Schedule runs the views added or changed since the last run at once
// (Rebuild), then every view every `every` (0: none) until ctx is
// cancelled.
func (r *Runner) Schedule(ctx context.Context, every time.Duration) {
	r.Rebuild(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.RebuildEntities(ctx) })
	if every <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Scheduled: no request to cover, so no wait; the run takes
			// what the lake covers.
			r.mu.Lock()
			_, err := r.run(ctx, batchviews.NewID(), request{names: append([]string(nil), r.cat.ViewOrder...)})
			r.mu.Unlock()
			if err != nil && ctx.Err() == nil && !errors.Is(err, batchviews.ErrLocked) {
				r.logger.Error("scheduled batch run failed", "err", err)
			}
		}
	}
}

func (r *Runner) resolve(views []string) ([]string, error) {
	if len(views) == 0 {
		return append([]string(nil), r.cat.ViewOrder...), nil
	}
	seen := map[string]bool{}
	var out []string
	for _, v := range views {
		if _, ok := r.cat.Views[v]; !ok {
			return nil, fmt.Errorf("%w: %q", ErrUnknownView, v)
		}
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out, nil
}

func (r *Runner) run(ctx context.Context, id string, req request) (batchviews.Run, error) {
	names := req.names
	started := time.Now().UTC()
	rec := batchviews.Run{ID: id, Status: batchviews.StatusRunning, Views: names, Started: started, Cutoffs: map[string]int64{}, RequestedAt: req.at}
	log := r.logger.With("run", id)
	// One run per store across processes: the lock dies with its process,
	// so a run still recorded as running under it was interrupted.
	unlock, err := r.lock.Lock()
	if err != nil && req.at.IsZero() && errors.Is(err, batchviews.ErrLocked) {
		// A scheduled run: another process (every batch worker schedules)
		// is running one; nothing to record.
		log.Info("batch run skipped: another process is running one")
		return rec, err
	}
	if err != nil {
		rec.Status, rec.Error, rec.Finished = batchviews.StatusFailed, err.Error(), time.Now().UTC()
		r.runs.WithLabelValues(rec.Status).Inc()
		if serr := r.views.SaveRun(rec); serr != nil {
			log.Error("save run record", "err", serr)
		}
		log.Error("batch run not started", "err", err)
		return rec, err
	}
	defer unlock()
	r.recoverInterrupted()
	// The record first, then the log line: "started" means it is on disk.
	if err := r.views.SaveRun(rec); err != nil {
		log.Error("save run record", "err", err)
	}
	log.Info("batch run started", "views", names)
	if !req.at.IsZero() {
		covered := r.settle(ctx, log, r.streamsOf(names), req.ends)
		rec.CoversRequest = &covered
	}
	prev, computed, err := r.compute(ctx, log, &rec)
	if err == nil && len(computed) == 0 && len(rec.FailedViews) > 0 {
		err = fmt.Errorf("%w: every view failed: %s", ErrViewsFailed, failedNames(rec.FailedViews))
	}
	if err == nil {
		err = r.publish(ctx, id, prev, computed)
	}
	rec.Finished = time.Now().UTC()
	rec.DurationMs = rec.Finished.Sub(started).Milliseconds()
	r.duration.Observe(rec.Finished.Sub(started).Seconds())
	if err != nil {
		rec.Status, rec.Error = batchviews.StatusFailed, err.Error()
		r.runs.WithLabelValues(rec.Status).Inc()
		if serr := r.views.SaveRun(rec); serr != nil {
			log.Error("save run record", "err", serr)
		}
		log.Error("batch run failed", "err", err, "duration_ms", rec.DurationMs)
		return rec, err
	}
	r.materialiseEntities(ctx, log)
	rec.Status, rec.Version = batchviews.StatusSucceeded, id
	var partial error
	if len(rec.FailedViews) > 0 {
		// The failed views kept their previous entries; the others are new.
		partial = fmt.Errorf("%w: %s", ErrViewsFailed, failedNames(rec.FailedViews))
		rec.Status, rec.Error = batchviews.StatusPartial, partial.Error()
	} else {
		r.lastOK.SetToCurrentTime()
	}
	r.runs.WithLabelValues(rec.Status).Inc()
	if serr := r.views.SaveRun(rec); serr != nil {
		log.Error("save run record", "err", serr)
	}
	if partial != nil {
		log.Warn("batch run published, some views failed", "version", id, "failed_views", rec.FailedViews, "rows_read", rec.RowsRead, "rows_out", rec.RowsOut, "duration_ms", rec.DurationMs)
	} else {
		log.Info("batch run succeeded", "version", id, "rows_read", rec.RowsRead, "rows_out", rec.RowsOut, "duration_ms", rec.DurationMs)
	}
	// Readers holding the previous version need speed epochs >= its cutoff;
	// everything older is in every version a reader can hold. Batch-tier
	// views keep no speed cells.
	if r.speed != nil && prev != nil {
		for _, n := range names {
			v := r.cat.Views[n]
			if v.Tier != logic.TierLive {
				continue
			}
			if old, ok := prev.Views[n]; ok && old.Cutoff > 0 && old.Definition == v.Definition() {
				if err := r.speed.Expire(ctx, v.Stream, v.StateKey(), old.Cutoff); err != nil {
					log.Warn("expire speed epochs", "view", n, "before", old.Cutoff, "err", err)
				}
			}
		}
	}
	return rec, partial
}

// failedNames lists the failed views, sorted.
func failedNames(failed map[string]string) string {
	names := make([]string, 0, len(failed))
	for n := range failed {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// compute runs the views' work units: for each stream its manifest, whose
// checkpoints give the cutoff (the epoch start at or below the stream's
// coverage, the least CoveredUntil of its partitions: every record that
// arrived before it is in the manifest's files); for
// each view its plan on top of the current version (PlanView); then the
// units to compute, all at once, through the executor. It returns the
// version built on and the computed views' entries (parts, cutoff,
// definition). A view whose stream's lake cannot be read, or with a unit
// that failed, is recorded in rec.FailedViews and left out; an error is
// returned only when nothing can be computed at all (no current version
// to build on, the run cancelled).
func (r *Runner) compute(ctx context.Context, log *slog.Logger, rec *batchviews.Run) (*batchviews.Version, map[string]batchviews.ViewVersion, error) {
	prev, err := r.views.Current()
	if err != nil {
		return nil, nil, err
	}
	type streamState struct {
		m      lake.Manifest
		cutoff int64
		err    error
	}
	streams := map[string]*streamState{}
	for _, n := range rec.Views {
		s := r.cat.Views[n].Stream.Name
		if _, ok := streams[s]; ok {
			continue
		}
		st := &streamState{}
		streams[s] = st
		st.m, st.err = r.lk.Manifest(ctx, s)
		if st.err != nil {
			if ctx.Err() != nil {
				return prev, nil, fmt.Errorf("batch: %w", ctx.Err())
			}
			st.err = fmt.Errorf("stream %s: %w", s, st.err)
			log.Error("batch source failed; its views keep their previous version", "stream", s, "err", st.err)
			continue
		}
		if cu := st.m.CoveredUntil(r.partitions(s)); cu > 0 {
			st.cutoff = logic.EpochOf(cu, r.cfg.Epoch)
		}
		log.Info("batch source", "stream", s, "files", len(st.m.Files), "cutoff", st.cutoff, "checkpoint_seq", st.m.Checkpoint.Seq, "partitions", r.partitions(s), "gen", st.m.Gen)
	}
	plans := map[string]Plan{}
	var units []Unit
	for _, n := range rec.Views {
		v := r.cat.Views[n]
		st := streams[v.Stream.Name]
		if st.err != nil {
			r.failView(rec, n, st.err)
			continue
		}
		in := PlanInput{Run: rec.ID, View: v, Files: st.m.Files, Cutoff: st.cutoff}
		if keep := r.cfg.Retention[v.Stream.Name]; keep > 0 {
			in.Horizon = dateOf(rec.Started.Add(-keep).UnixMilli())
		}
		if prev != nil {
			if vv, ok := prev.Views[n]; ok && vv.Definition == v.Definition() {
				in.Prev = &vv
			}
		}
		p, err := PlanView(in)
		if err != nil {
			r.failView(rec, n, err)
			continue
		}
		plans[n] = p
		units = append(units, p.Compute...)
		log.Info("batch view planned", "view", n, "units", len(p.Compute), "reused", len(p.Reuse), "cutoff", st.cutoff)
	}
	results := map[string][]UnitResult{}
	if len(units) > 0 {
		var mu sync.Mutex
		t0 := time.Now()
		exec := r.cfg.Executor
		if exec == nil {
			c := NewComputer(ComputeConfig{Threads: r.cfg.Threads, Memory: r.cfg.Memory}, r.lk, r.views, r.cat)
			defer c.Close()
			exec = NewPool(r.cfg.Workers, c)
		}
		err := exec.Execute(ctx, units, func(res UnitResult) {
			mu.Lock()
			defer mu.Unlock()
			results[res.Unit.View] = append(results[res.Unit.View], res)
		})
		if err != nil {
			return prev, nil, fmt.Errorf("batch: %w", err)
		}
		log.Info("batch units computed", "units", len(units), "ms", time.Since(t0).Milliseconds())
	}
	out := map[string]batchviews.ViewVersion{}
	read := map[string]map[string]int64{} // stream -> file key -> rows before the cutoff
	for _, n := range rec.Views {
		p, ok := plans[n]
		if !ok {
			continue
		}
		v := r.cat.Views[n]
		rs := results[n]
		var failed []string
		for _, res := range rs {
			if res.Err != "" {
				failed = append(failed, res.Unit.Date+": "+res.Err)
			}
		}
		if len(rs) < len(p.Compute) {
			failed = append(failed, fmt.Sprintf("%d of %d units without a result", len(p.Compute)-len(rs), len(p.Compute)))
		}
		if len(failed) > 0 {
			sort.Strings(failed)
			err := fmt.Errorf("units failed: %s", strings.Join(failed, "; "))
			log.Error("batch view failed; it keeps its previous version", "view", n, "err", err)
			r.failView(rec, n, err)
			continue
		}
		vv := batchviews.ViewVersion{Cutoff: streams[v.Stream.Name].cutoff, Definition: v.Definition()}
		vv.Parts = append(vv.Parts, p.Reuse...)
		for _, res := range rs {
			vv.Parts = append(vv.Parts, res.Part)
			fr := read[v.Stream.Name]
			if fr == nil {
				fr = map[string]int64{}
				read[v.Stream.Name] = fr
			}
			for k, c := range res.FileRows {
				fr[k] = c
			}
		}
		sort.Slice(vv.Parts, func(i, j int) bool { return vv.Parts[i].Date < vv.Parts[j].Date })
		for _, part := range vv.Parts {
			vv.Rows += part.Rows
		}
		out[n] = vv
		rec.Cutoffs[n] = vv.Cutoff
		rec.RowsOut += int64(vv.Rows)
		rec.UnitsComputed += len(rs)
		rec.UnitsReused += len(p.Reuse)
		r.rowsOut.Add(float64(vv.Rows))
		log.Info("batch view computed", "view", n, "rows", vv.Rows, "parts", len(vv.Parts), "units_computed", len(rs), "units_reused", len(p.Reuse), "cutoff", vv.Cutoff)
	}
	// Rows read: each lake file a computed unit read, once per stream.
	for _, fr := range read {
		for _, c := range fr {
			rec.RowsRead += c
		}
	}
	r.rowsRead.Add(float64(rec.RowsRead))
	return prev, out, nil
}

// failView records that view n failed with err.
func (r *Runner) failView(rec *batchviews.Run, n string, err error) {
	if rec.FailedViews == nil {
		rec.FailedViews = map[string]string{}
	}
	rec.FailedViews[n] = err.Error()
}

// publish makes the version of run id current on top of prev: the
// computed views' new entries, and the other views' entries of prev
// computed under today's definitions (a removed view's, and rows of
// another definition, are left behind).
func (r *Runner) publish(ctx context.Context, id string, prev *batchviews.Version, computed map[string]batchviews.ViewVersion) error {
	ver := &batchviews.Version{ID: id, Created: time.Now().UTC(), Views: map[string]batchviews.ViewVersion{}}
	if prev != nil {
		for n, vv := range prev.Views {
			if v, ok := r.cat.Views[n]; ok && vv.Definition == v.Definition() {
				ver.Views[n] = vv
			}
		}
	}
	for n, vv := range computed {
		ver.Views[n] = vv
	}
	if err := r.views.PublishParts(ctx, prev, ver); err != nil {
		if errors.Is(err, batchviews.ErrConflict) {
			return fmt.Errorf("batch: another run published first: %w", err)
		}
		return fmt.Errorf("batch: publish: %w", err)
	}
	return nil
}

// queryView computes a view's batch rows with window start in [lo, hi):
// its SQL (numeric slots, the exact values of the sketch measures and the
// picks of the last and first measures, keys included), then the values
// of each count_distinct sketch and the buckets of each quantile sketch,
// folded into the rows' sketches.
func queryView(ctx context.Context, conn *sql.Conn, v *logic.View, source string, cutoff, lo, hi int64) ([]batchviews.Row, error) {
	exact := v.ExactMeasures()
	var out []batchviews.Row
	at := map[cellKey]int{}
	err := scanCells(ctx, conn, v, v.SQL(source, cutoff), v.NumSlots+len(exact)+v.Picks(), func(k cellKey, vals []any) error {
		if k.w < lo || k.w >= hi {
			return nil
		}
		st := v.NewState()
		for i := range st.Num {
			x, err := float(vals[i])
			if err != nil {
				return fmt.Errorf("slot %d: %w", i, err)
			}
			st.Num[i] = x
		}
		if len(exact) > 0 {
			st.Exact = make([]float64, len(v.Measures))
			for i := range st.Exact {
				st.Exact[i] = math.NaN()
			}
			for i, mi := range exact {
				x, err := float(vals[v.NumSlots+i])
				if err != nil {
					return fmt.Errorf("measure %s: %w", v.Measures[mi].Name, err)
				}
				st.Exact[v.Measures[mi].ExactIdx] = x
			}
		}
		for i := range st.Picks {
			p, err := v.PickFromSQL(i, vals[v.NumSlots+len(exact)+i])
			if err != nil {
				return err
			}
			st.Picks[i] = p
		}
		at[k] = len(out)
		out = append(out, batchviews.Row{Window: k.w, Group: k.g, State: st})
		return nil
	})
	if err != nil {
		return nil, err
	}
	nDistinct, nQuantile := v.Sketches()
	var elem []byte
	for i := 0; i < nDistinct; i++ {
		err := scanCells(ctx, conn, v, v.DistinctSQL(source, cutoff, i), 1, func(k cellKey, vals []any) error {
			if k.w < lo || k.w >= hi {
				return nil
			}
			x, err := distinctValue(vals[0])
			if err != nil {
				return fmt.Errorf("count_distinct(%s): %w", v.DistinctField(i), err)
			}
			j, ok := at[k]
			if !ok {
				return fmt.Errorf("count_distinct(%s): a value for a cell the view has not", v.DistinctField(i))
			}
			st := &out[j].State
			if st.HLL[i] == nil {
				st.HLL[i] = new(logic.HLL)
			}
			elem = logic.AppendDistinctElem(elem[:0], x)
			st.HLL[i].Add(elem)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for i := 0; i < nQuantile; i++ {
		err := scanCells(ctx, conn, v, v.QuantileSQL(source, cutoff, i), 2, func(k cellKey, vals []any) error {
			if k.w < lo || k.w >= hi {
				return nil
			}
			b, ok1 := vals[0].(int32)
			n, ok2 := vals[1].(int64)
			if !ok1 || !ok2 {
				return fmt.Errorf("quantile(%s): unexpected bucket %T, count %T", v.QuantileField(i), vals[0], vals[1])
			}
			j, ok := at[k]
			if !ok {
				return fmt.Errorf("quantile(%s): a bucket for a cell the view has not", v.QuantileField(i))
			}
			st := &out[j].State
			if st.Q[i] == nil {
				st.Q[i] = logic.QuantileSketch{}
			}
			st.Q[i][b] += float64(n)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Window != out[j].Window {
			return out[i].Window < out[j].Window
		}
		return out[i].Group < out[j].Group
	})
	return out, nil
}

type cellKey struct {
	w int64
	g string
}

// scanCells runs q, whose columns are window_start, d0..dN and then n more,
// and calls f with each row's cell and its n further values.
func scanCells(ctx context.Context, conn *sql.Conn, v *logic.View, q string, n int, f func(cellKey, []any) error) error {
	rs, err := conn.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	defer rs.Close()
	nd := len(v.Dims)
	vals := make([]any, 1+nd+n)
	ptrs := make([]any, len(vals))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	dims := make([]logic.Value, nd)
	for rs.Next() {
		if err := rs.Scan(ptrs...); err != nil {
			return err
		}
		w, ok := vals[0].(int64)
		if !ok {
			return fmt.Errorf("window_start: unexpected %T", vals[0])
		}
		for i := 0; i < nd; i++ {
			d, err := v.DimValue(i, vals[1+i])
			if err != nil {
				return err
			}
			dims[i] = d
		}
		if err := f(cellKey{w, v.GroupKey(dims)}, vals[1+nd:]); err != nil {
			return err
		}
	}
	return rs.Err()
}

// float reads a DOUBLE column; NULL is NaN (an empty min/max, a null quantile).
func float(x any) (float64, error) {
	switch y := x.(type) {
	case nil:
		return math.NaN(), nil
	case float64:
		return y, nil
	}
	return 0, fmt.Errorf("unexpected %T", x)
}

// distinctValue converts a field value scanned from DuckDB into the Value
// whose element the speed layer hashes for the same event.
func distinctValue(x any) (logic.Value, error) {
	switch y := x.(type) {
	case string:
		return logic.Value{Kind: logic.TypeString, S: y}, nil
	case int64:
		return logic.Value{Kind: logic.TypeInt, I: y}, nil
	case int32:
		return logic.Value{Kind: logic.TypeInt, I: int64(y)}, nil
	case float64:
		return logic.Value{Kind: logic.TypeFloat, F: y}, nil
	case bool:
		if y {
			return logic.Value{Kind: logic.TypeBool, I: 1}, nil
		}
		return logic.Value{Kind: logic.TypeBool}, nil
	case time.Time:
		return logic.Value{Kind: logic.TypeTime, I: y.UnixMilli()}, nil
	}
	return logic.Value{}, fmt.Errorf("unexpected %T", x)
}

// sourceSQL is the relation of a stream's committed lake files: every
// declared field cast to its declared type, then the system columns, _part
// as coalesce(_part, 0) (files written before stream partitions have none:
// their records are partition 0's). The files' columns are matched by
// name (union_by_name), together with an empty relation of the declared
// types, so a field no file holds yet reads as NULL, a field no longer
// declared is left out, and an int field now declared float reads as
// DOUBLE from old and new files alike. The date= directories are not read
// as a column (a field may be named date). Changes the casts cannot read
// are refused before any process starts (lake.CheckFields).
func sourceSQL(s *logic.Stream, files []string) string {
	var typed strings.Builder
	typed.WriteString("SELECT ")
	for _, f := range s.Fields {
		fmt.Fprintf(&typed, "CAST(NULL AS %s) AS %s, ", sqlType(f.Type), quoteIdent(f.Name))
	}
	fmt.Fprintf(&typed, "CAST(NULL AS BIGINT) AS %s, CAST(NULL AS INTEGER) AS %s, CAST(NULL AS BIGINT) AS %s, CAST(NULL AS BIGINT) AS %s, CAST(NULL AS VARCHAR) AS %s, CAST(NULL AS INTEGER) AS %s WHERE false",
		lake.ColSeq, lake.ColIndex, lake.ColArrival, lake.ColTime, lake.ColID, lake.ColPart)
	if len(files) == 0 {
		return typed.String()
	}
	q := make([]string, len(files))
	for i, f := range files {
		q[i] = quoteString(f)
	}
	var b strings.Builder
	b.WriteString("SELECT ")
	for _, f := range s.Fields {
		fmt.Fprintf(&b, "CAST(%s AS %s) AS %s, ", quoteIdent(f.Name), sqlType(f.Type), quoteIdent(f.Name))
	}
	fmt.Fprintf(&b, "%s, %s, %s, %s, %s, coalesce(%s, 0) AS %s FROM (SELECT * FROM read_parquet([%s], union_by_name = true, hive_partitioning = false) UNION ALL BY NAME %s)",
		lake.ColSeq, lake.ColIndex, lake.ColArrival, lake.ColTime, lake.ColID, lake.ColPart, lake.ColPart, strings.Join(q, ", "), typed.String())
	return b.String()
}

// sqlType is the DuckDB type of a field type.
func sqlType(t logic.FieldType) string {
	switch t {
	case logic.TypeInt:
		return "BIGINT"
	case logic.TypeFloat:
		return "DOUBLE"
	case logic.TypeBool:
		return "BOOLEAN"
	case logic.TypeTime:
		return "TIMESTAMP"
	}
	return "VARCHAR"
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
