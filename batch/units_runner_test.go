package batch_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/workqueue"
	"github.com/braid-data/braid/tests/testenv"
)

// memViews is a view store in memory with the parts API: parts by key,
// a current version replaced only on top of the version a publish names.
type memViews struct {
	mu      sync.Mutex
	parts   map[string][]batchviews.Row
	current *batchviews.Version
	runs    map[string]batchviews.Run
	locked  bool
	// beforePublish, when set, runs at the start of PublishParts (a
	// competing publisher).
	beforePublish func()
}

func newMemViews() *memViews {
	return &memViews{parts: map[string][]batchviews.Row{}, runs: map[string]batchviews.Run{}}
}

func (s *memViews) Current() (*batchviews.Version, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current, nil
}

func (s *memViews) WritePart(_ context.Context, v *logic.View, date, run string, rows []batchviews.Row) (batchviews.Part, error) {
	p := batchviews.Part{Date: date, Rows: len(rows), Run: run}
	if len(rows) == 0 {
		return p, nil
	}
	p.Key = "views/" + v.Name + "/" + run + "/" + date
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parts[p.Key] = append([]batchviews.Row(nil), rows...)
	return p, nil
}

func (s *memViews) PublishParts(_ context.Context, base, ver *batchviews.Version) error {
	if s.beforePublish != nil {
		s.beforePublish()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if (base == nil) != (s.current == nil) || (base != nil && base.ID != s.current.ID) {
		return batchviews.ErrConflict
	}
	for n, vv := range ver.Views {
		for _, p := range vv.Parts {
			if _, ok := s.parts[p.Key]; p.Key != "" && !ok {
				return fmt.Errorf("view %s: part %s not written", n, p.Key)
			}
		}
	}
	s.current = ver
	return nil
}

func (s *memViews) SaveRun(r batchviews.Run) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runs[r.ID] = r
	return nil
}

func (s *memViews) LockRuns() (func(), error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locked {
		return nil, batchviews.ErrLocked
	}
	s.locked = true
	return func() { s.mu.Lock(); s.locked = false; s.mu.Unlock() }, nil
}

func (s *memViews) RecoverInterrupted() (int, error) { return 0, nil }

// rows is a view's rows in the current version: its parts, concatenated.
func (s *memViews) rows(t *testing.T, view string) []batchviews.Row {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []batchviews.Row
	prevDate := ""
	for _, p := range s.current.Views[view].Parts {
		if p.Date <= prevDate {
			t.Fatalf("view %s: parts not sorted by date: %v", view, s.current.Views[view].Parts)
		}
		prevDate = p.Date
		lo, _ := time.Parse(time.DateOnly, p.Date)
		for _, r := range s.parts[p.Key] {
			if r.Window < lo.UnixMilli() || r.Window >= lo.Add(24*time.Hour).UnixMilli() {
				t.Fatalf("view %s: part %s holds window %s", view, p.Date, logic.FormatTime(r.Window))
			}
		}
		out = append(out, s.parts[p.Key]...)
	}
	return out
}

var (
	_ batch.ViewVersions = (*memViews)(nil)
	_ batch.RunLake      = (*lake.Lake)(nil)
)

// compareRows checks a view's rows against the independent computation.
func compareRows(t *testing.T, v *logic.View, rows []batchviews.Row, orders []order) {
	t.Helper()
	want := expected(viewSpecs[v.Name], orders)
	if len(rows) != len(want) {
		t.Fatalf("view %s: %d rows, want %d", v.Name, len(rows), len(want))
	}
	seen := map[cellKey]bool{}
	for _, r := range rows {
		k := cellKey{r.Window, groupString(t, v, r.Group)}
		if seen[k] {
			t.Fatalf("view %s: cell %+v twice", v.Name, k)
		}
		seen[k] = true
		w, ok := want[k]
		if !ok {
			t.Fatalf("view %s: unexpected cell %+v", v.Name, k)
		}
		w = inViewOrder(v, w)
		for i := range w {
			a, b := r.State.Num[i], w[i]
			if math.IsNaN(a) != math.IsNaN(b) || (!math.IsNaN(b) && math.Abs(a-b) > 1e-9*math.Max(1, math.Abs(b))) {
				t.Fatalf("view %s cell %+v slot %d: got %v want %v", v.Name, k, i, a, b)
			}
		}
	}
}

// sortedRows orders rows by window and group.
func sortedRows(rows []batchviews.Row) []batchviews.Row {
	out := append([]batchviews.Row(nil), rows...)
	sort.Slice(out, func(i, j int) bool {
		if out[i].Window != out[j].Window {
			return out[i].Window < out[j].Window
		}
		return out[i].Group < out[j].Group
	})
	return out
}

