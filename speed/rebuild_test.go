package speed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/speed"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// The configuration after an edit: by_country unchanged, total's window
// changed (a new definition), peak new.
const editedYAML = speed.OrdersYAML + "views:" + byCountryYAML + `  total:
    stream: orders
    window: 5m
    measures: { n: count() }
  peak:
    stream: orders
    window: 1m
    group_by: [country]
    measures: { top: max(amount), n: count() }
`

// TestChangedViewsRebuildBesideTheOthers: after a restart with a changed
// and a new view, the unchanged view keeps its state and position while
// the two are rebuilt from the log — beside a stream that goes on
// receiving events — and join its commits; then every view holds exactly
// the events the log holds (too-late ones left out, as the stream's own
// commits left them out), and the old definition's state is gone.
func TestChangedViewsRebuildBesideTheOthers(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	e.publish(t, 1500, 50)
	_, stop, _ := e.layer(t)
	eventually(t, "first pass", e.verify)
	// Too-late events (3 h behind the watermark): skipped and recorded.
	late := e.publishLate(t, 40)
	eventually(t, "late events recorded", func() string {
		refs, err := e.log.LateEvents(ctx, "orders", 1000)
		if err != nil || len(refs) != late {
			return fmt.Sprintf("%d late records, want %d (%v)", len(refs), late, err)
		}
		return e.verify()
	})
	stop()
	oldTotal := e.cat.Views["total"].StateKey()
	before, _, err := e.store.Position(ctx, "orders", 0)
	if err != nil {
		t.Fatal(err)
	}

	cfg, err := config.Parse([]byte(editedYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	if cat.Views["by_country"].StateKey() != e.cat.Views["by_country"].StateKey() || cat.Views["total"].StateKey() == oldTotal {
		t.Fatal("definitions: by_country must keep its own, total must change")
	}
	e.cat = cat
	l := speed.New(speed.Config{BatchSize: 20, MaxWait: 20 * time.Millisecond, Epoch: time.Second, MaxCells: 100}, e.log, e.store,
		zero{}, nil, cat, testenv.Logger(t), nil)
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = l.Run(rctx) }()
	defer func() { cancel(); wg.Wait() }()
	// The stream goes on while the views rebuild.
	for range 10 {
		e.publish(t, 100, 5)
		time.Sleep(20 * time.Millisecond)
	}
	sawRebuilding := false
	eventually(t, "every view joined and exact", func() string {
		pos, _, err := e.store.Position(ctx, "orders", 0)
		if err != nil {
			return err.Error()
		}
		if vp := pos.Views[cat.Views["by_country"].StateKey()]; !vp.JoinedOK || vp.Joined != pos.Seq {
			return fmt.Sprintf("by_country fell out of step: %+v at %d", vp, pos.Seq)
		}
		for _, n := range []string{"total", "peak"} {
			vp := pos.Views[cat.Views[n].StateKey()]
			if vp.Rebuilding {
				sawRebuilding = true
			}
			if !vp.JoinedOK || vp.Joined != pos.Seq {
				return fmt.Sprintf("%s not joined: %+v at %d", n, vp, pos.Seq)
			}
		}
		return e.verifyEdited()
	})
	t.Logf("position %d before the restart; rebuilding seen: %v", before.Seq, sawRebuilding)
	keys, err := e.store.StateKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(keys, oldTotal) {
		t.Fatalf("the old definition's state is still there: %v", keys)
	}
	pos, _, _ := e.store.Position(ctx, "orders", 0)
	if _, ok := pos.Views[oldTotal]; ok {
		t.Fatalf("the old definition is still in the position: %+v", pos.Views)
	}
	// The rebuild's consumers are gone once done.
	for _, n := range []string{"total", "peak"} {
		v := cat.Views[n]
		js := e.log.JetStream()
		s, err := js.Stream(ctx, e.log.StreamName("orders", 0))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Consumer(ctx, "rebuild_"+v.Name+"_"+v.Definition()); err == nil {
			t.Fatalf("the rebuild consumer of %s is still there", n)
		}
	}
}

// publishLate appends n events 3 hours behind the watermark, not counted in
// e.sent (the speed layer skips them); it returns n.
func (e *env) publishLate(t *testing.T, n int) int {
	t.Helper()
	s := e.cat.Streams["orders"]
	var recs []eventlog.Record
	for i := range n {
		ev := map[string]any{"ts": e.base.Add(-3 * time.Hour).Add(time.Duration(i) * time.Second).UnixMilli(), "id": fmt.Sprintf("late%d", i),
			"country": "DE", "amount": 1e6}
		raw, _ := json.Marshal(ev)
		pe, rec, err := s.Prepare(raw, time.Now().UnixMilli())
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, eventlog.Record{ID: pe.ID, Data: rec})
	}
	for len(recs) > 0 {
		part := recs[:min(len(recs), 3)]
		if err := e.log.Publish(context.Background(), "orders", part); err != nil {
			t.Fatal(err)
		}
		recs = recs[len(part):]
	}
	return n
}

// verifyEdited checks every view of editedYAML against a direct
// computation over e.sent.
func (e *env) verifyEdited() string {
	return e.verifyViews(e.sent, 0, []viewCheck{
		{"by_country", 60000, true, func(f []any, a *agg) bool {
			return f[0] == int64(a.n) && math.Abs(f[1].(float64)-a.sum) <= 1e-6 && f[2] == a.lo && f[3] == a.hi
		}},
		{"total", 300000, false, func(f []any, a *agg) bool { return f[0] == int64(a.n) }},
		{"peak", 60000, true, func(f []any, a *agg) bool { return f[0] == a.hi && f[1] == int64(a.n) }},
	})
}
