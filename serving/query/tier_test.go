package query

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/tests/testenv"
)

// batchTierView is testView's definition on the batch tier.
func batchTierView(t *testing.T, s *logic.Stream, name string, window time.Duration) *logic.View {
	t.Helper()
	v, err := logic.NewView(name, logic.ViewDef{Stream: s.Name, Window: window, GroupBy: []string{"country", "device"},
		Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}, {Name: "revenue", Expr: "sum(amount)"}, {Name: "avg", Expr: "avg(amount)"},
			{Name: "lo", Expr: "min(amount)"}, {Name: "hi", Expr: "max(items)"}}, Tier: "batch"}, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// before keeps the events that arrived before cutoff: what a batch
// version of that cutoff holds.
func before(evs []testenv.OrderEvent, cutoff int64) []testenv.OrderEvent {
	var out []testenv.OrderEvent
	for _, e := range evs {
		if e.Epoch < cutoff {
			out = append(out, e)
		}
	}
	return out
}

// TestBatchTierAnswersFromTheBatchLayer: a batch-tier view answers the
// batch rows alone, though the speed layer holds cells of its stream
// (here even of its name), and without reading the speed layer (which
// fails): every row from the batch, its windows final up to the cutoff
// less the allowed lateness, the answer saying its tier; a live view of
// the same stream answers batch ⊕ speed as before, and fails with the
// speed layer. A new batch version moves the batch-tier answer on.
func TestBatchTierAnswersFromTheBatchLayer(t *testing.T) {
	s := testStream(t)
	live := testView(t, s, "live", time.Minute, 0)
	daily := batchTierView(t, s, "daily", time.Minute)
	env := newEngineEnv(t, 11, live, daily)
	lateness := s.AllowedLateness.Milliseconds()
	r := rand.New(rand.NewPCG(4, 4))
	for _, cache := range []int64{0, 64 << 20} {
		e := newEngine(t, env, cache, 0, live, daily)
		for _, cutoff := range []int64{env.base + 20_000, env.base + 30_000} {
			env.publish(t, cutoff, live, daily)
			for i := range 6 {
				from := env.base - 2*60_000 + r.Int64N(12*60_000)
				to := from + 1 + r.Int64N(14*60_000)
				label := fmt.Sprintf("cache %d, cutoff %d, [%d, %d)", cache, cutoff-env.base, from-env.base, to-env.base)
				wm := cutoff - lateness
				body := answerBytes(t, e, daily, env.query(daily, from, to, "json"))
				checkJSON(t, label, body, expect(before(env.evs, cutoff), 60_000, 60_000, from, to, cutoff, wm))
				var head struct {
					Tier, Watermark string
				}
				if err := json.Unmarshal(body, &head); err != nil || head.Tier != "batch" || head.Watermark != logic.FormatTime(wm) {
					t.Fatalf("%s: tier %q, watermark %q (want batch, %s): %v", label, head.Tier, head.Watermark, logic.FormatTime(wm), err)
				}
				if i == 0 {
					body := answerBytes(t, e, live, env.query(live, from, to, "json"))
					checkJSON(t, label+" live", body, expect(env.evs, 60_000, 60_000, from, to, cutoff, env.wm))
					if err := json.Unmarshal(body, &head); err != nil || head.Tier != "live" {
						t.Fatalf("%s: live view's tier %q: %v", label, head.Tier, err)
					}
				}
			}
		}
		// The speed layer fails: the batch-tier view still answers.
		env.speed.mu.Lock()
		env.speed.err = errors.New("speed layer down")
		env.speed.mu.Unlock()
		q := env.query(daily, env.base, env.base+10*60_000, "csv")
		if _, err := e.Answer(context.Background(), daily, q); err != nil {
			t.Fatalf("cache %d: batch-tier view with the speed layer down: %v", cache, err)
		}
		if _, err := e.Answer(context.Background(), live, env.query(live, env.base, env.base+10*60_000, "csv")); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("cache %d: live view with the speed layer down: %v, want ErrUnavailable", cache, err)
		}
		env.speed.mu.Lock()
		env.speed.err = nil
		env.speed.mu.Unlock()
	}
}

