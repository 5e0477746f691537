package batch_test

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/objstore"
	"github.com/braid-data/braid/storage/storagetest"
)

// recorder is a SpeedExpirer that records its calls.
type recorder struct {
	mu    sync.Mutex
	calls map[string][]int64
}

func (r *recorder) Expire(_ context.Context, _ *logic.Stream, view string, before int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string][]int64{}
	}
	r.calls[view] = append(r.calls[view], before)
	return nil
}

// mspec is a measure as the test computes it: kind and field.
type mspec struct{ kind, field string }

type vspec struct {
	size, hop int64 // ms
	dims      []string
	measures  []mspec
}

// The views of testConfig, restated for the independent computation.
var viewSpecs = map[string]vspec{
	"by_country": {size: 10000, dims: []string{"country", "paid"}, measures: []mspec{{"count", ""}, {"sum", "amount"}, {"avg", "qty"}, {"min", "amount"}, {"max", "qty"}, {"count", "qty"}}},
	"by_qty_hop": {size: 20000, hop: 5000, dims: []string{"qty"}, measures: []mspec{{"count", ""}, {"max", "amount"}, {"min", "qty"}}},
	"all_orders": {size: 60000, measures: []mspec{{"count", ""}, {"sum", "qty"}}},
}

func (o order) field(name string) (float64, string, bool) {
	switch name {
	case "country":
		if o.country == nil {
			return 0, "nil", false
		}
		return 0, *o.country, true
	case "paid":
		if o.paid == nil {
			return 0, "nil", false
		}
		return 0, strconv.FormatBool(*o.paid), true
	case "amount":
		if o.amount == nil {
			return 0, "nil", false
		}
		return *o.amount, "", true
	case "qty":
		if o.qty == nil {
			return 0, "nil", false
		}
		return float64(*o.qty), strconv.FormatInt(*o.qty, 10), true
	}
	panic(name)
}

type cellKey struct {
	window int64
	group  string
}

// expected computes a view's cells from the orders, without Braid's logic.
func expected(spec vspec, orders []order) map[cellKey][]float64 {
	out := map[cellKey][]float64{}
	for _, o := range orders {
		var parts []string
		for _, d := range spec.dims {
			_, s, _ := o.field(d)
			parts = append(parts, s)
		}
		group := strings.Join(parts, "|")
		var starts []int64
		if spec.hop == 0 {
			starts = []int64{o.ts / spec.size * spec.size}
		} else {
			for s := o.ts / spec.hop * spec.hop; s > o.ts-spec.size; s -= spec.hop {
				starts = append(starts, s)
			}
		}
		for _, w := range starts {
			k := cellKey{w, group}
			st, ok := out[k]
			if !ok {
				for _, m := range spec.measures {
					switch m.kind {
					case "count":
						st = append(st, 0)
					case "sum", "avg":
						st = append(st, 0, 0)
					default:
						st = append(st, math.NaN())
					}
				}
			}
			i := 0
			for _, m := range spec.measures {
				x, _, present := 0.0, "", true
				if m.field != "" {
					x, _, present = o.field(m.field)
				}
				switch m.kind {
				case "count":
					if present {
						st[i]++
					}
					i++
				case "sum", "avg":
					if present {
						st[i] += x
						st[i+1]++
					}
					i += 2
				case "min":
					if present && (math.IsNaN(st[i]) || x < st[i]) {
						st[i] = x
					}
					i++
				case "max":
					if present && (math.IsNaN(st[i]) || x > st[i]) {
						st[i] = x
					}
					i++
				}
			}
			out[k] = st
		}
	}
	return out
}

func groupString(t *testing.T, v *logic.View, key string) string {
	t.Helper()
	vals, err := v.DecodeGroup(key)
	if err != nil {
		t.Fatal(err)
	}
	parts := make([]string, len(vals))
	for i, x := range vals {
		if x.Null() {
			parts[i] = "nil"
		} else {
			parts[i] = x.String()
		}
	}
	return strings.Join(parts, "|")
}