// A run in units over a lake of two dates matches the independent
// computation; the next run, after late events of one date, computes only
// the units that read that date, reuses the others, and its views equal a
// full recompute.
func TestRunnerUnitsIncremental(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ml := e.lk
	mem := newMemViews()
	cfg := batch.RunnerConfig{Epoch: time.Second, Workers: 2, Threads: 1}
	r := batch.NewRunner(cfg, ml, mem, nil, e.cat, quietLogger(), prometheus.NewRegistry())

	orders := makeOrders(0, 3000) // 2024-05-01 23:40 .. 2024-05-02 00:30
	publishOrders(t, e, orders)
	stop := startArchiver(t, e)
	cp := waitArchived(t, e, "orders")
	waitFor(t, "coverage past the last arrival's epoch", func() bool {
		c, _ := e.lk.Checkpoint("orders")
		return logic.EpochOf(c.CoveredUntil, time.Second) > cp.Arrival
	})
	run1, err := r.Run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// by_country and all_orders (tumbling): a unit per date; by_qty_hop
	// (hopping): one more, for the day before the first date.
	if run1.Status != batchviews.StatusSucceeded || run1.RowsRead != 3000 || run1.UnitsComputed != 2+2+3 || run1.UnitsReused != 0 || run1.Cutoffs["by_country"] <= cp.Arrival {
		t.Fatalf("run1 %+v", run1)
	}
	var rowsOut int64
	for _, name := range []string{"by_country", "by_qty_hop", "all_orders"} {
		v := e.cat.Views[name]
		rows := mem.rows(t, name)
		compareRows(t, v, rows, orders)
		vv := mem.current.Views[name]
		if vv.Rows != len(rows) || vv.Definition != v.Definition() || vv.Cutoff != run1.Cutoffs[name] {
			t.Fatalf("view %s entry %+v (%d rows)", name, vv, len(rows))
		}
		for _, p := range vv.Parts {
			if p.Cutoff != vv.Cutoff || p.Run != run1.ID {
				t.Fatalf("view %s part %+v", name, p)
			}
		}
		rowsOut += int64(len(rows))
	}
	if run1.RowsOut != rowsOut || mem.current.ID != run1.ID {
		t.Fatalf("run1 rows out %d, want %d; current %s", run1.RowsOut, rowsOut, mem.current.ID)
	}
	ver1 := mem.current

	// Late events: more orders of 2024-05-02 only.
	more := makeOrders(3000, 400)
	for _, o := range more {
		if time.UnixMilli(o.ts).UTC().Format(time.DateOnly) != "2024-05-02" {
			t.Fatalf("order %s of %s", o.id, time.UnixMilli(o.ts).UTC())
		}
	}
	publishOrders(t, e, more)
	cp = waitArchived(t, e, "orders")
	waitFor(t, "coverage past the last arrival's epoch", func() bool {
		c, _ := e.lk.Checkpoint("orders")
		return logic.EpochOf(c.CoveredUntil, time.Second) > cp.Arrival
	})
	stop()
	run2, err := r.Run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	all := append(append([]order(nil), orders...), more...)
	// Computed: the 2024-05-02 units of the tumbling views, and the
	// hopping view's 05-01 (its windows reach into 05-02) and 05-02;
	// reused: the tumbling views' 05-01 and the hopping view's 04-30.
	if run2.Status != batchviews.StatusSucceeded || run2.UnitsComputed != 4 || run2.UnitsReused != 3 {
		t.Fatalf("run2 %+v", run2)
	}
	// The hopping view's 05-01 unit read both dates: every file was read.
	if run2.RowsRead != int64(len(all)) {
		t.Fatalf("run2 read %d rows, want %d", run2.RowsRead, len(all))
	}
	for _, name := range []string{"by_country", "all_orders"} {
		old, now := ver1.Views[name].Parts, mem.current.Views[name].Parts
		if len(now) != 2 || now[0] != old[0] || now[1].Run != run2.ID {
			t.Fatalf("view %s parts %+v, before %+v", name, now, old)
		}
	}
	for _, name := range []string{"by_country", "by_qty_hop", "all_orders"} {
		compareRows(t, e.cat.Views[name], mem.rows(t, name), all)
	}

	// A full recompute of the same lake (a store with no version) gives
	// the same rows.
	fresh := newMemViews()
	full, err := batch.NewRunner(cfg, ml, fresh, nil, e.cat, quietLogger(), prometheus.NewRegistry()).Run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if full.UnitsReused != 0 || full.UnitsComputed != 2+2+3 || full.Cutoffs["by_country"] != run2.Cutoffs["by_country"] {
		t.Fatalf("full recompute %+v, run2 %+v", full, run2)
	}
	for _, name := range e.cat.ViewOrder {
		a, b := sortedRows(mem.rows(t, name)), sortedRows(fresh.rows(t, name))
		if len(a) != len(b) {
			t.Fatalf("view %s: incremental %d rows, full %d", name, len(a), len(b))
		}
		for i := range a {
			if a[i].Window != b[i].Window || a[i].Group != b[i].Group || !reflect.DeepEqual(a[i].State.Num, b[i].State.Num) {
				if !(fmt.Sprint(a[i].State.Num) == fmt.Sprint(b[i].State.Num)) { // NaN != NaN for DeepEqual
					t.Fatalf("view %s row %d: incremental %+v, full %+v", name, i, a[i], b[i])
				}
			}
		}
	}

	// Nothing new: every unit is reused, nothing is read.
	run3, err := r.Run(ctx, nil)
	if err != nil || run3.UnitsComputed != 0 || run3.UnitsReused != 7 || run3.RowsRead != 0 || run3.RowsOut != run2.RowsOut {
		t.Fatalf("run3 %+v %v", run3, err)
	}

	// Another publisher gets there first: the run fails and its version
	// is not current.
	mem.beforePublish = func() {
		mem.mu.Lock()
		mem.current = &batchviews.Version{ID: "someone-else", Views: mem.current.Views}
		mem.mu.Unlock()
	}
	run4, err := r.Run(ctx, []string{"by_country"})
	mem.beforePublish = nil
	if !errors.Is(err, batchviews.ErrConflict) || run4.Status != batchviews.StatusFailed || !strings.Contains(run4.Error, "another run published first") {
		t.Fatalf("run on a conflicting publish: %+v %v", run4, err)
	}
	if mem.current.ID != "someone-else" {
		t.Fatalf("current %s", mem.current.ID)
	}

	// A corrupt lake file fails the units that read it, and so their
	// views; the others are published (status partial).
	files, _ := e.lk.CommittedFiles("orders")
	var corrupt string
	for _, f := range files {
		if f.Date == "2024-05-02" {
			corrupt = f.Path
		}
	}
	if err := os.WriteFile(corrupt, []byte("not parquet at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	broken := newMemViews()
	rb := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second, Workers: 2}, ml, broken, nil, e.cat, quietLogger(), nil)
	run5, err := rb.Run(ctx, nil)
	if !errors.Is(err, batch.ErrViewsFailed) || run5.Status != batchviews.StatusPartial || len(run5.FailedViews) != 3 || run5.FailedViews["clicks_by_page"] != "" {
		t.Fatalf("run on a corrupt file: %+v %v", run5, err)
	}
	for n, msg := range run5.FailedViews {
		if !strings.Contains(msg, "2024-05-02") {
			t.Fatalf("view %s failed with %q, want the failed unit's date", n, msg)
		}
	}
	if _, ok := broken.current.Views["clicks_by_page"]; !ok || len(broken.current.Views) != 1 {
		t.Fatalf("published after a partial run: %+v", broken.current.Views)
	}
}

