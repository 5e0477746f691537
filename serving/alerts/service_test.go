package alerts

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/alertbox"
	"github.com/braid-data/braid/tests/testenv"
)

// fakeSource serves rows the test sets (the query engine is tested on its
// own; here the evaluator's use of it).
type fakeSource struct {
	mu      sync.Mutex
	ans     query.RowsAnswer
	changes chan struct{}
}

func (f *fakeSource) Watch(string) (<-chan struct{}, func()) { return f.changes, func() {} }

func (f *fakeSource) Rows(_ context.Context, _ *logic.View, q query.Query) (query.RowsAnswer, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.ans
	out.Rows = nil
	for _, r := range f.ans.Rows {
		if r.Window >= q.From && r.Window < q.To {
			out.Rows = append(out.Rows, r)
		}
	}
	return out, nil
}

func (f *fakeSource) set(version string, wm int64, rows ...query.ResultRow) {
	f.mu.Lock()
	f.ans = query.RowsAnswer{Version: version, Watermark: wm, Rows: rows}
	f.mu.Unlock()
	select {
	case f.changes <- struct{}{}:
	default:
	}
}

// allShares runs every alert here.
type allShares struct{}

func (allShares) Run(ctx context.Context, alerts []string, work func(context.Context, string) error) error {
	var wg sync.WaitGroup
	for _, a := range alerts {
		wg.Add(1)
		go func() { defer wg.Done(); _ = work(ctx, a) }()
	}
	wg.Wait()
	return nil
}

// countingOutbox records what an evaluator publishes.
type countingOutbox struct {
	*alertbox.Box
	mu  sync.Mutex
	ids []string
}

func (c *countingOutbox) Publish(ctx context.Context, r alertbox.Record) error {
	if err := c.Box.Publish(ctx, r); err != nil {
		return err
	}
	c.mu.Lock()
	c.ids = append(c.ids, r.ID)
	c.mu.Unlock()
	return nil
}

func (c *countingOutbox) published() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.ids...)
}

// TestEvaluatorRestart: an evaluator decides each row's records once; a
// second one, started over the same outbox (a restart, another process
// taking the alert over), rebuilds the state and decides nothing again
// for the same rows, then goes on with what changes.
func TestEvaluatorRestart(t *testing.T) {
	cat := decideCatalog(t)
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	box, err := alertbox.Open(t.Context(), js, alertbox.Options{Namespace: testenv.Namespace(t)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	w := now/30_000*30_000 - 60_000 // a window a minute ago
	row := func(site string, readings int64, avg float64, final bool) query.ResultRow {
		return query.ResultRow{Window: w, Dims: []logic.Value{{Kind: logic.TypeString, S: site}}, Values: []any{readings, avg, avg + 1},
			Source: query.SourceBoth, Exact: true, Final: final}
	}
	src := &fakeSource{changes: make(chan struct{}, 1)}
	start := func(out *countingOutbox) (stop func()) {
		s, err := New(Options{Catalog: cat, Source: src, Outbox: out, Journal: box, Shares: allShares{}, Logger: testenv.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(ctx) }()
		return func() { cancel(); <-done }
	}
	wait := func(out *countingOutbox, want ...string) {
		t.Helper()
		testenv.Eventually(t, "the records", 20*time.Second, func() string {
			got := out.published()
			for _, id := range want {
				found := false
				for _, g := range got {
					found = found || g == id
				}
				if !found {
					return "missing " + id + " in " + joinIDs(got)
				}
			}
			if len(got) != len(want) {
				return "published " + joinIDs(got)
			}
			return ""
		})
	}
	id := func(alert, site, state string) string { return logic.AlertID(alert, w, site, state, "") }

	// One evaluator: a fires (hot and busy), b is busy only.
	first := &countingOutbox{Box: box}
	src.set("v1", w+15_000, row("a", 3, 60, false), row("b", 3, 20, false))
	stop := start(first)
	wait(first, id("hot", "a", "firing"), id("busy", "a", "firing"), id("busy", "b", "firing"))
	// The window becomes final: baselines of the fired rows, hot_final
	// fires a.
	src.set("v1", w+40_000, row("a", 3, 60, true), row("b", 3, 20, true))
	wait(first, id("hot", "a", "firing"), id("busy", "a", "firing"), id("busy", "b", "firing"),
		id("hot", "a", "baseline")+"/v1", id("busy", "a", "baseline")+"/v1", id("busy", "b", "baseline")+"/v1", id("hot_final", "a", "firing"))
	stop()

	// A second evaluator over the same outbox and rows: nothing to decide.
	second := &countingOutbox{Box: box}
	stop = start(second)
	time.Sleep(3 * time.Second) // evaluations every second at least
	if got := second.published(); len(got) != 0 {
		t.Fatalf("a restarted evaluator decided again: %v", got)
	}
	// A batch run changes a: corrected (hot, busy, hot_final), and b
	// crosses hot now.
	src.set("v2", w+40_000, row("a", 4, 70, true), row("b", 4, 55, true))
	wait(second, logic.AlertID("hot", w, "a", "corrected", "v2"), logic.AlertID("busy", w, "a", "corrected", "v2"),
		logic.AlertID("hot_final", w, "a", "corrected", "v2"), logic.AlertID("busy", w, "b", "corrected", "v2"),
		id("hot", "b", "firing"), id("hot_final", "b", "firing"))
	stop()
}

func joinIDs(ids []string) string {
	out := "["
	for i, id := range ids {
		if i > 0 {
			out += " "
		}
		out += id
	}
	return out + "]"
}
