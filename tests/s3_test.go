package tests

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/objcache"
	"github.com/braid-data/braid/tests/testenv"
)

// s3Run is the part of a batch run record the S3 test reads.
type s3Run struct {
	ID            string            `json:"id"`
	Status        string            `json:"status"`
	UnitsComputed int               `json:"units_computed"`
	UnitsReused   int               `json:"units_reused"`
	FailedViews   map[string]string `json:"failed_views"`
	Error         string            `json:"error"`
}

// s3Days is how many days of event history the S3 test spreads orders over.
const s3Days = 12

// daysOrders are n orders with event times spread over the s3Days days
// before now (day 0 the oldest), or, with day >= 0, all on that day.
func daysOrders(rng *rand.Rand, now time.Time, n, from, day int) []order {
	countries := []string{"DE", "FR", "US", "GB", "JP"}
	start := now.UTC().Truncate(24*time.Hour).AddDate(0, 0, -(s3Days - 1))
	out := make([]order, n)
	for i := range out {
		d := day
		if d < 0 {
			d = rng.IntN(s3Days)
		}
		ts := start.AddDate(0, 0, d).Add(time.Duration(rng.Int64N(int64(24 * time.Hour))))
		if ts.After(now.Add(-time.Minute)) {
			ts = now.Add(-time.Duration(1+rng.IntN(3600)) * time.Second)
		}
		out[i] = order{
			TS:      ts.Format(time.RFC3339Nano),
			ID:      fmt.Sprintf("s3-%d", from+i),
			Country: countries[rng.IntN(len(countries))],
			Amount:  math.Round(rng.Float64()*20000) / 100,
			Items:   1 + rng.IntN(4),
			Email:   fmt.Sprintf("buyer%d@example.com", rng.IntN(300)),
		}
	}
	return out
}