// inViewOrder moves slots listed measure by measure in declared order to
// where the view keeps them (Measure.Off: the canonical order).
func inViewOrder(v *logic.View, declared []float64) []float64 {
	out := make([]float64, len(declared))
	i := 0
	for _, m := range v.Measures {
		copy(out[m.Off:m.Off+len(m.Slots)], declared[i:i+len(m.Slots)])
		i += len(m.Slots)
	}
	return out
}

func compareView(t *testing.T, st *batchviews.Store, ver *batchviews.Version, v *logic.View, orders []order) {
	t.Helper()
	want := expected(viewSpecs[v.Name], orders)
	for k, w := range want {
		want[k] = inViewOrder(v, w)
	}
	rows, err := st.Rows(context.Background(), ver, v, math.MinInt64, math.MaxInt64)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(want) || ver.Views[v.Name].Rows != len(want) {
		t.Fatalf("view %s: %d rows (meta %d), want %d", v.Name, len(rows), ver.Views[v.Name].Rows, len(want))
	}
	for _, r := range rows {
		k := cellKey{r.Window, groupString(t, v, r.Group)}
		w, ok := want[k]
		if !ok {
			t.Fatalf("view %s: unexpected cell %+v", v.Name, k)
		}
		if len(r.State.Num) != len(w) {
			t.Fatalf("view %s cell %+v: %d slots, want %d", v.Name, k, len(r.State.Num), len(w))
		}
		for i := range w {
			a, b := r.State.Num[i], w[i]
			if math.IsNaN(a) != math.IsNaN(b) || (!math.IsNaN(b) && math.Abs(a-b) > 1e-9*math.Max(1, math.Abs(b))) {
				t.Fatalf("view %s cell %+v slot %d: got %v want %v (state %v vs %v)", v.Name, k, i, a, b, r.State.Num, w)
			}
		}
	}
	// A window range returns only its windows.
	mid := rows[len(rows)/2].Window
	part, _ := st.Rows(context.Background(), ver, v, mid, mid+1)
	for _, r := range part {
		if r.Window != mid {
			t.Fatalf("range query returned window %d", r.Window)
		}
	}
	if len(part) == 0 {
		t.Fatal("range query returned nothing")
	}
}

