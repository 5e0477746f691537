package batch_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/objstore"
	"github.com/braid-data/braid/storage/storagetest"
)

// TestArchiverCompactsAndRetains: on the real lake, the archiver writing
// many small files compacts them in the background, drops the partition
// past the stream's retention and sweeps what both removed; the lake
// holds every retained event once, and none of the dropped date.
func TestArchiverCompactsAndRetains(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	st, err := objstore.NewFiles(filepath.Join(e.dir, "upkept"))
	if err != nil {
		t.Fatal(err)
	}
	lk, err := lake.Open(st, lake.Options{WorkDir: filepath.Join(e.dir, "work"), Grace: time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e.lk = lk
	orders := makeOrders(0, 3000) // from 2024-05-01 23:40 UTC, across midnight
	publishOrders(t, e, orders)
	last := lastSeq(t, e)
	keep := 0
	for _, o := range orders {
		if time.UnixMilli(o.ts).UTC().Format(time.DateOnly) >= "2024-05-02" {
			keep++
		}
	}
	if keep == 0 || keep == len(orders) {
		t.Fatalf("%d of %d orders on 2024-05-02: want both dates", keep, len(orders))
	}
	// The archiver's clock: 2024-05-03 12:00 UTC and on, so a retention
	// of 36h keeps the dates from 2024-05-02.
	start := time.Now()
	clock := func() time.Time { return time.Date(2024, 5, 3, 12, 0, 0, 0, time.UTC).Add(time.Since(start)) }
	reg := prometheus.NewRegistry()
	cfg := batch.ArchiverConfig{MaxRows: 100, MaxDelay: 200 * time.Millisecond, FetchSize: 100, FetchWait: 100 * time.Millisecond,
		TargetFileBytes: 1 << 20, Retention: map[string]time.Duration{"orders": 36 * time.Hour},
		UpkeepEvery: 20 * time.Millisecond, RetentionEvery: 20 * time.Millisecond, Now: clock}
	a := batch.NewArchiver(cfg, e.log, lk, e.cat, quietLogger(), reg)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("archiver returned %v", err)
		}
	}()
	var m lake.Manifest
	waitFor(t, "the lake archived, compacted to one file, its old date dropped and swept", func() bool {
		m, err = lk.Manifest(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		return m.Checkpoint.Seq == last && len(m.Files) == 1 && m.Files[0].Date == "2024-05-02" && len(m.Garbage) == 0
	})
	if n := counterOf(t, reg, "braid_lake_compactions_total", "stream", "orders"); n < 1 {
		t.Errorf("compactions %v", n)
	}
	if n := counterOf(t, reg, "braid_lake_compacted_files_total", "stream", "orders"); n < 2 {
		t.Errorf("compacted files %v", n)
	}
	if n := counterOf(t, reg, "braid_lake_retention_dropped_files_total", "stream", "orders"); n < 1 {
		t.Errorf("dropped files %v", n)
	}
	if n := counterOf(t, reg, "braid_lake_swept_files_total", "stream", "orders"); n < 2 {
		t.Errorf("swept files %v", n)
	}
	// Every event of 2024-05-02 once, none of 2024-05-01.
	db := storagetest.DuckDB(t)
	var n, places, ids int
	var minDate string
	if err := db.QueryRow("SELECT count(*), count(DISTINCT (_seq, _idx)), count(DISTINCT _id), min(strftime(to_timestamp(_time / 1000) AT TIME ZONE 'UTC', '%Y-%m-%d')) FROM "+lakeSource(t, e, "orders")).
		Scan(&n, &places, &ids, &minDate); err != nil {
		t.Fatal(err)
	}
	if n != keep || places != keep || ids != keep || minDate != "2024-05-02" {
		t.Fatalf("lake: %d rows, %d places, %d ids, first date %s; want %d once each from 2024-05-02", n, places, ids, minDate, keep)
	}
}

// counterOf reads the counter name of reg with the label given (0 when
// absent).
func counterOf(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