// TestS3Deployment runs the layers as separate processes, each with a
// data_dir of its own, against a nats-server, a redis-server and versitygw
// holding the lake and the batch views: two serve replicas, speed,
// archive (compacting while it archives) and two batch workers. It checks,
// against an independent computation of the accepted orders, that both
// replicas answer exactly before and after batch runs; that the two
// workers share a run; that the next run after orders of one day computes
// only that day's unit; that a worker killed with SIGKILL in the middle of
// a run leaves a correct version; and that the lake in the bucket holds
// every accepted order once, compacted files included.
func TestS3Deployment(t *testing.T) {
	if testing.Short() {
		t.Skip("runs eight processes and three servers; skipped with -short")
	}
	s3 := testenv.StartS3(t)
	cat := testenv.Fast()
	orders := testenv.Orders()
	orders.Lateness = fmt.Sprintf("%dh", 24*(s3Days+1))
	cat.Streams = []testenv.Stream{orders}
	cat.Views = []testenv.View{testenv.OrdersByCountry()}
	// Small files, compacted every second into files of about 1 MiB.
	cat.Archive = "max_rows: 100, max_delay: 200ms, compact: true, target_file_bytes: 1MiB, upkeep_every: 1s"
	st := testenv.NewStack(t, cat.YAML(), testenv.WithNATSProc(), testenv.WithS3(s3))
	noWorker := append(st.Env(), "BRAID_BATCH_WORKERS=0")
	serve1 := testenv.StartBraidEnv(t, st.Base, noWorker, "serve", "--config", st.Config)
	tw := st.Twin()
	testenv.StartBraidEnv(t, tw.Base, noWorker, "serve", "--config", tw.Config)
	bases := []string{st.Base, tw.Base}
	st.Twin().Spawn("speed")
	st.Twin().Spawn("archive")
	workers := []*testenv.Proc{st.Twin().Spawn("batch"), st.Twin().Spawn("batch")}
	_ = serve1
	// A fresh deployment answers once the batch run of its new views has
	// published (a batch worker starts it).
	st.WaitViewsReady()
	tw.WaitViewsReady()

	rng := rand.New(rand.NewPCG(16, 3))
	now := time.Now()
	var accepted []order
	send := func(os []order) {
		for i := 0; i < len(os); i += 200 {
			b := os[i:min(i+200, len(os))]
			if r := post(t, st.Base, ndjson(b)); r.Accepted != len(b) {
				t.Fatalf("ingest: %+v", r)
			}
			accepted = append(accepted, b...)
		}
	}
	from, to := now.AddDate(0, 0, -(s3Days+1)), now.Add(time.Hour)
	// exact waits until both replicas answer every window exactly, from
	// the sources given.
	exact := func(when string, sources ...string) {
		t.Helper()
		want := expect(accepted)
		for _, base := range bases {
			eventually(t, when+" at "+base, 60*time.Second, func() string {
				return compare(query(t, base, from, to), want, sources...)
			})
		}
	}
	run := func(what string) s3Run {
		t.Helper()
		var r s3Run
		if code := httpJSON(t, "POST", st.Base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &r); code != 200 || r.Status != "succeeded" {
			t.Fatalf("%s: status %d, %+v", what, code, r)
		}
		return r
	}

	send(daysOrders(rng, now, 2400, 0, -1))
	exact("before any batch run", "speed")

	// A full run over the days: one unit per day, shared by the workers.
	r1 := run("first run")
	if r1.UnitsComputed != s3Days || r1.UnitsReused != 0 {
		t.Fatalf("first run computed %d units and reused %d, want %d and 0", r1.UnitsComputed, r1.UnitsReused, s3Days)
	}
	exact("after the first run", "batch", "batch+speed")
	var shares []int
	total := 0
	for _, w := range workers {
		n := strings.Count(w.Output(), "run="+r1.ID+" view=orders_by_country")
		shares = append(shares, n)
		total += n
	}
	if total < s3Days || shares[0] == 0 || shares[1] == 0 {
		t.Fatalf("units of the first run computed by the workers: %v, want both sharing %d", shares, s3Days)
	}
	t.Logf("workers computed %v of the first run's %d units", shares, s3Days)

	// Orders of one earlier day: the next run computes that day's unit
	// only, and answers as a full recompute (the independent computation).
	send(daysOrders(rng, now, 300, len(accepted), 4))
	r2 := run("run after one day's orders")
	if r2.UnitsComputed != 1 || r2.UnitsReused != s3Days-1 {
		t.Fatalf("incremental run computed %d units and reused %d, want 1 and %d", r2.UnitsComputed, r2.UnitsReused, s3Days-1)
	}
	exact("after the incremental run", "batch", "batch+speed")

	// Orders on every day, then a run that the first worker computes
	// alone (the second is stopped) until it is killed with SIGKILL after
	// its first unit, busy with the next; the second, continued, computes
	// the rest, the unit the first held included once the queue hands it
	// out again.
	send(daysOrders(rng, now, 1200, len(accepted), -1))
	signal(t, workers[1], syscall.SIGSTOP)
	var started struct {
		ID string `json:"id"`
	}
	if code := httpJSON(t, "POST", st.Base+"/v1/batch/runs", "application/json", []byte(`{}`), &started); code != 202 || started.ID == "" {
		t.Fatalf("start run: %d %+v", code, started)
	}
	eventually(t, "a unit of the run computed by the first worker", 90*time.Second, func() string {
		if strings.Contains(workers[0].Output(), "run="+started.ID) {
			return ""
		}
		return "none yet"
	})
	workers[0].Kill(t)
	signal(t, workers[1], syscall.SIGCONT)
	var r3 s3Run
	eventually(t, "the run to finish", 2*time.Minute, func() string {
		if code := httpJSON(t, "GET", st.Base+"/v1/batch/runs/"+started.ID, "", nil, &r3); code != 200 {
			return fmt.Sprintf("status %d", code)
		}
		if r3.Status == "running" {
			return "running"
		}
		return ""
	})
	if r3.Status != "succeeded" || r3.UnitsComputed != s3Days {
		t.Fatalf("run with a worker killed: %+v", r3)
	}
	again := regexp.MustCompile(`run=` + regexp.QuoteMeta(started.ID) + ` .* attempt=[2-9]`)
	t.Logf("units of the run the first worker held when it was killed, computed again by the second: %d", len(again.FindAllString(workers[1].Output(), -1)))
	exact("after the run with a worker killed", "batch", "batch+speed")

	// The lake in the bucket: every accepted order once, in files the
	// archiver compacted while it archived.
	lk := s3Lake(t, s3, st.Namespace)
	eventually(t, "compacted files in the lake", 60*time.Second, func() string {
		m, err := lk.Manifest(context.Background(), "orders")
		if err != nil {
			return err.Error()
		}
		for _, f := range m.Files {
			if strings.Contains(f.Key, "-c") {
				return ""
			}
		}
		return fmt.Sprintf("%d files, none compacted", len(m.Files))
	})
	eventually(t, "every accepted order in the lake once", 60*time.Second, func() string {
		rows, distinct, ids := lakeCounts(t, lk)
		if rows != int64(len(accepted)) || distinct != rows || ids != rows {
			return fmt.Sprintf("%d rows, %d distinct (_seq, _idx), %d distinct ids; want %d each", rows, distinct, ids, len(accepted))
		}
		return ""
	})
}

// s3Lake opens, read-only, the lake a WithS3 stack of namespace ns keeps
// in s3's bucket, with a local cache for DuckDB.
func s3Lake(t *testing.T, s3 *testenv.S3, ns string) *lake.Lake {
	t.Helper()
	st := s3.Store(t, "braid/"+ns+"/lake")
	cache, err := objcache.New(st, t.TempDir(), 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}
	lk, err := lake.Open(st, lake.Options{ReadOnly: true, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	return lk
}

// lakeCounts reads the committed files of orders with DuckDB: rows,
// distinct (_seq, _idx) and distinct ids.
func lakeCounts(t *testing.T, lk *lake.Lake) (rows, distinct, ids int64) {
	t.Helper()
	ctx := context.Background()
	m, err := lk.Manifest(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(m.Files))
	for i, f := range m.Files {
		keys[i] = f.Key
	}
	if len(keys) == 0 {
		return 0, 0, 0
	}
	paths, release, err := lk.Local(ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	list := make([]string, len(paths))
	for i, p := range paths {
		list[i] = "'" + strings.ReplaceAll(p, "'", "''") + "'"
	}
	q := fmt.Sprintf("SELECT count(*), count(DISTINCT (_seq, _idx)), count(DISTINCT order_id) FROM read_parquet([%s], union_by_name = true)", strings.Join(list, ","))
	if err := db.QueryRow(q).Scan(&rows, &distinct, &ids); err != nil {
		t.Fatal(err)
	}
	return rows, distinct, ids
}

// signal sends sig to a braid process.
func signal(t *testing.T, p *testenv.Proc, sig syscall.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}
