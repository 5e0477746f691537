package bench

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/tests/testenv"
)

func batchLakeCatalog() testenv.Catalog {
	orders := testenv.Orders().Without("email")
	orders.Lateness = ""
	byCountry := testenv.OrdersByCountry().Without("items")
	byCountry.Name = "by_country"
	return testenv.Catalog{Epoch: "10s", Streams: []testenv.Stream{orders}, Views: []testenv.View{byCountry}}
}

// TestBenchBatchLake: a batch run of a count/sum/avg/min/max view over a
// large lake (1-minute windows × 50 countries over BRAID_BENCH_BATCH_SPAN),
// next to DuckDB's bare group-by of the same measures over the same
// Parquet files. Sizes are cumulative: the lake grows to each size in turn
// and both are measured there, so the seconds per million events show
// whether the cost grows linearly.
func TestBenchBatchLake(t *testing.T) {
	benchOnly(t)
	def := []int{10_000_000}
	if os.Getenv("BRAID_BENCH_BIG") != "" {
		def = []int{1_000_000, 10_000_000, 30_000_000}
	}
	sizes := envInts(t, "BRAID_BENCH_EVENTS", def)
	slices.Sort(sizes)
	sizes = slices.Compact(sizes)
	span := envDuration(t, "BRAID_BENCH_BATCH_SPAN", 24*time.Hour).Milliseconds()
	if span < 60_000 {
		t.Fatalf("BRAID_BENCH_BATCH_SPAN must be at least 1m")
	}

	cfg, err := config.Parse([]byte(batchLakeCatalog().YAML()), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	s := cat.Streams["orders"]
	v := cat.Views["by_country"]
	f := fieldsOf(t, s)
	dir := t.TempDir()
	lk, err := lake.OpenDir(filepath.Join(dir, "lake"))
	if err != nil {
		t.Fatal(err)
	}
	views, err := batchviews.Open(filepath.Join(dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	runner := batch.NewRunner(batch.RunnerConfig{Epoch: cfg.Epoch.D()}, lk, views, nil, cat, logger, nil)
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// Every `cycle` events sweep the whole span in event-time order (a
	// replayed day), so each size has every window × country cell (the
	// same batch-view output) and the files are time-ordered like the
	// archiver's. Arrival follows the log sequence.
	countries := make([]string, 50)
	for i := range countries {
		countries[i] = fmt.Sprintf("c%02d", i)
	}
	cycle := min(1_000_000, sizes[0])
	start := time.Now().Add(-time.Duration(span)*time.Millisecond - 2*time.Hour).Truncate(time.Minute).UnixMilli()
	arrival0 := time.Now().Add(-time.Hour).UnixMilli()
	gen := func(i int, r *lake.Row) {
		ts := start + int64(i%cycle)*span/int64(cycle) + int64(i/cycle)%1000
		f.set(r, i, ts, countries[mix(uint64(i)^0x5bd1e995)%50])
		r.Arrival = arrival0 + int64(i)/1000
	}

	type point struct {
		n           int
		braid, bare float64
	}
	var curve []point
	written := 0
	var maxArr int64
	for _, n := range sizes {
		t0 := time.Now()
		maxArr = max(maxArr, writeLake(t, lk, s, written, n, gen))
		cutoff := commitLake(t, lk, s.Name, uint64(n), maxArr, cfg.Epoch.D())
		written = n
		files, err := lk.Files(s.Name)
		if err != nil {
			t.Fatal(err)
		}
		var bytesOnDisk int64
		for _, p := range files {
			if st, err := os.Stat(p); err == nil {
				bytesOnDisk += st.Size()
			}
		}
		t.Logf("lake: %d events in %d files, %.0f MiB, written in %s", n, len(files), float64(bytesOnDisk)/(1<<20), time.Since(t0).Round(time.Millisecond))

		// Braid: one batch run of the view (read, compute, publish a version).
		logs.Reset()
		t0 = time.Now()
		run, err := runner.Run(context.Background(), nil)
		braidSec := time.Since(t0).Seconds()
		if err != nil {
			t.Fatalf("batch run: %v\n%s", err, logs.String())
		}
		if run.RowsRead != int64(n) {
			t.Fatalf("batch run read %d rows, want %d (cutoff %d)", run.RowsRead, n, run.Cutoffs[v.Name])
		}
		t.Logf("braid run: %.2fs rows_out=%d\n%s", braidSec, run.RowsOut, logs.String())

		// Bare: DuckDB's group-by of the same measures over the same files,
		// every result row scanned into Go.
		list := make([]string, len(files))
		for i, p := range files {
			list[i] = "'" + strings.ReplaceAll(p, "'", "''") + "'"
		}
		q := fmt.Sprintf(`SELECT CAST(floor(_time / 60000) AS BIGINT) * 60000 AS w, country, count(*), sum(amount), avg(amount), min(amount), max(amount)
			FROM read_parquet([%s]) WHERE _arrival < %d GROUP BY ALL`, strings.Join(list, ", "), cutoff)
		t0 = time.Now()
		rows, err := db.Query(q)
		if err != nil {
			t.Fatal(err)
		}
		vals := make([]any, 7)
		ptrs := make([]any, 7)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		cells := 0
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			cells++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		bareSec := time.Since(t0).Seconds()
		if int64(cells) != run.RowsOut {
			t.Errorf("bare query: %d cells, the batch run %d", cells, run.RowsOut)
		}
		label := sizeLabel(n)
		// In ms: report prints one decimal.
		report(t, "batch_lake_"+label+"_events", braidSec*1000, "ms", bareSec*1000)
		m := float64(n) / 1e6
		report(t, "batch_lake_"+label+"_per_Mevents", braidSec*1000/m, "ms/Mevents", bareSec*1000/m)
		curve = append(curve, point{n, braidSec / m, bareSec / m})
	}
	// Linear means a constant marginal cost: the seconds each further
	// million events adds, between consecutive sizes (fixed costs such as
	// publishing the 72k-cell version drop out).
	var desc, marg []string
	var growth, bareGrowth float64
	var first, bareFirst float64
	for i, p := range curve {
		desc = append(desc, fmt.Sprintf("%s=%.3f (bare %.3f)", sizeLabel(p.n), p.braid, p.bare))
		if i == 0 {
			continue
		}
		q := curve[i-1]
		dm := float64(p.n-q.n) / 1e6
		m := (p.braid*float64(p.n) - q.braid*float64(q.n)) / 1e6 / dm
		mb := (p.bare*float64(p.n) - q.bare*float64(q.n)) / 1e6 / dm
		marg = append(marg, fmt.Sprintf("%s-%s=%.3f (bare %.3f)", sizeLabel(q.n), sizeLabel(p.n), m, mb))
		if i == 1 {
			first, bareFirst = m, mb
		}
		growth, bareGrowth = m/first, mb/bareFirst
	}
	switch {
	case len(curve) == 1:
		fmt.Printf("bench: batch_lake_curve one size (BRAID_BENCH_BIG=1 for 1M/10M/30M): s per M events %s\n", strings.Join(desc, " "))
	case len(curve) == 2:
		fmt.Printf("bench: batch_lake_curve two sizes, linearity needs three: s per M events %s; marginal s per M %s\n", strings.Join(desc, " "), strings.Join(marg, " "))
	default:
		verdict := "linear"
		if growth > 1.3 {
			verdict = "superlinear"
		} else if growth < 1/1.3 {
			verdict = "sublinear"
		}
		report(t, "batch_lake_marginal_growth", growth, "x", 0)
		report(t, "batch_lake_bare_marginal_growth", bareGrowth, "x", 0)
		fmt.Printf("bench: batch_lake_curve %s (last/first marginal cost %.2fx, bare %.2fx): s per M events %s; marginal s per M %s\n",
			verdict, growth, bareGrowth, strings.Join(desc, " "), strings.Join(marg, " "))
	}
}
