package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// The latency-tier test runs braid up over one data_dir, one NATS and one
// Redis with two views of the orders stream of the same definition, one
// live and one batch-tier, and swaps their tiers across restarts (a
// graceful one, then a kill -9). Every answer is checked against a
// computation from the events the test sent: a batch-tier view answers
// exactly the events acknowledged before the last batch run, from the
// batch layer alone, and keeps nothing in Redis; a live view answers every
// event; an answer with 200 is never wrong while a switched view rebuilds.

// tierViews are the two views with their tiers: OrdersByCountry's
// definition under two names.
func tierViews(ordersTier, otherTier string) []testenv.View {
	a := testenv.OrdersByCountry()
	a.Tier = ordersTier
	b := testenv.OrdersByCountry()
	b.Name, b.Tier = "country_copy", otherTier
	return []testenv.View{a, b}
}

// tierBed is braid up under test and what the test knows of it.
type tierBed struct {
	t          *testing.T
	st         *testenv.Stack
	proc       *testenv.Proc
	head       string // the configuration before its views
	from, to   time.Time
	start      time.Time
	rng        *rand.Rand
	sent       []order // acknowledged
	inBatch    int     // sent[:inBatch] were acknowledged before the last batch run
	tierOf     map[string]string
	stateKeyOf map[string]string // view -> its state key ("name@definition")
}

// answer asks view for the test's range: the status, the answer, and its
// tier header.
func (b *tierBed) answer(view string) (int, queryResp, string, string) {
	b.t.Helper()
	url := fmt.Sprintf("%s/v1/views/%s?from=%s&to=%s", b.st.Base, view, b.from.Format(time.RFC3339), b.to.Format(time.RFC3339))
	resp, err := http.Get(url)
	if err != nil {
		b.t.Fatalf("query %s: %v", view, err)
	}
	defer resp.Body.Close()
	var q struct {
		queryResp
		Tier string `json:"tier"`
	}
	if resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(&q); err != nil {
			b.t.Fatalf("query %s: %v", view, err)
		}
	}
	return resp.StatusCode, q.queryResp, q.Tier, resp.Header.Get("Braid-View-Tier")
}

// want is what view must answer now: every event sent when it is live,
// those the last batch run covered when it is batch-tier.
func (b *tierBed) want(view string) ([]order, []string) {
	if b.tierOf[view] == "batch" {
		return b.sent[:b.inBatch], []string{"batch"}
	}
	return b.sent, []string{"batch", "speed", "batch+speed"}
}

// exact waits until view answers its expected rows, failing at once on an
// answer with 200 that is wrong (a view rebuilding answers 503 meanwhile).
func (b *tierBed) exact(view, when string) {
	b.t.Helper()
	orders, sources := b.want(view)
	want := expect(orders)
	eventually(b.t, view+" exact "+when, 90*time.Second, func() string {
		code, q, tier, header := b.answer(view)
		switch {
		case code == 503:
			return "503 (rebuilding)"
		case code != 200:
			return fmt.Sprintf("status %d", code)
		case tier != b.tierOf[view] || header != b.tierOf[view]:
			b.t.Fatalf("%s %s: tier %q, header %q, want %s", view, when, tier, header, b.tierOf[view])
		}
		if msg := compare(q, want, sources...); msg != "" {
			if b.tierOf[view] == "batch" {
				b.t.Fatalf("%s %s (batch tier, %d events in the batch): %s", view, when, b.inBatch, msg)
			}
			return msg // a live view catches up
		}
		return ""
	})
}

// keys counts the Redis keys of view's speed state.
func (b *tierBed) keys(view string) int {
	b.t.Helper()
	ks, err := b.st.Redis.Client(b.t).Keys(context.Background(), b.st.Namespace+":v:*:"+b.stateKeyOf[view]+":*").Result()
	if err != nil {
		b.t.Fatal(err)
	}
	return len(ks)
}

// send posts n new orders.
func (b *tierBed) send(n int) {
	b.t.Helper()
	orders := genOrders(b.rng, b.start, n, len(b.sent))
	for i := 0; i < len(orders); i += 200 {
		part := orders[i:min(i+200, len(orders))]
		if r := post(b.t, b.st.Base, ndjson(part)); r.Accepted != len(part) {
			b.t.Fatalf("ingest: %+v", r)
		}
	}
	b.sent = append(b.sent, orders...)
}

