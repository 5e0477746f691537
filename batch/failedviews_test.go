package batch_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/storagetest"
)

// lakeEnv is a lake and a batch view store without a log: the tests below
// write lake files and checkpoints themselves, as the archiver would.
type lakeEnv struct {
	cat   *config.Catalog
	lk    *lake.Lake
	views *batchviews.Store
	dir   string
}

func newLakeEnv(t *testing.T) *lakeEnv {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lk, err := lake.OpenDir(filepath.Join(dir, "lake"))
	if err != nil {
		t.Fatal(err)
	}
	views, err := batchviews.OpenDir(filepath.Join(dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	return &lakeEnv{cat: cat, lk: lk, views: views, dir: dir}
}

// archive writes orders to the lake as records firstSeq, firstSeq+1, ...
// arriving 10 ms apart from arrival, and commits a checkpoint covering a
// second past the last one. It returns the checkpoint.
func (e *lakeEnv) archive(t *testing.T, stream string, raws [][]byte, firstSeq uint64, arrival int64) lake.Checkpoint {
	t.Helper()
	s := e.cat.Streams[stream]
	rows := make([]lake.Row, len(raws))
	for i, raw := range raws {
		ev, _, err := s.Prepare(raw, time.Now().UnixMilli())
		if err != nil {
			t.Fatalf("prepare %s: %v", raw, err)
		}
		rows[i] = lake.Row{Seq: firstSeq + uint64(i), Arrival: arrival + int64(i)*10, Event: ev}
	}
	if _, err := e.lk.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	last := rows[len(rows)-1]
	cp := lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 1000}
	if err := e.lk.Commit(stream, cp); err != nil {
		t.Fatal(err)
	}
	return cp
}

func orderJSONs(orders []order) [][]byte {
	out := make([][]byte, len(orders))
	for i, o := range orders {
		out[i] = o.json()
	}
	return out
}

// retypePaid rewrites every lake file of orders with DuckDB so that its
// paid column holds strings no cast makes a bool of: the view grouped by
// paid then fails to read it, the others (which do not read paid) still
// read the files.
func retypePaid(t *testing.T, e *lakeEnv) {
	t.Helper()
	files, err := e.lk.Files("orders")
	if err != nil || len(files) == 0 {
		t.Fatalf("orders files %v %v", files, err)
	}
	db := storagetest.DuckDB(t)
	for _, f := range files {
		tmp := f + ".retype"
		q := fmt.Sprintf("COPY (SELECT * REPLACE ('maybe-' || CAST(paid AS VARCHAR) AS paid) FROM read_parquet('%s')) TO '%s' (FORMAT parquet)", f, tmp)
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRunPublishesTheViewsThatDidNotFail(t *testing.T) {
	ctx := context.Background()
	e := newLakeEnv(t)
	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second}, e.lk, e.views, nil, e.cat, quietLogger(), prometheus.NewRegistry())

	// Run 1: every view of the first orders.
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	first := makeOrders(0, 400)
	e.archive(t, "orders", orderJSONs(first), 1, base)
	clicks := [][]byte{[]byte(`{"at": 1767268800000, "page": "/a"}`), []byte(`{"at": 1767268801000, "page": "/b"}`)}
	e.archive(t, "clicks", clicks, 1, base)
	run1, err := r.Run(ctx, nil)
	if err != nil || run1.Status != batchviews.StatusSucceeded || len(run1.FailedViews) != 0 || run1.RowsRead != int64(len(first)+len(clicks)) {
		t.Fatalf("run1 %+v %v", run1, err)
	}
	ver1, err := e.views.Current()
	if err != nil || ver1 == nil || ver1.ID != run1.ID {
		t.Fatalf("current %+v %v", ver1, err)
	}
	for _, n := range []string{"by_country", "by_qty_hop", "all_orders"} {
		compareView(t, e.views, ver1, e.cat.Views[n], first)
	}

	// More orders, a minute later: the coverage and so the cutoff move on.
	more := makeOrders(400, 300)
	e.archive(t, "orders", orderJSONs(more), uint64(len(first))+1, base+60_000)
	// by_country cannot read its dimension paid from the lake any more...
	retypePaid(t, e)
	// ... and the lake of clicks cannot be read at all.
	cfiles, err := e.lk.Files("clicks")
	if err != nil || len(cfiles) != 1 {
		t.Fatalf("clicks files %v %v", cfiles, err)
	}
	if err := os.WriteFile(cfiles[0], []byte("not parquet at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A new click of the same date: its unit is computed again (an
	// unchanged one would be reused, its file not read), and reads the
	// broken file.
	e.archive(t, "clicks", [][]byte{[]byte(`{"at": 1767268802000, "page": "/c"}`)}, uint64(len(clicks))+1, base+60_000)

	// Run 2: by_country and clicks_by_page fail; the two other views of
	// orders are published with the new cutoff.
	run2, err := r.Run(ctx, nil)
	if !errors.Is(err, batch.ErrViewsFailed) || run2.Status != batchviews.StatusPartial || run2.Version != run2.ID || run2.Error == "" {
		t.Fatalf("run2 %+v %v", run2, err)
	}
	if len(run2.FailedViews) != 2 || !strings.Contains(run2.FailedViews["by_country"], "maybe-") || !strings.Contains(run2.FailedViews["clicks_by_page"], "clicks") {
		t.Fatalf("run2 failed views %v", run2.FailedViews)
	}
	t.Logf("run2 failed views: %v", run2.FailedViews)
	if _, ok := run2.Cutoffs["by_country"]; ok {
		t.Fatalf("run2 records a cutoff for the failed view: %v", run2.Cutoffs)
	}
	if run2.RowsRead != int64(len(first)+len(more)) {
		t.Fatalf("run2 read %d rows, want the %d orders (clicks unreadable)", run2.RowsRead, len(first)+len(more))
	}
	ver2, err := e.views.Current()
	if err != nil || ver2.ID != run2.ID {
		t.Fatalf("current after the partial run %+v %v, want %s", ver2, err, run2.ID)
	}
	all := append(append([]order(nil), first...), more...)
	for _, n := range []string{"by_qty_hop", "all_orders"} {
		if c := ver2.Views[n].Cutoff; c != run2.Cutoffs[n] || c <= ver1.Views[n].Cutoff {
			t.Fatalf("view %s: cutoff %d (run %d), previous %d: want a new one", n, c, run2.Cutoffs[n], ver1.Views[n].Cutoff)
		}
		compareView(t, e.views, ver2, e.cat.Views[n], all)
	}
	// The failed views keep their entries of the previous version.
	for _, n := range []string{"by_country", "clicks_by_page"} {
		if !reflect.DeepEqual(ver2.Views[n], ver1.Views[n]) {
			t.Fatalf("view %s: %+v, want the previous %+v", n, ver2.Views[n], ver1.Views[n])
		}
	}
	compareView(t, e.views, ver2, e.cat.Views["by_country"], first)
	saved, ok, err := e.views.Run(run2.ID)
	if err != nil || !ok || saved.Status != batchviews.StatusPartial || len(saved.FailedViews) != 2 || saved.Version != run2.ID {
		t.Fatalf("saved run2 %+v %v %v", saved, ok, err)
	}

	// A run whose every view fails publishes nothing and fails.
	run3, err := r.Run(ctx, []string{"by_country", "clicks_by_page"})
	if !errors.Is(err, batch.ErrViewsFailed) || run3.Status != batchviews.StatusFailed || run3.Version != "" || len(run3.FailedViews) != 2 {
		t.Fatalf("run3 %+v %v", run3, err)
	}
	if cur, _ := e.views.Current(); cur.ID != run2.ID {
		t.Fatalf("current after a failed run %s, want %s", cur.ID, run2.ID)
	}
}
