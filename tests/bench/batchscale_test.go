package bench

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/objstore"
	"github.com/braid-data/braid/storage/workqueue"
	"github.com/braid-data/braid/tests/testenv"
)

// The batch layer at scale: the lake on versitygw vs local files
// (TestBenchBatchS3), an incremental run after one new hour vs a full
// recompute (TestBenchBatchIncremental), and one vs two workers on the
// JetStream work queue (TestBenchBatchWorkers). Each run is checked: rows
// read against the events written, and views against a run computed
// another way. Sizes: BRAID_BENCH_S3_*, BRAID_BENCH_INCR_*, BRAID_BENCH_WORKERS_* (gen_test.go).

// scaleLake is a generated lake of the batch-lake catalog: n events whose
// event times sweep [end-days, end) in order, 50 countries, 1000 arrivals
// a millisecond from arrival0, committed with the cutoff after the last.
type scaleLake struct {
	cfg    *config.Config
	cat    *config.Catalog
	s      *logic.Stream
	v      *logic.View
	f      orderFields
	lk     *lake.Lake
	dir    string // the lake's directory
	n      int    // events written
	maxArr int64
	cutoff int64 // the cutoff the committed checkpoint gives
}

var benchCountries = func() []string {
	c := make([]string, 50)
	for i := range c {
		c[i] = fmt.Sprintf("c%02d", i)
	}
	return c
}()