func TestRunnerMatchesIndependentComputation(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	views, err := batchviews.OpenDir(filepath.Join(e.dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second}, e.lk, views, rec, e.cat, quietLogger(), prometheus.NewRegistry())
	// Before anything is archived: a run succeeds with empty views.
	r0, err := r.Run(ctx, nil)
	if err != nil || r0.Status != batchviews.StatusSucceeded || r0.RowsOut != 0 {
		t.Fatalf("empty run %+v %v", r0, err)
	}

	orders := makeOrders(0, 3000)
	publishOrders(t, e, orders)
	stop := startArchiver(t, e)
	cp := waitArchived(t, e, "orders")
	// Wait until the coverage passes an epoch boundary after the last
	// arrival: the cutoff then includes every order.
	waitFor(t, "coverage past the last arrival's epoch", func() bool {
		c, _ := e.lk.Checkpoint("orders")
		return logic.EpochOf(c.CoveredUntil, time.Second) > cp.Arrival
	})
	run1, err := r.Run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if run1.Status != batchviews.StatusSucceeded || run1.RowsRead != 3000 || run1.Version != run1.ID || run1.Cutoffs["by_country"] <= cp.Arrival {
		t.Fatalf("run1 %+v", run1)
	}
	ver1, err := views.Current()
	if err != nil || ver1 == nil || ver1.ID != run1.ID {
		t.Fatalf("current %+v %v", ver1, err)
	}
	for _, name := range []string{"by_country", "by_qty_hop", "all_orders"} {
		compareView(t, views, ver1, e.cat.Views[name], orders)
	}
	if ver1.Views["clicks_by_page"].Rows != 0 {
		t.Fatalf("clicks rows %+v", ver1.Views["clicks_by_page"])
	}
	// The highest pointer names a complete version: its record and every
	// part exist.
	obj, err := objstore.NewFiles(filepath.Join(e.dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	ptrs, err := obj.List(ctx, "current/")
	if err != nil || len(ptrs) == 0 {
		t.Fatalf("pointers %v %v", ptrs, err)
	}
	if cur, err := obj.Get(ctx, ptrs[len(ptrs)-1].Key); err != nil || strings.TrimSpace(string(cur)) != run1.ID {
		t.Fatalf("current pointer %s = %q %v", ptrs[len(ptrs)-1].Key, cur, err)
	}
	if _, err := obj.Stat(ctx, "versions/"+run1.ID+".json"); err != nil {
		t.Fatal(err)
	}
	objects := 0
	for n, vv := range ver1.Views {
		for _, p := range vv.Parts {
			if p.Key == "" {
				continue
			}
			objects++
			if _, err := obj.Stat(ctx, p.Key); err != nil {
				t.Fatalf("view %s part %s: %v", n, p.Date, err)
			}
		}
	}
	if objects == 0 {
		t.Fatal("no part of the version is an object")
	}
	// The first run had no previous cutoff (0): nothing to expire then;
	// run1 expires below r0's cutoffs only where they were > 0.
	rec.mu.Lock()
	for v, calls := range rec.calls {
		for _, c := range calls {
			if c != r0.Cutoffs[v] || c == 0 {
				t.Fatalf("expire %s before %d; r0 cutoffs %v", v, c, r0.Cutoffs)
			}
		}
	}
	rec.mu.Unlock()

	// More orders in two bursts; refresh only by_country. Its cutoff may
	// split the new orders: the expected rows use the lake's arrivals.
	more := makeOrders(3000, 500)
	publishOrders(t, e, more[:250])
	waitArchived(t, e, "orders")
	// Not an assertion: a pause makes the bursts land in different epochs,
	// so the cutoff most likely falls between them.
	time.Sleep(1100 * time.Millisecond)
	publishOrders(t, e, more[250:])
	waitArchived(t, e, "orders")
	stop()
	all := append(append([]order(nil), orders...), more...)
	run2, err := r.Run(ctx, []string{"by_country"})
	if err != nil {
		t.Fatal(err)
	}
	cutoff := run2.Cutoffs["by_country"]
	arrivals := map[string]int64{}
	rows, err := storagetest.DuckDB(t).Query("SELECT _id, _arrival FROM " + lakeSource(t, e, "orders"))
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		var a int64
		if err := rows.Scan(&id, &a); err != nil {
			t.Fatal(err)
		}
		arrivals[id] = a
	}
	rows.Close()
	var before []order
	for _, o := range all {
		a, ok := arrivals[o.id]
		if !ok {
			t.Fatalf("order %s not in the lake", o.id)
		}
		if a < cutoff {
			before = append(before, o)
		}
	}
	t.Logf("run2 cutoff %d: %d of %d orders before it", cutoff, len(before), len(all))
	// by_country's 2024-05-01 part is reused (no event of that date came
	// since run1): run2 reads the files of 2024-05-02, which hold every
	// new order.
	var read int64
	for _, o := range before {
		if time.UnixMilli(o.ts).UTC().Format(time.DateOnly) == "2024-05-02" {
			read++
		}
	}
	if run2.RowsRead != read || len(run2.Views) != 1 || run2.UnitsComputed != 1 || run2.UnitsReused != 1 {
		t.Fatalf("run2 %+v, want %d rows read, one unit computed and one reused", run2, read)
	}
	ver2, _ := views.Current()
	if ver2.ID != run2.ID || ver2.Views["by_country"].Cutoff != cutoff {
		t.Fatalf("ver2 %+v", ver2)
	}
	compareView(t, views, ver2, e.cat.Views["by_country"], before)
	// Views not refreshed keep their rows and cutoff.
	if !reflect.DeepEqual(ver2.Views["all_orders"], ver1.Views["all_orders"]) {
		t.Fatalf("all_orders changed: %+v vs %+v", ver2.Views["all_orders"], ver1.Views["all_orders"])
	}
	compareView(t, views, ver2, e.cat.Views["all_orders"], orders)
	// The speed layer loses only epochs below the previous version's cutoff.
	rec.mu.Lock()
	got := rec.calls[e.cat.Views["by_country"].StateKey()]
	rec.mu.Unlock()
	if len(got) == 0 || got[len(got)-1] != ver1.Views["by_country"].Cutoff {
		t.Fatalf("expire calls %v, want last = %d", got, ver1.Views["by_country"].Cutoff)
	}

	// A corrupt lake file fails the views whose units read it: a run of
	// them fails and the previous version stays current. The newest file
	// (of 2024-05-02) holds the last order: all_orders, last computed by
	// run1, reads it again; by_country, computed by run2, reads it when
	// the last order arrived after run2's cutoff. A unit whose files are
	// unchanged is reused, not read.
	files, _ := e.lk.Files("orders")
	if err := os.WriteFile(files[len(files)-1], []byte("not parquet at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	lastArrival := int64(0)
	for _, o := range all {
		lastArrival = max(lastArrival, arrivals[o.id])
	}
	run3, err := r.Run(ctx, []string{"by_country", "all_orders"})
	if lastArrival >= cutoff {
		if !errors.Is(err, batch.ErrViewsFailed) || run3.Status != batchviews.StatusFailed || run3.Error == "" || len(run3.FailedViews) != 2 {
			t.Fatalf("run on a corrupt lake: %+v %v", run3, err)
		}
		if cur, _ := views.Current(); cur.ID != ver2.ID {
			t.Fatalf("current after failed run %s, want %s", cur.ID, ver2.ID)
		}
	} else if !errors.Is(err, batch.ErrViewsFailed) || run3.Status != batchviews.StatusPartial || len(run3.FailedViews) != 1 || run3.FailedViews["all_orders"] == "" {
		t.Fatalf("run on a corrupt lake (by_country reused): %+v %v", run3, err)
	}
	ver2, _ = views.Current()
	runs, err := views.Runs()
	if err != nil || len(runs) != 4 || runs[0].ID != run3.ID || runs[0].Status == batchviews.StatusSucceeded || runs[1].ID != run2.ID || runs[1].Status != batchviews.StatusSucceeded {
		t.Fatalf("runs %+v %v", runs, err)
	}
	// A run of every view publishes the view of clicks, whose lake is
	// fine; by_qty_hop and all_orders read the corrupt file and fail.
	run4, err := r.Run(ctx, nil)
	if !errors.Is(err, batch.ErrViewsFailed) || run4.Status != batchviews.StatusPartial || run4.FailedViews["by_qty_hop"] == "" || run4.FailedViews["all_orders"] == "" || run4.FailedViews["clicks_by_page"] != "" {
		t.Fatalf("run of every view on a corrupt orders lake: %+v %v", run4, err)
	}
	if cur, _ := views.Current(); cur.ID != run4.ID || !reflect.DeepEqual(cur.Views["all_orders"], ver2.Views["all_orders"]) || cur.Views["clicks_by_page"].Cutoff != run4.Cutoffs["clicks_by_page"] {
		t.Fatalf("current after a partial run %+v, want %s with all_orders of %+v", cur, run4.ID, ver2)
	}
	if _, err := r.Run(ctx, []string{"nope"}); !errors.Is(err, batch.ErrUnknownView) {
		t.Fatalf("unknown view: %v", err)
	}
}

func TestRunnerStartAsync(t *testing.T) {
	e := newEnv(t)
	views, err := batchviews.OpenDir(filepath.Join(e.dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second}, e.lk, views, nil, e.cat, quietLogger(), nil)
	id, err := r.Start(nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "async run to finish", func() bool {
		run, ok, err := views.Run(id)
		if err != nil {
			t.Fatal(err)
		}
		return ok && run.Status != batchviews.StatusRunning
	})
	run, _, _ := views.Run(id)
	if run.Status != batchviews.StatusSucceeded || run.Version != id {
		t.Fatalf("async run %+v", run)
	}
	if cur, _ := views.Current(); cur == nil || cur.ID != id {
		t.Fatalf("current %+v", cur)
	}
}
