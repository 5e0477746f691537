package bench

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/speed"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// The layer benchmarks: the speed layer, the archiver and a batch run, each
// next to the raw limit of what it stands on, measured in the same run on
// the same records.
func layersCatalog() testenv.Catalog {
	const measures = "n: count(), rev: sum(amount), avg: avg(amount), lo: min(amount), hi: max(amount)"
	return testenv.Catalog{
		Streams: []testenv.Stream{{
			Name: "orders", Time: "ts", ID: "order_id", Lateness: "48h",
			Fields: []string{"ts: time", "order_id: string", "country: string", "channel: string", "amount: float", "items: int"},
		}},
		Views: []testenv.View{
			{Name: "by_country", Stream: "orders", Window: "1m", GroupBy: []string{"country"}, Measures: strings.Split(measures, ", ")},
			{Name: "by_channel", Stream: "orders", Window: "5m", GroupBy: []string{"channel"},
				Measures: strings.Split(strings.Replace(measures, "max(amount)", "max(items)", 1), ", ")},
			{Name: "hourly", Stream: "orders", Window: "1h", Measures: strings.Split(measures, ", ")},
		},
	}
}

type layerEnv struct {
	cat  *config.Catalog
	log  *eventlog.Log
	js   jetstream.JetStream
	n    int    // events
	last uint64 // the log's last record
}

