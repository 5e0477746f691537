package speed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/speed"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

const cfgYAML = `
streams:
  orders:
    time: ts
    id: id
    allowed_lateness: 1h
    fields: { ts: time, id: string, country: string, amount: float }
    required: [ts, country]
views:
  by_country:
    stream: orders
    window: 1m
    group_by: [country]
    measures: { n: count(), rev: sum(amount), lo: min(amount), hi: max(amount) }
  total:
    stream: orders
    window: 10m
    measures: { n: count() }
`

type env struct {
	cat   *config.Catalog
	log   *eventlog.Log
	store *speedstore.Store
	redis *testenv.Redis
	sent  []map[string]any
	rng   *rand.Rand
	base  time.Time
}

func setup(t *testing.T) *env {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	ns := testenv.Namespace(t)
	log, err := eventlog.Open(context.Background(), js, cat.StreamOrder, eventlog.Options{Namespace: ns, DedupWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	r := testenv.StartRedis(t)
	return &env{cat: cat, log: log, store: speedstore.New(r.Client(t), ns), redis: r, rng: rand.New(rand.NewPCG(7, 8)),
		base: time.Now().Truncate(time.Hour).Add(-2 * time.Hour)}
}

// publish prepares and appends n new events (and re-sends dup of them with
// the same ids, which the log drops).
func (e *env) publish(t *testing.T, n, dup int) {
	t.Helper()
	s := e.cat.Streams["orders"]
	var recs []eventlog.Record
	var fresh []map[string]any
	for i := 0; i < n; i++ {
		ev := map[string]any{"ts": e.base.Add(time.Duration(e.rng.IntN(3600)) * time.Second).UnixMilli(), "id": fmt.Sprintf("e%d", len(e.sent)+i),
			"country": []string{"DE", "FR", "US"}[e.rng.IntN(3)], "amount": float64(e.rng.IntN(10000)) / 100}
		fresh = append(fresh, ev)
	}
	for _, ev := range append(fresh, fresh[:dup]...) {
		raw, _ := json.Marshal(ev)
		pe, rec, err := s.Prepare(raw, time.Now().UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, eventlog.Record{ID: pe.ID, Data: rec})
	}
	if err := e.log.Publish(context.Background(), "orders", recs); err != nil {
		t.Fatal(err)
	}
	e.sent = append(e.sent, fresh...)
}

func (e *env) layer(t *testing.T) (*speed.Layer, context.CancelFunc, *sync.WaitGroup) {
	l := speed.New(speed.Config{BatchSize: 300, MaxWait: 50 * time.Millisecond, Epoch: time.Second, MaxCells: 100}, e.log, e.store,
		zero{}, e.cat, testenv.Logger(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = l.Run(ctx) }()
	return l, func() { cancel(); wg.Wait() }, &wg
}

type zero struct{}

func (zero) StreamCutoff(context.Context, string) (int64, error) { return 0, nil }

// verify compares the speed store's cells, summed over epochs, with a
// direct computation over the events sent.
func (e *env) verify() string {
	ctx := context.Background()
	info, _ := e.log.Info(ctx, "orders")
	pos, _, _ := e.store.Position(ctx, "orders")
	if pos.Seq != info.LastSeq {
		return fmt.Sprintf("position %d, log at %d", pos.Seq, info.LastSeq)
	}
	v := e.cat.Views["by_country"]
	cells, err := e.store.Read(ctx, v, 0, math.MaxInt64, 0)
	if err != nil {
		return err.Error()
	}
	got := map[string][]float64{}
	for _, c := range cells {
		k := fmt.Sprint(c.Window, c.Group)
		if got[k] == nil {
			got[k] = v.NewState()
		}
		v.MergeState(got[k], c.State)
	}
	type agg struct{ n, sum, lo, hi float64 }
	want := map[string]*agg{}
	for _, ev := range e.sent {
		w := ev["ts"].(int64) / 60000 * 60000
		k := fmt.Sprint(w, "s"+ev["country"].(string))
		a := want[k]
		if a == nil {
			a = &agg{lo: math.Inf(1), hi: math.Inf(-1)}
			want[k] = a
		}
		x := ev["amount"].(float64)
		a.n++
		a.sum += x
		a.lo, a.hi = math.Min(a.lo, x), math.Max(a.hi, x)
	}
	if len(got) != len(want) {
		return fmt.Sprintf("%d cells, want %d", len(got), len(want))
	}
	for k, a := range want {
		st := got[k]
		if st == nil {
			return "missing " + k
		}
		f := v.Finalize(st)
		if f[0] != int64(a.n) || math.Abs(f[1].(float64)-a.sum) > 1e-6 || f[2] != a.lo || f[3] != a.hi {
			return fmt.Sprintf("cell %s = %v, want %+v", k, f, *a)
		}
	}
	return ""
}

func eventually(t *testing.T, what string, f func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if last = f(); last == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s", what, last)
}

func TestSpeedExactThroughRestartsLossAndTwoWriters(t *testing.T) {
	e := setup(t)
	e.publish(t, 2000, 100)
	_, stop, _ := e.layer(t)
	eventually(t, "first pass", e.verify)
	stop()

	// A restart after more events: exact, nothing doubled.
	e.publish(t, 700, 50)
	_, stop, _ = e.layer(t)
	eventually(t, "after restart", e.verify)

	// Redis loses everything: the layer notices and rebuilds from the log.
	if err := e.redis.Client(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "after Redis loss", e.verify)

	// A second speed process on the same stream does not double count.
	_, stop2, _ := e.layer(t)
	for i := 0; i < 5; i++ {
		e.publish(t, 300, 20)
		time.Sleep(50 * time.Millisecond)
	}
	eventually(t, "two writers", e.verify)
	stop()
	stop2()
	if msg := e.verify(); msg != "" {
		t.Fatal(msg)
	}
}

func TestTooLateSkippedAndRecorded(t *testing.T) {
	e := setup(t)
	s := e.cat.Streams["orders"]
	now := time.Now()
	l, stop, _ := e.layer(t)
	defer stop()
	var recs []eventlog.Record
	for i, ts := range []time.Time{now, now.Add(-3 * time.Hour), now.Add(-30 * time.Minute)} {
		raw, _ := json.Marshal(map[string]any{"ts": ts.UnixMilli(), "id": fmt.Sprint("l", i), "country": "DE", "amount": 1.0})
		_, rec, err := s.Prepare(raw, now.UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, eventlog.Record{ID: fmt.Sprint("l", i), Data: rec})
	}
	if err := e.log.Publish(context.Background(), "orders", recs); err != nil {
		t.Fatal(err)
	}
	eventually(t, "late recorded", func() string {
		n, _ := e.log.LateCount(context.Background(), "orders")
		st := l.Status()["orders"]
		if n != 1 || st.Late != 1 || st.Seq != 3 {
			return fmt.Sprintf("late in log %d, status %+v", n, st)
		}
		return ""
	})
	cells, _ := e.store.Read(context.Background(), e.cat.Views["total"], 0, math.MaxInt64, 0)
	var total float64
	for _, c := range cells {
		total += c.State[0]
	}
	if total != 2 {
		t.Fatalf("speed counted %v events, want 2 (the too-late one skipped)", total)
	}
}
