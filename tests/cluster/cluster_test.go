package cluster

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/objcache"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// fault is one kind of failure injected during ingest: inject breaks
// something and returns what it broke and how to repair it (a repair
// starts what it starts for the whole bed: b.t). down names the
// serve replica the fault takes away (-1: none), which cannot answer until
// it is repaired.
type fault struct {
	name   string
	inject func(t *testing.T, b *bed, rng *rand.Rand) (what string, down int, repair func())
}

// faults are the failures the bed survives, each killed with SIGKILL: a
// speed process (a survivor takes its partitions), an archive process
// (likewise), the NATS server leading a partition's stream (the stream
// elects another leader; publishes whose outcome is unknown are retried
// and settled by the writer), the Redis master holding a partition's slot
// (its replica takes over; state and position roll back together), and a
// serve replica (clients retry on the other).
var faults = []fault{
	{"speed", func(t *testing.T, b *bed, rng *rand.Rand) (string, int, func()) {
		what, repair := b.killProc(t, b.speed[rng.IntN(2)])
		return what, -1, repair
	}},
	{"archive", func(t *testing.T, b *bed, rng *rand.Rand) (string, int, func()) {
		what, repair := b.killProc(t, b.archive[rng.IntN(2)])
		return what, -1, repair
	}},
	{"nats-leader", func(t *testing.T, b *bed, rng *rand.Rand) (string, int, func()) {
		p := rng.IntN(partitions)
		name := streamName(b.st.Namespace, p)
		i := b.nats.StreamLeader(t, name)
		b.nats.Kill(i)
		return fmt.Sprintf("nats-server %d, leader of %s", i, name), -1, func() { b.nats.Restart(b.t, i) }
	}},
	{"redis-master", func(t *testing.T, b *bed, rng *rand.Rand) (string, int, func()) {
		p := rng.IntN(partitions)
		key := b.st.Namespace + ":pos:" + speedstore.Tag("orders", p)
		i := b.redis.MasterOf(t, key)
		b.redis.Kill(i)
		return fmt.Sprintf("redis-server %d, master of %s", i, key), -1, func() { b.redis.Restart(b.t, i) }
	}},
	{"serve", func(t *testing.T, b *bed, rng *rand.Rand) (string, int, func()) {
		i := rng.IntN(2)
		what, repair := b.killProc(t, b.serve[i])
		return what, i, repair
	}},
}

// killProc kills a Braid process with SIGKILL; repairing starts it again.
// What a repair starts belongs to the bed's test, not to the fault's
// subtest, whose end would stop it (t.Cleanup).
func (b *bed) killProc(t *testing.T, p *proc) (string, func()) {
	p.p.Kill(t)
	return "braid " + p.layer, func() { p.run(b.t) }
}

// streamName is the JetStream stream of partition p of orders.
func streamName(ns string, p int) string {
	if p == 0 {
		return ns + "_events_orders"
	}
	return ns + "_events_orders-" + strconv.Itoa(p)
}

// TestCluster runs every fault (BRAID_CLUSTER_TRIALS times each, once by
// default) on one bed. Each trial ingests orders with ids through both
// serve replicas from two clients (a request that fails is sent again,
// to either replica, until it is accepted) and injects the fault at a
// random moment. With the fault still in place (the survivors doing the
// dead part's work), it checks everything accepted so far: the replicas
// answer the exact view exactly (against a computation of the accepted
// orders here), a batch run succeeds and they answer the sketch view
// exactly, and the lake and the log hold every accepted order once. Then
// it repairs the fault (the process or server starts again and rejoins)
// and checks that both replicas answer exactly. BRAID_CLUSTER_SEED
// replays a run's random choices.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 nats-servers, 6 redis-servers, versitygw and 8 braid processes; skipped with -short")
	}
	b := newBed(t)
	w := &world{ids: map[string]bool{}}
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("BRAID_CLUSTER_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (BRAID_CLUSTER_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(17, seed))
	n := trials()
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			for trial := range n {
				b.trial(t, w, f, trial, rng)
			}
		})
		if t.Failed() {
			return
		}
	}
}

// world is what the clients had accepted, over every trial.
type world struct {
	mu       sync.Mutex
	accepted []order
	ids      map[string]bool
	next     int
}