// batchRun runs the batch layer on demand; it covers every event sent.
func (b *tierBed) batchRun() {
	b.t.Helper()
	var run struct {
		Status        string `json:"status"`
		CoversRequest *bool  `json:"covers_request"`
	}
	if code := httpJSON(b.t, "POST", b.st.Base+"/v1/batch/runs?wait=true", "", nil, &run); code != 200 || run.Status != "succeeded" || run.CoversRequest == nil || !*run.CoversRequest {
		b.t.Fatalf("batch run: %d %+v", code, run)
	}
	b.inBatch = len(b.sent)
}

// restart stops braid up (kill: SIGKILL, else SIGTERM) and starts it again
// with the views' tiers swapped.
func (b *tierBed) restart(kill bool, views []testenv.View) {
	b.t.Helper()
	if kill {
		b.proc.Kill(b.t)
	} else if err := b.proc.Stop(b.t); err != nil {
		b.t.Fatalf("braid up stopped with %v", err)
	}
	c := testenv.Catalog{Views: views}
	writeFile(b.t, b.st.Config, b.head+c.YAML())
	for _, v := range views {
		b.tierOf[v.Name] = v.Tier
	}
	b.proc = b.st.Start("up")
}

// costs reads the views' speed cells and bytes and their freshness from
// /metrics, "" when every view has each.
func (b *tierBed) costs() (cells, bytes map[string]float64, msg string) {
	text := metricsText(b.t, b.st.Base)
	cells, bytes = map[string]float64{}, map[string]float64{}
	for view, tier := range b.tierOf {
		c, ok1 := metricValue(text, `braid_view_speed_cells{view="`+view+`"}`)
		y, ok2 := metricValue(text, `braid_view_speed_bytes{view="`+view+`"}`)
		_, ok3 := metricValue(text, `braid_view_freshness_seconds{tier="`+tier+`",view="`+view+`"}`)
		if !ok1 || !ok2 || !ok3 {
			return nil, nil, "no cost or freshness of " + view + " in /metrics"
		}
		cells[view], bytes[view] = c, y
	}
	return cells, bytes, ""
}

// checkCosts waits until /metrics reports speed state for the live view
// and none for the batch-tier one (the cost is measured at most every
// 30 s), and Redis holds keys for the first only.
func (b *tierBed) checkCosts(live, batch string) {
	b.t.Helper()
	eventually(b.t, "the views' costs in /metrics", 90*time.Second, func() string {
		cells, bytes, msg := b.costs()
		switch {
		case msg != "":
			return msg
		case cells[live] <= 0 || bytes[live] <= 0:
			return fmt.Sprintf("live %s: %v cells, %v bytes", live, cells[live], bytes[live])
		case cells[batch] != 0 || bytes[batch] != 0:
			return fmt.Sprintf("batch-tier %s: %v cells, %v bytes", batch, cells[batch], bytes[batch])
		}
		b.t.Logf("%s (live): %.0f cells, %.0f bytes; %s (batch): none", live, cells[live], bytes[live], batch)
		return ""
	})
	if n := b.keys(live); n == 0 {
		b.t.Fatalf("the live view %s has no keys in Redis", live)
	}
	if n := b.keys(batch); n != 0 {
		b.t.Fatalf("the batch-tier view %s has %d keys in Redis", batch, n)
	}
}

