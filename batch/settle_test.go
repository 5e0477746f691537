package batch_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/storagetest"
)

// logEnds is batch.LogEnds over the event log, as cmd/braid wires it.
type logEnds struct{ l *eventlog.Log }

func (e logEnds) LogEnd(ctx context.Context, stream string, p int) (batch.LogEnd, error) {
	info, err := e.l.Info(ctx, stream, p)
	if err != nil {
		return batch.LogEnd{}, err
	}
	end := batch.LogEnd{Seq: info.LastSeq}
	if !info.LastTime.IsZero() {
		end.Arrival = info.LastTime.UnixMilli()
	}
	return end, nil
}

// lakeArrivals reads the arrival of every order in the lake, by id.
func lakeArrivals(t *testing.T, e *env) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	rows, err := storagetest.DuckDB(t).Query("SELECT _id, _arrival FROM " + lakeSource(t, e, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var a int64
		if err := rows.Scan(&id, &a); err != nil {
			t.Fatal(err)
		}
		out[id] = a
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestOnDemandRunCoversTheRequest(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	views, err := batchviews.OpenDir(filepath.Join(e.dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	startArchiver(t, e)
	// A settle timeout no busy machine reaches: the run must cover the request.
	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second, Log: logEnds{e.log}, SettleTimeout: 5 * time.Minute},
		e.lk, views, nil, e.cat, quietLogger(), prometheus.NewRegistry())

	// Right after the log acknowledged them, a run covers every order:
	// the archiver writes them, then (the log idle) the coverage passes
	// the end of the last one's arrival epoch.
	orders := makeOrders(0, 1500)
	publishOrders(t, e, orders)
	info, err := e.log.Info(ctx, "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	asked := time.Now()
	run1, err := r.Run(ctx, nil)
	if err != nil || run1.Status != batchviews.StatusSucceeded {
		t.Fatalf("run1 %+v %v", run1, err)
	}
	if run1.CoversRequest == nil || !*run1.CoversRequest || run1.RequestedAt.Before(asked.Add(-time.Millisecond)) || run1.RequestedAt.After(run1.Started) {
		t.Fatalf("run1 request: covers %v, requested at %v (asked %v, started %v)", run1.CoversRequest, run1.RequestedAt, asked, run1.Started)
	}
	if run1.RowsRead != int64(len(orders)) || run1.Cutoffs["by_country"] <= info.LastTime.UnixMilli() {
		t.Fatalf("run1 read %d rows with cutoff %d; want all %d orders, the last arriving at %d", run1.RowsRead, run1.Cutoffs["by_country"], len(orders), info.LastTime.UnixMilli())
	}
	ver1, err := views.Current()
	if err != nil || ver1.ID != run1.ID {
		t.Fatalf("current %+v %v", ver1, err)
	}
	for _, n := range []string{"by_country", "by_qty_hop", "all_orders"} {
		compareView(t, views, ver1, e.cat.Views[n], orders)
	}
	saved, ok, err := views.Run(run1.ID)
	if err != nil || !ok || saved.CoversRequest == nil || !*saved.CoversRequest || !saved.RequestedAt.Equal(run1.RequestedAt) {
		t.Fatalf("saved run1 %+v %v %v", saved, ok, err)
	}

	// An asynchronous run while more orders arrive: it covers those sent
	// before it was asked for; those arriving during its wait, in the same
	// epochs, fall on either side of its cutoff, each exactly once.
	before := makeOrders(1500, 700)
	during := makeOrders(2200, 700)
	publishOrders(t, e, before)
	id, err := r.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	publishOrders(t, e, during)
	var run2 batchviews.Run
	waitFor(t, "the asynchronous run to finish", func() bool {
		run2, ok, err = views.Run(id)
		if err != nil {
			t.Fatal(err)
		}
		return ok && run2.Status != batchviews.StatusRunning
	})
	if run2.Status != batchviews.StatusSucceeded || run2.CoversRequest == nil || !*run2.CoversRequest {
		t.Fatalf("run2 %+v", run2)
	}
	waitArchived(t, e, "orders")
	cutoff := run2.Cutoffs["by_country"]
	arrivals := lakeArrivals(t, e)
	all := append(append(append([]order(nil), orders...), before...), during...)
	var in []order
	for _, o := range all {
		a, ok := arrivals[o.id]
		if !ok {
			t.Fatalf("order %s is not in the lake", o.id)
		}
		if a < cutoff {
			in = append(in, o)
		}
	}
	if len(in) < len(orders)+len(before) || run2.RowsRead != int64(len(in)) {
		t.Fatalf("run2 read %d rows, %d orders arrived before its cutoff %d; want at least the %d sent before the request", run2.RowsRead, len(in), cutoff, len(orders)+len(before))
	}
	for _, o := range before {
		if arrivals[o.id] >= cutoff {
			t.Fatalf("order %s sent before the request arrived at %d, after the cutoff %d", o.id, arrivals[o.id], cutoff)
		}
	}
	t.Logf("run2 cutoff %d: %d of the %d orders sent during its wait are before it", cutoff, len(in)-len(orders)-len(before), len(during))
	ver2, _ := views.Current()
	for _, n := range []string{"by_country", "by_qty_hop", "all_orders"} {
		compareView(t, views, ver2, e.cat.Views[n], in)
	}
}

func TestOnDemandRunSettleTimeout(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	views, err := batchviews.OpenDir(filepath.Join(e.dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	// No archiver runs: the lake never covers the request, and the run
	// takes what it has once the tiny settle timeout passes.
	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second, Log: logEnds{e.log}, SettleTimeout: 10 * time.Millisecond},
		e.lk, views, nil, e.cat, quietLogger(), prometheus.NewRegistry())
	publishOrders(t, e, makeOrders(0, 100))
	run, err := r.Run(ctx, nil)
	if err != nil || run.Status != batchviews.StatusSucceeded || run.Version != run.ID {
		t.Fatalf("run %+v %v", run, err)
	}
	if run.CoversRequest == nil || *run.CoversRequest || run.RequestedAt.IsZero() || run.RowsRead != 0 || run.Cutoffs["by_country"] != 0 {
		t.Fatalf("run without an archiver: covers %v, requested at %v, %d rows read, cutoffs %v", run.CoversRequest, run.RequestedAt, run.RowsRead, run.Cutoffs)
	}
	b, _ := json.Marshal(run)
	if !strings.Contains(string(b), `"covers_request":false`) || !strings.Contains(string(b), `"requested_at":"`) {
		t.Fatalf("run record %s", b)
	}

	// A scheduled run has no request: neither field.
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Schedule(sctx, 50*time.Millisecond) }()
	var sched batchviews.Run
	waitFor(t, "a scheduled run", func() bool {
		runs, err := views.Runs()
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range runs {
			if x.ID != run.ID && x.Status == batchviews.StatusSucceeded {
				sched = x
				return true
			}
		}
		return false
	})
	cancel()
	<-done
	b, _ = json.Marshal(sched)
	if sched.CoversRequest != nil || !sched.RequestedAt.IsZero() || strings.Contains(string(b), "covers_request") || strings.Contains(string(b), "requested_at") {
		t.Fatalf("scheduled run record %s", b)
	}
}