func (b *bed) trial(t *testing.T, w *world, f fault, trial int, rng *rand.Rand) {
	start := time.Now()
	batches := w.batches(rng, start, 2, 30, 50)
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, batch := range batches[c] {
				if err := b.send(c, batch); err != nil {
					errs <- err
					return
				}
				w.accept(batch)
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Duration(200+rng.IntN(1300)) * time.Millisecond)
	what, down, repair := f.inject(t, b, rng)
	t.Logf("trial %d: killed %s %.1fs into the ingest", trial, what, time.Since(start).Seconds())
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	live := b.replicas(down)
	b.check(t, w, live)
	t.Logf("trial %d: %d orders accepted in all, checked with %s down %.1fs after the ingest began", trial, len(w.accepted), what, time.Since(start).Seconds())
	repair()
	b.exact(t, w, b.replicas(-1))
}

// replicas are the serve replicas but the one down (-1: none).
func (b *bed) replicas(down int) []*proc {
	var out []*proc
	for i, s := range b.serve {
		if i != down {
			out = append(out, s)
		}
	}
	return out
}

// send sends one batch to client c's replica, and on any failure again,
// to the other replica in turn, until it is accepted (ids make a repeat
// harmless).
func (b *bed) send(c int, batch []order) error {
	body := ndjson(batch)
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for i := c; time.Now().Before(deadline); i++ {
		var r struct {
			Accepted int `json:"accepted"`
		}
		code, err := httpDo("POST", b.serve[i%2].st.Base+"/v1/streams/orders/events", body, &r)
		if err == nil && code == 200 && r.Accepted == len(batch) {
			return nil
		}
		last = fmt.Sprintf("status %d, accepted %d of %d, %v", code, r.Accepted, len(batch), err)
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("a batch of %d orders not accepted within 3 minutes: %s", len(batch), last)
}

// batches makes clients × n batches of size fresh orders with event times
// in the hour before now.
func (w *world) batches(rng *rand.Rand, now time.Time, clients, n, size int) [][][]order {
	countries := []string{"DE", "FR", "US", "GB", "JP"}
	out := make([][][]order, clients)
	for c := range out {
		for range n {
			batch := make([]order, size)
			for i := range batch {
				w.next++
				batch[i] = order{
					TS:      now.Add(-time.Duration(1 + rng.Int64N(int64(55*time.Minute)))).UTC().Format(time.RFC3339Nano),
					ID:      fmt.Sprintf("c-%d", w.next),
					Country: countries[rng.IntN(len(countries))],
					Amount:  math.Round(rng.Float64()*20000) / 100,
					Items:   1 + rng.IntN(4),
					Email:   fmt.Sprintf("buyer%d@example.com", rng.IntN(500)),
				}
			}
			out[c] = append(out[c], batch)
		}
	}
	return out
}

func (w *world) accept(batch []order) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range batch {
		if !w.ids[o.ID] {
			w.ids[o.ID] = true
			w.accepted = append(w.accepted, o)
		}
	}
}

// check waits until the live replicas answer orders_by_country exactly,
// runs a batch run and checks buyers_hourly exactly at them, and checks
// that the lake and the log hold every accepted order once.
func (b *bed) check(t *testing.T, w *world, live []*proc) {
	t.Helper()
	b.exact(t, w, live)
	from, to := window()
	b.batchRun(t, live[0])
	hours := byHour(w.accepted)
	for _, s := range live {
		testenv.Eventually(t, "exact sketches at "+s.st.Base+" after the batch run", time.Minute, func() string {
			var q answer
			if code, err := httpDo("GET", viewURL(s.st.Base, "buyers_hourly", from, to), nil, &q); code != 200 || err != nil {
				return fmt.Sprintf("status %d, %v", code, err)
			}
			return compareHour(q, hours)
		})
	}
	testenv.Eventually(t, "every accepted order in the lake once", 2*time.Minute, func() string {
		rows, distinct, ids, err := b.lakeCounts(t)
		if err != nil {
			return err.Error()
		}
		if n := int64(len(w.accepted)); rows != n || distinct != n || ids != n {
			return fmt.Sprintf("%d rows, %d distinct places, %d distinct ids; want %d each", rows, distinct, ids, n)
		}
		return ""
	})
	b.checkLog(t, w)
}

// window is the span of event times the bed's queries cover.
func window() (from, to time.Time) {
	return time.Now().Add(-2 * time.Hour).Truncate(time.Hour), time.Now().Add(time.Hour).Truncate(time.Hour)
}