// A run whose units go through the JetStream work queue to two workers
// (each with its own connection and DuckDB), under the run lock shared
// across hosts, publishes the same views as the independent computation.
func TestRunnerOnWorkQueue(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ml := e.lk
	mem := newMemViews()
	orders := makeOrders(0, 2000)
	publishOrders(t, e, orders)
	stop := startArchiver(t, e)
	cp := waitArchived(t, e, "orders")
	waitFor(t, "coverage past the last arrival's epoch", func() bool {
		c, _ := e.lk.Checkpoint("orders")
		return logic.EpochOf(c.CoveredUntil, time.Second) > cp.Arrival
	})
	stop()

	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	open := func() *workqueue.Queue {
		_, js := n.JetStream(t)
		q, err := workqueue.Open(ctx, js, workqueue.Options{Namespace: ns, Logger: quietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	computers := make([]*countingComputer, 2)
	for i := range computers {
		c := batch.NewComputer(batch.ComputeConfig{Threads: 1}, ml, mem, e.cat)
		t.Cleanup(func() { c.Close() })
		computers[i] = &countingComputer{c: c}
		w := batch.NewWorker(open(), computers[i], 1, quietLogger())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.Run(wctx); err != nil {
				t.Error(err)
			}
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	_, ljs := n.JetStream(t)
	lock, err := workqueue.OpenRunLock(ctx, ljs, workqueue.LockOptions{Namespace: ns, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second, Executor: batch.NewQueueExecutor(open()), Lock: lock}, ml, mem, nil, e.cat, quietLogger(), nil)
	run, err := r.Run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if run.Status != batchviews.StatusSucceeded || run.RowsRead != int64(len(orders)) || run.UnitsComputed != 7 {
		t.Fatalf("run %+v", run)
	}
	for _, name := range []string{"by_country", "by_qty_hop", "all_orders"} {
		compareRows(t, e.cat.Views[name], mem.rows(t, name), orders)
	}
	total := 0
	for _, c := range computers {
		total += int(c.n.Load())
	}
	if total != 7 {
		t.Fatalf("workers computed %d units, want 7", total)
	}
	// The lock is free again, and taken while a run holds it.
	unlock, err := lock.Lock()
	if err != nil {
		t.Fatalf("lock after the run: %v", err)
	}
	if run2, err := r.Run(ctx, nil); !errors.Is(err, batchviews.ErrLocked) || run2.Status != batchviews.StatusFailed {
		t.Fatalf("run while another holds the lock: %+v %v", run2, err)
	}
	unlock()
}

// countingComputer counts the units it computed.
type countingComputer struct {
	c batch.UnitComputer
	n atomic.Int64
}

func (c *countingComputer) Compute(ctx context.Context, u batch.Unit) (batch.UnitResult, error) {
	res, err := c.c.Compute(ctx, u)
	if err == nil && res.Err == "" {
		c.n.Add(1)
	}
	return res, err
}

// TestHelperBatchWorker is a batch worker process for
// TestRunSurvivesAKilledWorker: it takes one unit, says so, and hangs
// until it is killed.
func TestHelperBatchWorker(t *testing.T) {
	url := os.Getenv("BATCH_HELPER_URL")
	if url == "" {
		t.Skip("helper process only")
	}
	ackWait, _ := time.ParseDuration(os.Getenv("BATCH_HELPER_ACKWAIT"))
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	q, err := workqueue.Open(context.Background(), js, workqueue.Options{Namespace: os.Getenv("BATCH_HELPER_NS"), AckWait: ackWait, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	_ = batch.NewWorker(q, hangingComputer{nc}, 1, quietLogger()).Run(context.Background())
}

type hangingComputer struct{ nc *nats.Conn }

func (h hangingComputer) Compute(ctx context.Context, u batch.Unit) (batch.UnitResult, error) {
	_ = h.nc.Publish("helper.took", []byte(u.ID()))
	_ = h.nc.Flush()
	<-ctx.Done()
	return batch.UnitResult{}, ctx.Err()
}

// A batch worker process killed with SIGKILL in the middle of a unit
// loses nothing: the unit goes to another worker, and the run publishes
// the views of the independent computation.
func TestRunSurvivesAKilledWorker(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	ml := e.lk
	mem := newMemViews()
	orders := makeOrders(0, 2000)
	publishOrders(t, e, orders)
	stop := startArchiver(t, e)
	cp := waitArchived(t, e, "orders")
	waitFor(t, "coverage past the last arrival's epoch", func() bool {
		c, _ := e.lk.Checkpoint("orders")
		return logic.EpochOf(c.CoveredUntil, time.Second) > cp.Arrival
	})
	stop()

	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	const ackWait = 2 * time.Second
	nc, js := n.JetStream(t)
	q, err := workqueue.Open(ctx, js, workqueue.Options{Namespace: ns, AckWait: ackWait, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	took := make(chan string, 1)
	sub, err := nc.Subscribe("helper.took", func(m *nats.Msg) {
		select {
		case took <- string(m.Data):
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = nc.Flush()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBatchWorker$", "-test.count=1")
	cmd.Env = append(os.Environ(), "BATCH_HELPER_URL="+n.URL, "BATCH_HELPER_NS="+ns, "BATCH_HELPER_ACKWAIT="+ackWait.String())
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second, Executor: batch.NewQueueExecutor(q)}, ml, mem, nil, e.cat, quietLogger(), nil)
	type out struct {
		run batchviews.Run
		err error
	}
	res := make(chan out, 1)
	go func() {
		run, err := r.Run(ctx, nil)
		res <- out{run, err}
	}()
	var victim string
	select {
	case victim = <-took:
	case <-time.After(2 * time.Minute):
		t.Fatal("the helper worker took no unit")
	}
	if err := cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	c := batch.NewComputer(batch.ComputeConfig{Threads: 1}, ml, mem, e.cat)
	defer c.Close()
	_, wjs := n.JetStream(t)
	wq, err := workqueue.Open(ctx, wjs, workqueue.Options{Namespace: ns, AckWait: ackWait, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() {
		defer close(wdone)
		_ = batch.NewWorker(wq, c, 1, quietLogger()).Run(wctx)
	}()
	o := <-res
	cancel()
	<-wdone
	if o.err != nil {
		t.Fatal(o.err)
	}
	if o.run.Status != batchviews.StatusSucceeded || o.run.UnitsComputed != 7 || o.run.RowsRead != int64(len(orders)) {
		t.Fatalf("run %+v", o.run)
	}
	for _, name := range []string{"by_country", "by_qty_hop", "all_orders"} {
		compareRows(t, e.cat.Views[name], mem.rows(t, name), orders)
	}
	t.Logf("unit %s survived its worker's kill", victim)
}
