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

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/speed"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// byCountryYAML is the by_country view of cfgYAML, as the edited
// configuration of rebuild_test.go keeps it.
const byCountryYAML = `
  by_country:
    stream: orders
    window: 1m
    group_by: [country]
    measures: { n: count(), rev: sum(amount), lo: min(amount), hi: max(amount), mean: avg(amount) }
`

const cfgYAML = speed.OrdersYAML + "views:" + byCountryYAML + `  total:
    stream: orders
    window: 10m
    measures: { n: count() }
`

type env struct {
	ns    string
	cat   *config.Catalog
	log   *eventlog.Log
	store *speedstore.Store
	redis *testenv.Redis
	nats  *testenv.NATS
	sent  []map[string]any
	rng   *rand.Rand
	base  time.Time
}

func setup(t *testing.T) *env {
	t.Helper()
	return setupWith(t, cfgYAML)
}

// setupWith is setup over the configuration yaml (an orders stream of any
// number of partitions, the views verify checks).
func setupWith(t *testing.T, yaml string) *env {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml), nil)
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
	log, err := eventlog.Open(context.Background(), js, cat.StreamOrder, eventlog.Options{Namespace: ns, DedupWindow: time.Minute,
		Partitions: map[string]int{"orders": cat.Streams["orders"].Partitions}})
	if err != nil {
		t.Fatal(err)
	}
	r := testenv.StartRedis(t)
	return &env{ns: ns, cat: cat, log: log, store: speedstore.New(r.Client(t), ns), redis: r, nats: n, rng: rand.New(rand.NewPCG(7, 8)),
		base: time.Now().Truncate(time.Hour).Add(-2 * time.Hour)}
}

// publish prepares and appends n new events (and re-sends dup of them with
// the same ids, which the log drops), each to its partition. A Publish
// call is one log record per partition: the events go out in calls of
// 1..7 of them in turn, so the log holds records of several events and
// the layer reads many records.
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
		recs = append(recs, eventlog.Record{ID: pe.ID, Data: rec, Part: s.PartitionOf(&pe)})
	}
	for k := 0; len(recs) > 0; k++ {
		part := recs[:min(len(recs), 1+k%7)]
		if err := e.log.Publish(context.Background(), "orders", part); err != nil {
			t.Fatal(err)
		}
		recs = recs[len(part):]
	}
	e.sent = append(e.sent, fresh...)
}