// TestLatencyTiers: a batch-tier view keeps nothing in Redis while a live
// view of the same stream does, answers the batch computation with its
// tier, and costs 0 in /metrics where the live one costs cells and bytes;
// swapping the tiers with a restart (graceful, then kill -9) keeps every
// answer exact: the view turned batch-tier answers from the batch layer
// at once and drops its state, the one turned live is rebuilt from the
// log from the batch cutoff.
func TestLatencyTiers(t *testing.T) {
	c := testenv.E2E()
	c.Views = tierViews("live", "batch")
	st := testenv.NewStack(t, c.YAML())
	cfg, err := os.ReadFile(st.Config)
	if err != nil {
		t.Fatal(err)
	}
	head, _, ok := strings.Cut(string(cfg), "views:\n")
	if !ok {
		t.Fatal("the configuration has no views")
	}
	start := time.Now().UTC().Truncate(time.Minute).Add(-70 * time.Minute)
	b := &tierBed{t: t, st: st, head: head, start: start, from: start.Add(-time.Hour), to: start.Add(3 * time.Hour),
		rng: rand.New(rand.NewPCG(18, 4)), tierOf: map[string]string{"orders_by_country": "live", "country_copy": "batch"}, stateKeyOf: map[string]string{}}
	b.proc = st.Start("up")
	st.WaitViewsReady()
	// The run braid up starts for views new to the batch layer is done
	// before any event is sent: the batch-tier view holds none of them.
	eventually(t, "the first batch run", 60*time.Second, func() string {
		var s struct {
			Batch struct {
				Version *string
				LastRun *struct{ Status string } `json:"last_run"`
			}
		}
		if code := httpJSON(t, "GET", st.Base+"/v1/status", "", nil, &s); code != 200 {
			return fmt.Sprintf("status %d", code)
		}
		if s.Batch.Version == nil || s.Batch.LastRun == nil || s.Batch.LastRun.Status == "running" {
			return "no batch version yet"
		}
		return ""
	})
	var views struct {
		Views []struct{ Name, Definition, Tier string }
	}
	if code := httpJSON(t, "GET", st.Base+"/v1/views", "", nil, &views); code != 200 || len(views.Views) != 2 {
		t.Fatalf("views: %d %+v", code, views)
	}
	for _, v := range views.Views {
		if v.Tier != b.tierOf[v.Name] {
			t.Fatalf("GET /v1/views: %s tier %q, want %s", v.Name, v.Tier, b.tierOf[v.Name])
		}
		b.stateKeyOf[v.Name] = v.Name + "@" + v.Definition
	}

	// Live and batch tier side by side; the batch-tier view's live push
	// moves with batch runs only.
	events, _ := openSSE(t, fmt.Sprintf("%s/v1/views/country_copy/live?from=%s&to=%s", st.Base, b.from.Format(time.RFC3339), b.to.Format(time.RFC3339)), "")
	pushed := &liveState{rows: map[string]map[string]any{}, kinds: map[string]int{}}
	drainUntil(t, events, pushed, "the batch-tier view's snapshot", func() string {
		if pushed.kinds["snapshot"] == 0 {
			return "no snapshot"
		}
		return ""
	})
	b.send(600)
	b.exact("orders_by_country", "before a batch run")
	b.exact("country_copy", "before a batch run") // none of the events yet
	for drained := false; !drained; {
		select {
		case ev := <-events:
			pushed.apply(t, ev)
		default:
			drained = true
		}
	}
	if pushed.kinds["rows"] != 0 || len(pushed.rows) != 0 {
		t.Fatalf("the batch-tier view pushed rows before a batch run: %v", pushed.kinds)
	}
	b.batchRun()
	drainUntil(t, events, pushed, "the batch-tier view's push after a batch run", func() string {
		return compare(pushed.answer(), expect(b.sent[:b.inBatch]), "batch")
	})
	b.exact("country_copy", "after a batch run")
	b.exact("orders_by_country", "after a batch run")
	b.send(150)
	b.exact("orders_by_country", "with events after the run")
	b.exact("country_copy", "with events after the run")
	b.checkCosts("orders_by_country", "country_copy")
	var status struct {
		Views map[string]struct {
			Tier        string
			FreshnessMs *int64                        `json:"freshness_ms"`
			SpeedCost   *struct{ Cells, Bytes int64 } `json:"speed_cost"`
		}
	}
	if code := httpJSON(t, "GET", st.Base+"/v1/status", "", nil, &status); code != 200 {
		t.Fatalf("status: %d", code)
	}
	for name, tier := range b.tierOf {
		v := status.Views[name]
		if v.Tier != tier || v.FreshnessMs == nil || v.SpeedCost == nil || (tier == "batch") != (v.SpeedCost.Cells == 0) {
			t.Fatalf("status of %s: %+v", name, v)
		}
	}

	// Swap the tiers over a graceful restart.
	b.restart(false, tierViews("batch", "live"))
	b.exact("orders_by_country", "turned batch-tier")
	b.exact("country_copy", "turned live")
	b.send(200)
	b.exact("country_copy", "turned live, with new events")
	b.exact("orders_by_country", "turned batch-tier, with new events")
	b.batchRun()
	b.exact("orders_by_country", "turned batch-tier, after a batch run")
	b.exact("country_copy", "turned live, after a batch run")
	b.checkCosts("country_copy", "orders_by_country")

	// And back, over a kill -9.
	b.send(100)
	b.restart(true, tierViews("live", "batch"))
	b.exact("orders_by_country", "live again")
	b.exact("country_copy", "batch-tier again")
	b.send(100)
	b.exact("orders_by_country", "live again, with new events")
	b.batchRun()
	b.exact("country_copy", "batch-tier again, after a batch run")
	b.exact("orders_by_country", "live again, after a batch run")
	b.checkCosts("orders_by_country", "country_copy")
}