func newScaleLake(t *testing.T, dir string, n, days int, end, arrival0 int64) *scaleLake {
	t.Helper()
	cfg, err := config.Parse([]byte(batchLakeCatalog().YAML()), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	sl := &scaleLake{cfg: cfg, cat: cat, s: cat.Streams["orders"], v: cat.Views["by_country"], dir: dir}
	sl.f = fieldsOf(t, sl.s)
	sl.lk, err = lake.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	span := int64(days) * 24 * time.Hour.Milliseconds()
	start := end - span
	t0 := time.Now()
	sl.append(t, n, func(i int, r *lake.Row) {
		sl.f.set(r, i, start+int64(i)*span/int64(n), benchCountries[mix(uint64(i)^0x5bd1e995)%50])
		r.Arrival = arrival0 + int64(i)/1000
	})
	t.Logf("lake: %d events over %d days in %d files, %.0f MiB, written in %s", n, days, sl.files(t), sl.mib(t), time.Since(t0).Round(time.Millisecond))
	return sl
}

// append writes events [sl.n, sl.n+m) with gen and commits them.
func (sl *scaleLake) append(t *testing.T, m int, gen func(i int, r *lake.Row)) {
	t.Helper()
	sl.maxArr = max(sl.maxArr, writeLake(t, sl.lk, sl.s, sl.n, sl.n+m, gen))
	sl.n += m
	sl.cutoff = commitLake(t, sl.lk, sl.s.Name, uint64(sl.n), sl.maxArr, sl.cfg.Epoch.D())
}

func (sl *scaleLake) manifest(t *testing.T) lake.Manifest {
	t.Helper()
	m, err := sl.lk.Manifest(context.Background(), sl.s.Name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (sl *scaleLake) files(t *testing.T) int { return len(sl.manifest(t).Files) }

func (sl *scaleLake) mib(t *testing.T) float64 {
	var b int64
	for _, f := range sl.manifest(t).Files {
		b += f.Bytes
	}
	return float64(b) / (1 << 20)
}

// runOnce is one batch run with runner, checked to have read every event
// of the lake (want) when want > 0; it returns the run and its seconds.
func runOnce(t *testing.T, runner *batch.Runner, logs *bytes.Buffer, want int) (batchviews.Run, float64) {
	t.Helper()
	logs.Reset()
	t0 := time.Now()
	run, err := runner.Run(context.Background(), nil)
	sec := time.Since(t0).Seconds()
	if err != nil || run.Status != batchviews.StatusSucceeded {
		t.Fatalf("batch run: %+v %v\n%s", run, err, logs.String())
	}
	if want > 0 && run.RowsRead != int64(want) {
		t.Fatalf("batch run read %d rows, want %d\n%s", run.RowsRead, want, logs.String())
	}
	return run, sec
}

// viewRows reads every row of view v in the store's current version.
func viewRows(t *testing.T, views *batchviews.Store, v *logic.View) []batchviews.Row {
	t.Helper()
	ver, err := views.Current()
	if err != nil || ver == nil {
		t.Fatalf("current version: %v %v", ver, err)
	}
	rows, err := views.Rows(context.Background(), ver, v, math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// sameRows fails the test unless a and b hold the same cells with the
// same numeric state (sums compared to 1e-9 relative: DuckDB may add in
// another order).
func sameRows(t *testing.T, what string, a, b []batchviews.Row) {
	t.Helper()
	key := func(r batchviews.Row) string { return fmt.Sprintf("%d/%s", r.Window, r.Group) }
	sortRows := func(rs []batchviews.Row) {
		sort.Slice(rs, func(i, j int) bool {
			if rs[i].Window != rs[j].Window {
				return rs[i].Window < rs[j].Window
			}
			return rs[i].Group < rs[j].Group
		})
	}
	sortRows(a)
	sortRows(b)
	if len(a) != len(b) {
		t.Fatalf("%s: %d rows vs %d", what, len(a), len(b))
	}
	for i := range a {
		if key(a[i]) != key(b[i]) || len(a[i].State.Num) != len(b[i].State.Num) {
			t.Fatalf("%s: row %d: %s %v vs %s %v", what, i, key(a[i]), a[i].State.Num, key(b[i]), b[i].State.Num)
		}
		for j, x := range a[i].State.Num {
			y := b[i].State.Num[j]
			if math.IsNaN(x) && math.IsNaN(y) {
				continue
			}
			if math.Abs(x-y) > 1e-9*math.Max(1, math.Max(math.Abs(x), math.Abs(y))) {
				t.Fatalf("%s: cell %s slot %d: %v vs %v", what, key(a[i]), j, x, y)
			}
		}
	}
}

// countOf sums the view's count measure over rows (the events counted).
func countOf(t *testing.T, v *logic.View, rows []batchviews.Row) int64 {
	t.Helper()
	st := v.NewState()
	for _, r := range rows {
		v.MergeState(&st, r.State)
	}
	vals := v.Finalize(&st)
	for i, m := range v.Measures {
		if m.Name == "orders" {
			switch x := vals[i].(type) {
			case int64:
				return x
			case float64:
				return int64(x)
			}
			t.Fatalf("count is a %T", vals[i])
		}
	}
	t.Fatalf("view %s has no measure orders", v.Name)
	return 0
}

// TestBenchBatchS3: a full batch run of the same lake on local files and
// on versitygw (uploaded object by object, manifests included), each into
// a fresh view store (on S3 for the S3 lake, as a deployment on
// storage.url has them), the S3 one with a cold cache. Both read every
// event and publish the same rows, counting every event.
func TestBenchBatchS3(t *testing.T) {
	benchOnly(t)
	n := envInt(t, "BRAID_BENCH_S3_EVENTS", 10_000_000)
	days := envInt(t, "BRAID_BENCH_S3_DAYS", 7)
	dir := t.TempDir()
	midnight := time.Now().UTC().Truncate(24 * time.Hour).UnixMilli()
	sl := newScaleLake(t, filepath.Join(dir, "lake"), n, days, midnight, time.Now().Add(-time.Hour).UnixMilli())

	// S3: every object of the lake copied to the bucket under lake/.
	s3 := testenv.StartS3(t)
	open := func(prefix string) *objstore.S3 { return s3.Store(t, prefix) }
	t0 := time.Now()
	bytesUp := copyObjects(t, sl.lk.Store(), open("lake"))
	t.Logf("uploaded %.0f MiB to versitygw in %s", float64(bytesUp)/(1<<20), time.Since(t0).Round(time.Millisecond))

	// Each side runs `reps` times, alternating, each time into a fresh
	// view store (the S3 lake opened anew: a cold cache); the fastest run
	// of each counts (a shared machine only ever slows a run down).
	reps := envInt(t, "BRAID_BENCH_S3_REPS", 2)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	var local []batchviews.Row
	localSec, s3Sec := math.Inf(1), math.Inf(1)
	units := 0
	for rep := range reps {
		// Local: the lake's own directory, views on local files.
		localViews, err := batchviews.OpenDir(filepath.Join(dir, fmt.Sprintf("views%d", rep)))
		if err != nil {
			t.Fatal(err)
		}
		localRun, sec := runOnce(t, batch.NewRunner(batch.RunnerConfig{Epoch: sl.cfg.Epoch.D()}, sl.lk, localViews, nil, sl.cat, logger, nil), &logs, n)
		t.Logf("local run: %.2fs units=%d rows_out=%d", sec, localRun.UnitsComputed, localRun.RowsOut)
		localSec = min(localSec, sec)
		if local == nil {
			local = viewRows(t, localViews, sl.v)
			if c := countOf(t, sl.v, local); c != int64(n) {
				t.Fatalf("local views count %d events, want %d", c, n)
			}
		}

		// S3: the lake and the views on the bucket, as a deployment on
		// storage.url has them.
		s3Lake, err := lake.Open(open("lake"), lake.Options{WorkDir: filepath.Join(dir, fmt.Sprintf("s3work%d", rep))})
		if err != nil {
			t.Fatal(err)
		}
		s3Views, err := batchviews.Open(open(fmt.Sprintf("views%d", rep)))
		if err != nil {
			t.Fatal(err)
		}
		s3Run, sec := runOnce(t, batch.NewRunner(batch.RunnerConfig{Epoch: sl.cfg.Epoch.D()}, s3Lake, s3Views, nil, sl.cat, logger, nil), &logs, n)
		t.Logf("s3 run: %.2fs units=%d rows_out=%d", sec, s3Run.UnitsComputed, s3Run.RowsOut)
		s3Sec = min(s3Sec, sec)
		units = s3Run.UnitsComputed
		if s3Run.Cutoffs[sl.v.Name] != localRun.Cutoffs[sl.v.Name] {
			t.Fatalf("cutoffs: s3 %d, local %d", s3Run.Cutoffs[sl.v.Name], localRun.Cutoffs[sl.v.Name])
		}
		sameRows(t, "s3 vs local", viewRows(t, s3Views, sl.v), local)
	}

	label := sizeLabel(n)
	report(t, "batch_s3_"+label+"_events", s3Sec*1000, "ms", localSec*1000)
	fmt.Printf("bench: batch_s3 %s events over %d days, %d units, best of %d: local %.2fs, versitygw (cold cache, views on S3) %.2fs, ratio s3/local %.2fx (aim <= 1.3x)\n",
		label, days, units, reps, localSec, s3Sec, s3Sec/localSec)
}

// copyObjects copies every object of src to dst (4 at a time) and returns
// the bytes copied.
func copyObjects(t *testing.T, src, dst objstore.Store) int64 {
	t.Helper()
	ctx := context.Background()
	objs, err := src.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var next, total atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(objs) {
					return
				}
				o := objs[i]
				r, err := src.Open(ctx, o.Key)
				if err == nil {
					err = dst.Put(ctx, o.Key, r, o.Size)
					r.Close()
				}
				if err != nil {
					errc <- fmt.Errorf("copy %s: %w", o.Key, err)
					return
				}
				total.Add(o.Size)
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return total.Load()
}

// TestBenchBatchIncremental: 30 days of history, a full run; then one new
// hour of events (arrivals after the run's cutoff, event times in the last
// hour) committed, and an incremental run on top of the full run's version
// next to a full recompute of the same lake into a fresh view store. The
// two publish the same rows, counting every event.
func TestBenchBatchIncremental(t *testing.T) {
	benchOnly(t)
	n := envInt(t, "BRAID_BENCH_INCR_EVENTS", 30_000_000)
	days := envInt(t, "BRAID_BENCH_INCR_DAYS", 30)
	dir := t.TempDir()
	now := time.Now()
	end := now.Add(-time.Hour).UnixMilli() // history's event times end an hour ago
	sl := newScaleLake(t, filepath.Join(dir, "lake"), n, days, end, now.Add(-2*time.Hour).UnixMilli())

	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	views, err := batchviews.OpenDir(filepath.Join(dir, "views"))
	if err != nil {
		t.Fatal(err)
	}
	runner := batch.NewRunner(batch.RunnerConfig{Epoch: sl.cfg.Epoch.D()}, sl.lk, views, nil, sl.cat, logger, nil)
	first, firstSec := runOnce(t, runner, &logs, n)
	t.Logf("full run of the history: %.2fs units=%d rows_out=%d", firstSec, first.UnitsComputed, first.RowsOut)

	// One hour's share of events, event times over the last hour, arriving
	// after the full run's cutoff.
	m := n / (days * 24)
	base, arr0 := sl.n, first.Cutoffs[sl.v.Name]
	sl.append(t, m, func(i int, r *lake.Row) {
		j := int64(i - base)
		sl.f.set(r, i, end+j*time.Hour.Milliseconds()/int64(m), benchCountries[mix(uint64(i)^0x5bd1e995)%50])
		r.Arrival = arr0 + j/1000
	})
	incr, incrSec := runOnce(t, runner, &logs, 0)
	t.Logf("incremental run: %.2fs units computed=%d reused=%d rows_read=%d\n%s", incrSec, incr.UnitsComputed, incr.UnitsReused, incr.RowsRead, logs.String())
	if incr.UnitsReused == 0 || incr.UnitsComputed == 0 {
		t.Fatalf("incremental run computed %d units and reused %d", incr.UnitsComputed, incr.UnitsReused)
	}

	fresh, err := batchviews.OpenDir(filepath.Join(dir, "fresh"))
	if err != nil {
		t.Fatal(err)
	}
	full, fullSec := runOnce(t, batch.NewRunner(batch.RunnerConfig{Epoch: sl.cfg.Epoch.D()}, sl.lk, fresh, nil, sl.cat, logger, nil), &logs, n+m)
	t.Logf("full recompute: %.2fs units=%d rows_out=%d", fullSec, full.UnitsComputed, full.RowsOut)
	if incr.Cutoffs[sl.v.Name] != full.Cutoffs[sl.v.Name] || incr.RowsOut != full.RowsOut {
		t.Fatalf("incremental run %+v, full recompute %+v", incr, full)
	}
	want := viewRows(t, fresh, sl.v)
	if c := countOf(t, sl.v, want); c != int64(n+m) {
		t.Fatalf("full recompute counts %d events, want %d", c, n+m)
	}
	sameRows(t, "incremental vs full recompute", viewRows(t, views, sl.v), want)

	label := sizeLabel(n)
	report(t, "batch_incremental_"+label+"_events", incrSec*1000, "ms", fullSec*1000)
	fmt.Printf("bench: batch_incremental %s events over %d days + 1 hour (%d events): incremental %.2fs (units computed %d, reused %d), full recompute %.2fs (units %d), ratio %.3fx (aim <= 0.1x)\n",
		label, days, m, incrSec, incr.UnitsComputed, incr.UnitsReused, fullSec, full.UnitsComputed, incrSec/fullSec)
}

// timedComputer records how long each unit took.
type timedComputer struct {
	c batch.UnitComputer

	mu    sync.Mutex
	times []time.Duration
}

func (tc *timedComputer) Compute(ctx context.Context, u batch.Unit) (batch.UnitResult, error) {
	t0 := time.Now()
	res, err := tc.c.Compute(ctx, u)
	tc.mu.Lock()
	tc.times = append(tc.times, time.Since(t0))
	tc.mu.Unlock()
	return res, err
}

// bareDays runs DuckDB's bare group-by of each date's files (the units'
// work without Braid) on k goroutines, each with a DuckDB of its own
// limited to one thread, and returns the seconds it took: the speedup the
// machine itself offers two such workers at that moment.
func bareDays(t *testing.T, sl *scaleLake, k int) float64 {
	t.Helper()
	ctx := context.Background()
	byDate := map[string][]string{}
	var dates []string
	for _, f := range sl.manifest(t).Files {
		if _, ok := byDate[f.Date]; !ok {
			dates = append(dates, f.Date)
		}
		byDate[f.Date] = append(byDate[f.Date], f.Key)
	}
	dbs := make([]*sql.DB, k)
	for i := range dbs {
		db, err := sql.Open("duckdb", "")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec("SET threads = 1"); err != nil {
			t.Fatal(err)
		}
		dbs[i] = db
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, k)
	t0 := time.Now()
	for _, db := range dbs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(dates) {
					return
				}
				paths, release, err := sl.lk.Local(ctx, byDate[dates[i]])
				if err != nil {
					errc <- err
					return
				}
				list := make([]string, len(paths))
				for j, p := range paths {
					list[j] = "'" + strings.ReplaceAll(p, "'", "''") + "'"
				}
				err = func() error {
					rows, err := db.Query(fmt.Sprintf(`SELECT CAST(floor(_time / 60000) AS BIGINT) * 60000 AS w, country, count(*), sum(amount), avg(amount), min(amount), max(amount)
						FROM read_parquet([%s]) WHERE _arrival < %d GROUP BY ALL`, strings.Join(list, ", "), sl.cutoff))
					if err != nil {
						return err
					}
					defer rows.Close()
					vals := make([]any, 7)
					ptrs := make([]any, 7)
					for j := range vals {
						ptrs[j] = &vals[j]
					}
					for rows.Next() {
						if err := rows.Scan(ptrs...); err != nil {
							return err
						}
					}
					return rows.Err()
				}()
				release()
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return time.Since(t0).Seconds()
}

// cpuSeconds is the process's user + system CPU time so far.
func cpuSeconds(t *testing.T) float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// TestBenchBatchWorkers: the same full run computed by one worker, then
// by two, each a batch.Worker with its own Computer (its own DuckDB, one
// thread) on its own connection to a nats-server process, the run's units
// handed out through the JetStream work queue. Wall time and the
// process's CPU-seconds (getrusage: the coordinator and the workers; the
// server's own CPU is not counted) per million events; the coordinator's
// fixed cost is one worker's wall time less its units' (a run with nothing
// new, every unit reused, is printed beside it). Both publish the same
// rows, counting every event.
func TestBenchBatchWorkers(t *testing.T) {
	benchOnly(t)
	n := envInt(t, "BRAID_BENCH_WORKERS_EVENTS", 8_000_000)
	days := envInt(t, "BRAID_BENCH_WORKERS_DAYS", 8)
	ctx := context.Background()
	dir := t.TempDir()
	midnight := time.Now().UTC().Truncate(24 * time.Hour).UnixMilli()
	sl := newScaleLake(t, filepath.Join(dir, "lake"), n, days, midnight, time.Now().Add(-time.Hour).UnixMilli())
	nats := testenv.StartNATSProc(t)
	quiet := slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil))

	type point struct {
		workers   int
		wall, cpu float64
		work      float64 // seconds of unit computation, all workers
		busiest   float64 // seconds of unit computation of the busiest worker
		slowest   float64 // seconds of the slowest unit
		idle      float64 // seconds of a run with nothing new
		units     int
	}
	// Each configuration runs `reps` times, alternating (1, 2, 1, 2, ...),
	// each time into a fresh view store; the fastest run of each counts:
	// on a shared machine the others' load only ever slows a run down.
	reps := envInt(t, "BRAID_BENCH_WORKERS_REPS", 3)
	best := map[int]point{}
	bare := map[int]float64{} // the same, DuckDB alone (bareDays)
	var ref []batchviews.Row
	for rep := range reps {
		for _, k := range []int{1, 2} {
			ns := fmt.Sprintf("%sw%dr%d", testenv.Namespace(t), k, rep)
			openQueue := func() *workqueue.Queue {
				_, js := nats.JetStream(t)
				q, err := workqueue.Open(ctx, js, workqueue.Options{Namespace: ns, Replicas: 1, Logger: quiet})
				if err != nil {
					t.Fatal(err)
				}
				return q
			}
			views, err := batchviews.OpenDir(filepath.Join(dir, fmt.Sprintf("views%d-%d", k, rep)))
			if err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithCancel(ctx)
			var wg sync.WaitGroup
			var timed []*timedComputer
			for range k {
				c := batch.NewComputer(batch.ComputeConfig{Threads: 1}, sl.lk, views, sl.cat)
				tc := &timedComputer{c: c}
				timed = append(timed, tc)
				w := batch.NewWorker(openQueue(), tc, 1, quiet)
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					if err := w.Run(wctx); err != nil {
						t.Error(err)
					}
				}()
			}
			var logs bytes.Buffer
			runner := batch.NewRunner(batch.RunnerConfig{Epoch: sl.cfg.Epoch.D(), Executor: batch.NewQueueExecutor(openQueue())}, sl.lk, views, nil, sl.cat, slog.New(slog.NewTextHandler(&logs, nil)), nil)
			cpu0 := cpuSeconds(t)
			run, wall := runOnce(t, runner, &logs, n)
			cpu := cpuSeconds(t) - cpu0
			again, fixed := runOnce(t, runner, &logs, 0)
			cancel()
			wg.Wait()
			if again.UnitsComputed != 0 || again.UnitsReused != run.UnitsComputed {
				t.Fatalf("a run with nothing new computed %d units, reused %d (of %d)", again.UnitsComputed, again.UnitsReused, run.UnitsComputed)
			}
			p := point{workers: k, wall: wall, cpu: cpu, idle: fixed, units: run.UnitsComputed}
			var per []string
			for i, tc := range timed {
				var own time.Duration
				for _, d := range tc.times {
					own += d
					p.slowest = max(p.slowest, d.Seconds())
				}
				p.work += own.Seconds()
				p.busiest = max(p.busiest, own.Seconds())
				per = append(per, fmt.Sprintf("worker %d: %d units %.2fs", i, len(tc.times), own.Seconds()))
			}
			t.Logf("%d workers: %.2fs wall, %.2f CPU-s, %s; run with nothing new %.3fs", k, wall, cpu, strings.Join(per, ", "), fixed)
			bw := bareDays(t, sl, k)
			t.Logf("%d bare DuckDBs: %.2fs", k, bw)
			rows := viewRows(t, views, sl.v)
			if ref == nil {
				if c := countOf(t, sl.v, rows); c != int64(n) {
					t.Fatalf("one worker's views count %d events, want %d", c, n)
				}
				ref = rows
			} else {
				sameRows(t, fmt.Sprintf("%d workers vs 1", k), rows, ref)
			}
			if b, ok := best[k]; !ok || p.wall < b.wall {
				best[k] = p
			}
			if b, ok := bare[k]; !ok || bw < b {
				bare[k] = bw
			}
		}
	}
	curve := []point{best[1], best[2]}

	m := float64(n) / 1e6
	one, two := curve[0], curve[1]
	label := sizeLabel(n)
	report(t, "batch_workers_"+label+"_two_wall", two.wall*1000, "ms", one.wall*1000)
	report(t, "batch_workers_"+label+"_two_cpu_per_Mevents", two.cpu/m*1000, "ms/Mevents", one.cpu/m*1000)
	var desc []string
	for _, p := range curve {
		desc = append(desc, fmt.Sprintf("%d=%.2fs wall %.3f CPU-s/Mevents", p.workers, p.wall, p.cpu/m))
	}
	report(t, "batch_workers_"+label+"_speedup", one.wall/two.wall, "x", bare[1]/bare[2])
	fmt.Printf("bench: batch_workers %s events, %d units, one DuckDB thread per worker, best of %d: speedup two/one %.2fx (aim >= 1.6x; bare DuckDB on the same machine meanwhile %.2fx: %.2fs / %.2fs), CPU per M events two/one %.2fx (aim <= 1.15x); curve %s\n",
		label, one.units, reps, one.wall/two.wall, bare[1]/bare[2], bare[1], bare[2], two.cpu/one.cpu, strings.Join(desc, ", "))
	// Units are independent: N workers take about fixed + work/N, where
	// fixed is what the run adds to its units (planning, the queue's round
	// trips, publishing), and never less than fixed + the slowest unit.
	fixed := one.wall - one.work
	fmt.Printf("bench: batch_workers_model work %.2fs in %d units (mean %.2fs, slowest %.2fs), fixed cost %.3fs (one worker's wall - its units; a run with nothing new: %.3fs); fixed + work/2 = %.2fs, measured %.2fs (busiest worker %.2fs)\n",
		one.work, one.units, one.work/float64(one.units), max(one.slowest, two.slowest), fixed, one.idle, fixed+one.work/2, two.wall, two.busiest)
}