// exact waits until the replicas answer orders_by_country exactly.
func (b *bed) exact(t *testing.T, w *world, replicas []*proc) {
	t.Helper()
	from, to := window()
	want := byMinute(w.accepted)
	for _, s := range replicas {
		testenv.Eventually(t, "exact answers at "+s.st.Base, 2*time.Minute, func() string {
			var q answer
			if code, err := httpDo("GET", viewURL(s.st.Base, "orders_by_country", from, to), nil, &q); code != 200 || err != nil {
				return fmt.Sprintf("status %d, %v", code, err)
			}
			return compareMinute(q, want)
		})
	}
}

// batchRun runs a batch run to completion through a replica (another run
// in progress, one the scheduler started, is waited for and the request
// repeated).
func (b *bed) batchRun(t *testing.T, via *proc) {
	t.Helper()
	testenv.Eventually(t, "a batch run to succeed", 3*time.Minute, func() string {
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		code, err := httpDo("POST", via.st.Base+"/v1/batch/runs?wait=true", []byte(`{}`), &r)
		if err != nil || code != 200 || r.Status != "succeeded" {
			return fmt.Sprintf("status %d, %+v, %v; partitions now: %s", code, r, err, b.partitions(via))
		}
		return ""
	})
}

// partitions tells where each partition of orders stands, as a replica's
// /v1/status says (for a failure's message).
func (b *bed) partitions(via *proc) string {
	var st struct {
		Streams map[string]struct {
			Partitions []map[string]any `json:"partitions"`
		} `json:"streams"`
	}
	if code, err := httpDo("GET", via.st.Base+"/v1/status", nil, &st); code != 200 || err != nil {
		return fmt.Sprintf("status %d, %v", code, err)
	}
	return fmt.Sprint(st.Streams["orders"].Partitions)
}

// lakeCounts reads the committed files of orders from the bucket with
// DuckDB: rows, distinct places (partition, sequence, index) and
// distinct ids.
func (b *bed) lakeCounts(t *testing.T) (rows, distinct, ids int64, err error) {
	ctx := context.Background()
	st := b.s3.Store(t, "braid/"+b.st.Namespace+"/lake")
	cache, err := objcache.New(st, t.TempDir(), 1<<30, nil)
	if err != nil {
		return 0, 0, 0, err
	}
	lk, err := lake.Open(st, lake.Options{ReadOnly: true, Cache: cache})
	if err != nil {
		return 0, 0, 0, err
	}
	m, err := lk.Manifest(ctx, "orders")
	if err != nil {
		return 0, 0, 0, err
	}
	keys := make([]string, len(m.Files))
	for i, f := range m.Files {
		keys[i] = f.Key
	}
	if len(keys) == 0 {
		return 0, 0, 0, nil
	}
	paths, release, err := lk.Local(ctx, keys)
	if err != nil {
		return 0, 0, 0, err
	}
	defer release()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		return 0, 0, 0, err
	}
	defer db.Close()
	list := make([]string, len(paths))
	for i, p := range paths {
		list[i] = "'" + strings.ReplaceAll(p, "'", "''") + "'"
	}
	q := fmt.Sprintf("SELECT count(*), count(DISTINCT (%s, %s, %s)), count(DISTINCT order_id) FROM read_parquet([%s], union_by_name = true)",
		lake.ColPart, lake.ColSeq, lake.ColIndex, strings.Join(list, ","))
	err = db.QueryRow(q).Scan(&rows, &distinct, &ids)
	return rows, distinct, ids, err
}

// checkLog reads every partition's log: each accepted id once, in the
// partition its key picks, and nothing else.
func (b *bed) checkLog(t *testing.T, w *world) {
	t.Helper()
	_, js := b.nats.Conn(t)
	seen := map[string]int{}
	for p := range partitions {
		for _, data := range testenv.StoredMessages(t, js, streamName(b.st.Namespace, p)) {
			if err := eventlog.Unpack(data, func(_ int, id, _ []byte) error {
				seen[string(id)]++
				return nil
			}); err != nil {
				t.Fatalf("partition %d: %v", p, err)
			}
		}
	}
	var twice, missing []string
	for id, n := range seen {
		if n > 1 {
			twice = append(twice, id)
		}
	}
	for id := range w.ids {
		if seen[id] == 0 {
			missing = append(missing, id)
		}
	}
	if len(twice) > 0 || len(missing) > 0 || len(seen) != len(w.ids) {
		slices.Sort(twice)
		slices.Sort(missing)
		t.Fatalf("the log holds %d ids, %d accepted: %d twice (%.10v), %d missing (%.10v)", len(seen), len(w.ids), len(twice), twice, len(missing), missing)
	}
}