func (e *env) layer(t *testing.T) (*speed.Layer, context.CancelFunc, *sync.WaitGroup) {
	l := speed.New(speed.Config{BatchSize: 300, MaxWait: 50 * time.Millisecond, Epoch: time.Second, MaxCells: 100}, e.log, e.store,
		zero{}, nil, e.cat, testenv.Logger(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = l.Run(ctx) }()
	return l, func() { cancel(); wg.Wait() }, &wg
}

type zero struct{}

func (zero) StreamCutoff(context.Context, string) (int64, error) { return 0, nil }

// verify checks that the speed layer has caught up with the log and that
// its cells, summed over epochs, equal a direct computation over the events
// sent (count/sum/min/max/avg per 1m window and country; count per 10m).
func (e *env) verify() string { return e.verifyEvents(e.sent, 0) }

// verifyEvents is verify for the events expected in the speed store, all
// of whose cells must have an epoch >= minEpoch.
func (e *env) verifyEvents(sent []map[string]any, minEpoch int64) string {
	return e.verifyViews(sent, minEpoch, []viewCheck{
		{"by_country", 60000, true, func(f []any, a *agg) bool {
			return f[0] == int64(a.n) && math.Abs(f[1].(float64)-a.sum) <= 1e-6 && f[2] == a.lo && f[3] == a.hi && math.Abs(f[4].(float64)-a.sum/a.n) <= 1e-9
		}},
		{"total", 600000, false, func(f []any, a *agg) bool { return f[0] == int64(a.n) }},
	})
}

// agg is the direct computation of one cell: count, sum, min and max of amount.
type agg struct{ n, sum, lo, hi float64 }

// viewCheck is a view to verify: its window, whether it groups by
// country, and whether a finalized cell matches its direct computation.
type viewCheck struct {
	name    string
	window  int64
	grouped bool
	match   func(f []any, a *agg) bool
}

// verifyViews checks that the speed layer has caught up with the log (the
// position of every partition at its last record) and that each view's
// cells of every partition (all of epochs >= minEpoch), summed over epochs
// and partitions, match a direct computation over sent.
func (e *env) verifyViews(sent []map[string]any, minEpoch int64, checks []viewCheck) string {
	ctx := context.Background()
	for p := range e.log.Partitions("orders") {
		info, err := e.log.Info(ctx, "orders", p)
		if err != nil {
			return err.Error()
		}
		pos, _, err := e.store.Position(ctx, "orders", p)
		if err != nil {
			return err.Error()
		}
		if pos.Seq != info.LastSeq {
			return fmt.Sprintf("partition %d: position %d, log at %d", p, pos.Seq, info.LastSeq)
		}
	}
	for _, view := range checks {
		v := e.cat.Views[view.name]
		cells, err := e.store.Read(ctx, v, 0, math.MaxInt64, 0)
		if err != nil {
			return err.Error()
		}
		got := map[string]*logic.State{}
		for _, c := range cells {
			if c.Epoch < minEpoch {
				return fmt.Sprintf("%s: cell of epoch %d below %d", view.name, c.Epoch, minEpoch)
			}
			k := fmt.Sprint(c.Window, "/", c.Group)
			if got[k] == nil {
				st := v.NewState()
				got[k] = &st
			}
			v.MergeState(got[k], c.State)
		}
		want := map[string]*agg{}
		for _, ev := range sent {
			g := ""
			if view.grouped {
				g = "s" + ev["country"].(string)
			}
			k := fmt.Sprint(ev["ts"].(int64)/view.window*view.window, "/", g)
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
			return fmt.Sprintf("%s: %d cells, want %d", view.name, len(got), len(want))
		}
		for k, a := range want {
			st := got[k]
			if st == nil {
				return view.name + ": missing " + k
			}
			if f := v.Finalize(st); !view.match(f, a) {
				return fmt.Sprintf("%s: cell %s = %v, want %+v", view.name, k, f, *a)
			}
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

	// A second speed process on the same stream does not double count:
	// without shares both run the partition and consume at once from the
	// shared durable consumer (as two processes would when a lease expired
	// during a pause); only the position's compare-and-set keeps them
	// apart.
	_, stop2, _ := e.layer(t)
	for i := 0; i < 8; i++ {
		e.publish(t, 300, 20)
		time.Sleep(300 * time.Millisecond)
	}
	eventually(t, "two writers", e.verify)
	// The first stops (graceful flush); the other goes on alone.
	stop()
	e.publish(t, 400, 10)
	eventually(t, "after takeover", e.verify)

	// Redis itself restarts empty (the process, not just its data).
	e.redis.Restart(t)
	e.publish(t, 100, 0)
	eventually(t, "after a Redis restart", e.verify)
	stop2()
	if msg := e.verify(); msg != "" {
		t.Fatal(msg)
	}
}

// cutoff is a CutoffSource with a fixed answer.
type cutoff int64

func (c cutoff) StreamCutoff(context.Context, string) (int64, error) { return int64(c), nil }

// A rebuild starts at the batch cutoff: the speed store then holds exactly
// the records that arrived at or after it, all in epochs >= the cutoff.
func TestRebuildStartsAtTheCutoff(t *testing.T) {
	e := setup(t)
	e.publish(t, 500, 0)
	before := len(e.sent)
	epoch := time.Second
	c := logic.EpochOf(time.Now().UnixMilli(), epoch) + epoch.Milliseconds()
	time.Sleep(time.Until(time.UnixMilli(c).Add(20 * time.Millisecond)))
	e.publish(t, 600, 0)

	l := speed.New(speed.Config{BatchSize: 250, MaxWait: 50 * time.Millisecond, Epoch: epoch, MaxCells: 1000}, e.log, e.store,
		cutoff(c), nil, e.cat, testenv.Logger(t), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	eventually(t, "rebuild from the cutoff", func() string { return e.verifyEvents(e.sent[before:], c) })
	// The fresh position names the last record it had to refold: until it
	// gets there its views miss events (serving answers 503 meanwhile).
	info, err := e.log.Info(ctx, "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	if pos, _, err := e.store.Position(ctx, "orders", 0); err != nil || pos.Target != info.LastSeq || pos.Seq < pos.Target {
		t.Fatalf("position %+v (%v), want target %d, the log's last record at start", pos, err, info.LastSeq)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
}

func TestTooLateSkippedAndRecorded(t *testing.T) {
	e := setup(t)
	s := e.cat.Streams["orders"]
	now := time.Now()
	reg := prometheus.NewRegistry()
	l := speed.New(speed.Config{BatchSize: 300, MaxWait: 50 * time.Millisecond, Epoch: time.Second}, e.log, e.store, zero{}, nil, e.cat, testenv.Logger(t), reg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	defer func() { cancel(); <-done }()
	var recs []eventlog.Record
	for i, ts := range []time.Time{now, now.Add(-3 * time.Hour), now.Add(-30 * time.Minute)} {
		raw, _ := json.Marshal(map[string]any{"ts": ts.UnixMilli(), "id": fmt.Sprint("l", i), "country": "DE", "amount": 1.0})
		_, rec, err := s.Prepare(raw, now.UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, eventlog.Record{ID: fmt.Sprint("l", i), Data: rec})
	}
	// One call: one log record (sequence 1) of the three events.
	if err := e.log.Publish(context.Background(), "orders", recs); err != nil {
		t.Fatal(err)
	}
	if info, err := e.log.Info(context.Background(), "orders", 0); err != nil || info.LastSeq != 1 || info.Msgs != 1 {
		t.Fatalf("log %+v %v: want the three events in one record", info, err)
	}
	eventually(t, "late recorded", func() string {
		n, _ := e.log.LateCount(context.Background(), "orders")
		st := l.Status()["orders"].Partitions[0]
		if n != 1 || st.Late != 1 || st.Seq != 1 {
			return fmt.Sprintf("late in log %d, status %+v", n, st)
		}
		return ""
	})
	// The too-late event is the record's second (index 1).
	refs, err := e.log.LateEvents(context.Background(), "orders", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 1 || refs[0] != (eventlog.EventRef{Seq: 1, Index: 1}) {
		t.Fatalf("late events %+v, want [{Seq:1 Index:1}]", refs)
	}
	cells, _ := e.store.Read(context.Background(), e.cat.Views["total"], 0, math.MaxInt64, 0)
	var total float64
	for _, c := range cells {
		total += c.State.Num[0]
	}
	if total != 2 {
		t.Fatalf("speed counted %v events, want 2 (the too-late one skipped)", total)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	late := -1.0
	for _, f := range fams {
		if f.GetName() != "braid_speed_late_events_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "stream" && lp.GetValue() == "orders" {
					late = m.GetCounter().GetValue()
				}
			}
		}
	}
	if late != 1 {
		t.Fatalf("braid_speed_late_events_total{stream=orders} = %v, want 1", late)
	}
}

// Records delivered to a process that died without acknowledging them come
// back only after the ack wait, behind newer ones: the layer holds the newer
// ones back and commits only a contiguous prefix, so the answer stays exact.
func TestGapFromUnackedDeliveries(t *testing.T) {
	e := setup(t)
	e.publish(t, 300, 0)
	_, stop, _ := e.layer(t)
	eventually(t, "first pass", e.verify)
	stop()
	e.publish(t, 500, 0)
	// A "crashed" speed process (its own connection) fetched the next
	// records and never acked.
	pos, _, err := e.store.Position(context.Background(), "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	nc, js := e.nats.JetStream(t)
	crashed, err := eventlog.Open(context.Background(), js, e.cat.StreamOrder, eventlog.Options{Namespace: e.ns, DedupWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	c, err := crashed.Consumer(context.Background(), "orders", 0, "speed", eventlog.Start{Seq: pos.Seq + 1}, 1200)
	if err != nil {
		t.Fatal(err)
	}
	// The first delivery may take longer than one Fetch waits: wait for it.
	var got []eventlog.Msg
	for deadline := time.Now().Add(30 * time.Second); len(got) == 0 && time.Now().Before(deadline); {
		if got, err = c.Fetch(context.Background(), 120, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) == 0 || got[0].Seq != pos.Seq+1 {
		t.Fatalf("fetched %d records, first want %d", len(got), pos.Seq+1)
	}
	// The process dies: its connection goes, and with it the pulls that
	// would otherwise keep taking the redeliveries; nothing is acked or
	// nacked, so the fetched records come back only after the ack wait.
	nc.Close()
	_, stop, _ = e.layer(t)
	defer stop()
	eventually(t, "after the gap filled", e.verify)
}

// TestPositionPastTheLogRebuilds: a Redis that kept the state of another
// log (the NATS store was replaced) holds a position past this log's end;
// the speed layer rebuilds instead of waiting for records that never come.
func TestPositionPastTheLogRebuilds(t *testing.T) {
	e := setup(t)
	stale := e.cat.Views["by_country"].NewDelta()
	ev := logic.Event{Time: e.base.UnixMilli(), Values: make([]logic.Value, len(e.cat.Streams["orders"].Fields))}
	stale.Fold(0, &ev)
	if err := e.store.Commit(context.Background(), "orders", 0, 0, speedstore.Position{Seq: 90000, Owner: "old"}, 0, []*logic.Delta{stale}); err != nil {
		t.Fatal(err)
	}
	e.publish(t, 400, 0)
	_, stop, _ := e.layer(t)
	defer stop()
	eventually(t, "a rebuild from the new log", e.verify)
}

// TestFarFutureEventKeepsTheWatermark: on a stream without max_future, an
// event stamped 9999-12-31 is folded but moves the watermark only a minute
// past its arrival (the log's timestamp). The real events after it,
// stamped up to 30 minutes before now (allowed lateness 1h), are folded
// too, not too late, and the speed store holds every one of them; an event
// three hours old is still too late.
func TestFarFutureEventKeepsTheWatermark(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	s := e.cat.Streams["orders"]
	if s.MaxFuture != 0 {
		t.Fatalf("the test stream sets max_future %v", s.MaxFuture)
	}
	l, stop, _ := e.layer(t)
	defer stop()
	// publish appends the events as one log record.
	publish := func(evs ...map[string]any) {
		t.Helper()
		var recs []eventlog.Record
		for _, ev := range evs {
			raw, _ := json.Marshal(ev)
			pe, rec, err := s.Prepare(raw, time.Now().UnixMilli())
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, eventlog.Record{ID: pe.ID, Data: rec})
		}
		if err := e.log.Publish(ctx, "orders", recs); err != nil {
			t.Fatal(err)
		}
	}
	folded := func(seq, late uint64) func() string {
		return func() string {
			if st := l.Status()["orders"].Partitions[0]; st.Seq != seq || st.Late != late {
				return fmt.Sprintf("status %+v, want seq %d with %d too late", st, seq, late)
			}
			return ""
		}
	}

	far := map[string]any{"ts": time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC).UnixMilli(), "id": "far", "country": "DE", "amount": 1.5}
	publish(far)
	e.sent = append(e.sent, far)
	eventually(t, "the far-future event folded", folded(1, 0))
	_, js := e.nats.JetStream(t)
	st, err := js.Stream(ctx, e.log.StreamName("orders", 0))
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	arrival := m.Time.UnixMilli()
	if wm := l.Status()["orders"].Partitions[0].Watermark; wm != arrival+time.Minute.Milliseconds() {
		t.Fatalf("watermark %s after the far-future event, want its arrival %s plus one minute", logic.FormatTime(wm), logic.FormatTime(arrival))
	}

	// Real events, in five records, then one three hours old.
	now := time.Now()
	wantWM := arrival + time.Minute.Milliseconds()
	for r := 0; r < 5; r++ {
		var evs []map[string]any
		for i := 0; i < 20; i++ {
			ts := now.Add(-time.Duration(e.rng.IntN(1800)) * time.Second).UnixMilli()
			evs = append(evs, map[string]any{"ts": ts, "id": fmt.Sprintf("r%d-%d", r, i),
				"country": []string{"DE", "FR", "US"}[e.rng.IntN(3)], "amount": float64(e.rng.IntN(10000)) / 100})
			wantWM = max(wantWM, ts)
		}
		publish(evs...)
		e.sent = append(e.sent, evs...)
	}
	publish(map[string]any{"ts": now.Add(-3 * time.Hour).UnixMilli(), "id": "old", "country": "FR", "amount": 2.0})
	eventually(t, "the real events folded", folded(7, 1))
	eventually(t, "the speed store holds every event but the too-late one", func() string { return e.verifyEvents(e.sent, 0) })
	pos, _, err := e.store.Position(ctx, "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	if pos.Watermark != wantWM {
		t.Fatalf("stored watermark %s, want %s (the largest of the far-future event's arrival plus a minute and the real event times)",
			logic.FormatTime(pos.Watermark), logic.FormatTime(wantWM))
	}
}