// setupLayers publishes n orders (layersCatalog's stream) with event times
// spread over the last `span`, in random order, to a NATS of its own, in
// log records of 1000 events (what an ingest request of 1000 events makes).
func setupLayers(t *testing.T, n int, span time.Duration) *layerEnv {
	cfg, err := config.Parse([]byte(layersCatalog().YAML()), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	nats := testenv.StartNATS(t)
	_, js := nats.JetStream(t)
	log, err := eventlog.Open(context.Background(), js, cat.StreamOrder, eventlog.Options{Namespace: testenv.Namespace(t), DedupWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	s := cat.Streams["orders"]
	rng := rand.New(rand.NewPCG(1, 1))
	now := time.Now().UnixMilli()
	recs := make([]eventlog.Record, 0, 1000)
	for i := 0; i < n; i++ {
		raw, _ := json.Marshal(map[string]any{"ts": now - rng.Int64N(span.Milliseconds()), "order_id": fmt.Sprint("o", i),
			"country": fmt.Sprint("c", rng.IntN(50)), "channel": []string{"web", "app", "shop"}[rng.IntN(3)],
			"amount": float64(rng.IntN(100000)) / 100, "items": rng.IntN(9)})
		ev, rec, err := s.Prepare(raw, 0)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, eventlog.Record{ID: ev.ID, Data: rec})
		if len(recs) == cap(recs) || i == n-1 {
			if err := log.Publish(context.Background(), "orders", recs); err != nil {
				t.Fatal(err)
			}
			recs = recs[:0]
		}
	}
	info, err := log.Info(context.Background(), "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	return &layerEnv{cat: cat, log: log, js: js, n: n, last: info.LastSeq}
}

// rawConsume is the limit: a pull consumer fetching the same log records
// in batches and acking the last of each (ack-all), doing nothing else.
func (e *layerEnv) rawConsume(t *testing.T, name string) float64 {
	ctx := context.Background()
	c, err := e.log.Consumer(ctx, "orders", 0, name, eventlog.Start{Seq: 1}, 8000)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var got uint64
	for got < e.last {
		msgs, err := c.Fetch(ctx, 2000, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) > 0 {
			got = msgs[len(msgs)-1].Seq
			if err := c.Ack(ctx, msgs[len(msgs)-1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	return float64(e.n) / time.Since(start).Seconds()
}

func runUntil(t *testing.T, run func(context.Context) error, done func() bool) time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	start := time.Now()
	go func() { defer wg.Done(); _ = run(ctx) }()
	for !done() {
		if time.Since(start) > 5*time.Minute {
			cancel()
			wg.Wait()
			t.Fatal("layer did not finish within 5 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
	d := time.Since(start)
	cancel()
	wg.Wait()
	return d
}

type zeroCutoff struct{}

func (zeroCutoff) StreamCutoff(context.Context, string) (int64, error) { return 0, nil }

func TestBenchLayers(t *testing.T) {
	benchOnly(t)
	const n = 300_000
	e := setupLayers(t, n, 24*time.Hour)
	ctx := context.Background()
	// The limits besides the packed-record consume, each measured once on
	// the same events: consuming them one message each, and writing them
	// to Parquet without the log.
	evs := e.events(t)
	perMessage := rawConsumePerEvent(t, evs, min(n, perEventLimit))
	parquetLimit := parquetWrite(t, e.cat.Streams["orders"], evs, 200000)
	evs = nil

	// 2. Speed layer: 3 views × 5 measures, committed to Redis.
	limit := e.rawConsume(t, "raw-speed")
	redis := testenv.StartRedis(t)
	store := speedstore.New(redis.Client(t), testenv.Namespace(t))
	sp := speed.New(speed.Config{BatchSize: 2000, MaxWait: 25 * time.Millisecond, Epoch: 10 * time.Second, MaxCells: 50000}, e.log, store, zeroCutoff{}, nil, e.cat, nil, nil)
	d := runUntil(t, sp.Run, func() bool { p, _, _ := store.Position(ctx, "orders", 0); return p.Seq >= e.last })
	report(t, "speed_3views_5measures", float64(n)/d.Seconds(), "events/s", limit)
	report(t, "speed_3views_5measures_vs_per_message", float64(n)/d.Seconds(), "events/s", perMessage)

	// 3. Archiver: into Parquet, vs raw consume.
	dir := t.TempDir()
	lk, err := lake.OpenDir(filepath.Join(dir, "lake"))
	if err != nil {
		t.Fatal(err)
	}
	limit = e.rawConsume(t, "raw-archive")
	t0archive := time.Now()
	ar := batch.NewArchiver(batch.ArchiverConfig{MaxRows: 200000, MaxDelay: time.Second}, e.log, lk, e.cat, nil, nil)
	var archived time.Duration
	d = runUntil(t, ar.Run, func() bool {
		cp, _ := lk.Checkpoint("orders")
		if cp.Seq >= e.last && archived == 0 {
			archived = time.Since(t0archive)
		}
		// Keep it running until the coverage passes the last arrival's
		// epoch (the archiver marks a stream covered once it is idle), so
		// the batch run below can count every record.
		return cp.Seq >= e.last && logic.EpochOf(cp.CoveredUntil, time.Second) > cp.Arrival
	})
	report(t, "archiver", float64(n)/archived.Seconds(), "events/s", limit)
	report(t, "archiver_vs_per_message", float64(n)/archived.Seconds(), "events/s", perMessage)
	report(t, "archiver_vs_parquet_write", float64(n)/archived.Seconds(), "events/s", parquetLimit)

	// 5. Batch run over the lake vs DuckDB's bare query of the same SQL.
	views, err := batchviews.OpenDir(filepath.Join(dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	runner := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second}, lk, views, nil, e.cat, nil, nil)
	var run batchviews.Run
	for deadline := time.Now().Add(2 * time.Minute); run.RowsRead < int64(n); { // wait until the cutoff covers every record
		if time.Now().After(deadline) {
			t.Fatalf("batch runs read %d of %d records after 2 minutes", run.RowsRead, n)
		}
		time.Sleep(200 * time.Millisecond)
		t0 := time.Now()
		run, err = runner.Run(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		d = time.Since(t0)
	}
	files, err := lk.Files("orders")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	src := "read_parquet(['" + strings.Join(files, "','") + "'])"
	t0 := time.Now()
	for _, name := range e.cat.ViewOrder {
		rows, err := db.Query(e.cat.Views[name].SQL(src, run.Cutoffs[name]))
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
		}
		rows.Close()
	}
	bare := time.Since(t0)
	report(t, fmt.Sprintf("batch_run_%dk_events", n/1000), d.Seconds(), "s", bare.Seconds())
}