// TestBatchTierState: a batch-tier view is ready once the batch version
// holds its definition (or no version exists), whatever the speed layer
// holds; its watermark is its cutoff less the allowed lateness.
func TestBatchTierState(t *testing.T) {
	s := testStream(t)
	v := batchTierView(t, s, "daily", time.Hour)
	ver := func(d string, cutoff int64) *batchviews.Version {
		return &batchviews.Version{ID: "x", Views: map[string]batchviews.ViewVersion{"daily": {Cutoff: cutoff, Definition: d}}}
	}
	noSpeed := StreamSpeed{} // the speed layer keeps no state of it
	for _, c := range []struct {
		name  string
		ver   *batchviews.Version
		ready bool
		wm    int64
	}{
		{"its rows", ver(v.Definition(), 90_000), true, 60_000},
		{"no version yet", nil, true, 0},
		{"rows of another definition", ver("0123456789abcdef", 90_000), false, 0},
		{"not in the version", &batchviews.Version{ID: "x", Views: map[string]batchviews.ViewVersion{}}, false, 0},
	} {
		st := StateOf(v, c.ver, noSpeed, true, true)
		if st.Ready != c.ready {
			t.Errorf("%s: ready %v, want %v", c.name, st.Ready, c.ready)
		}
		if wm := Watermark(v, st, noSpeed); wm != c.wm {
			t.Errorf("%s: watermark %d, want %d", c.name, wm, c.wm)
		}
	}
}

// TestFreshness: a batch-tier view is as fresh as its cutoff; a live
// view 0 while the speed layer has folded the whole log, else the time
// since the last arrival it folded in the stalest partition, its cutoff
// without a position.
func TestFreshness(t *testing.T) {
	s := testStream(t)
	liveV := testView(t, s, "live", time.Minute, 0)
	batchV := batchTierView(t, s, "daily", time.Minute)
	const now = 1_000_000
	cut := func(c int64) ViewState {
		return ViewState{Ready: true, Batch: &batchviews.ViewVersion{Cutoff: c}}
	}
	part := func(seq uint64, arrival int64) PartSpeed {
		return PartSpeed{Found: true, Seq: seq, LastArrival: arrival}
	}
	two := SpeedOf([]PartSpeed{part(10, now-3_000), part(20, now-7_000)})
	for _, c := range []struct {
		name string
		v    *logic.View
		st   ViewState
		pos  StreamSpeed
		ends []uint64
		want int64
		ok   bool
	}{
		{"batch tier: its cutoff", batchV, cut(now - 60_000), two, []uint64{10, 20}, 60_000, true},
		{"batch tier without a cutoff", batchV, ViewState{Ready: true}, two, nil, 0, false},
		{"live, caught up", liveV, cut(now - 60_000), two, []uint64{10, 20}, 0, true},
		{"live, one partition behind", liveV, cut(now - 60_000), two, []uint64{12, 20}, 3_000, true},
		{"live, both behind: the stalest", liveV, cut(now - 60_000), two, []uint64{12, 25}, 7_000, true},
		{"live, the log's end unknown", liveV, cut(now - 60_000), two, nil, 7_000, true},
		{"live without a position: its cutoff", liveV, cut(now - 60_000), StreamSpeed{}, nil, 60_000, true},
		{"live, a partition without a position", liveV, cut(now - 60_000), SpeedOf([]PartSpeed{part(10, now-3_000), {}}), nil, 60_000, true},
		{"live, last arrival unknown while behind", liveV, ViewState{Ready: true}, SpeedOf([]PartSpeed{part(10, 0)}), []uint64{11}, 0, false},
		{"live, an arrival after now", liveV, cut(now - 60_000), SpeedOf([]PartSpeed{part(10, now+500)}), []uint64{11}, 0, true},
	} {
		got, ok := Freshness(c.v, c.st, c.pos, c.ends, now)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: %d %v, want %d %v", c.name, got, ok, c.want, c.ok)
		}
	}
}
