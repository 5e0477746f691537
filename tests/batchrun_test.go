package tests

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/tests/testenv"
)

// batchRunCatalog has sketch measures, whose values are exact only in
// rows the batch layer answers alone.
func batchRunCatalog(batch string) testenv.Catalog {
	orders := testenv.Orders()
	orders.PII = nil
	return testenv.Catalog{
		Epoch:   "2s",
		Batch:   batch,
		Archive: "max_delay: 1s",
		Streams: []testenv.Stream{orders},
		Views: []testenv.View{{
			Name: "buyers_by_country", Stream: "orders", Window: "10m", GroupBy: []string{"country"},
			Measures: []string{"orders: count()", "buyers: count_distinct(email)", "median: quantile(amount, 0.5)", "p95: quantile(amount, 0.95)"},
		}},
	}
}

// batchRun is the part of a run record these tests read.
type batchRun struct {
	ID            string            `json:"id"`
	Status        string            `json:"status"`
	RequestedAt   *time.Time        `json:"requested_at"`
	Started       time.Time         `json:"started"`
	CoversRequest *bool             `json:"covers_request"`
	Cutoffs       runCutoffs        `json:"cutoffs"`
	RowsRead      int64             `json:"rows_read"`
	FailedViews   map[string]string `json:"failed_views"`
}

func (r batchRun) covers() string {
	if r.CoversRequest == nil {
		return "absent"
	}
	return fmt.Sprint(*r.CoversRequest)
}

// quantileCont is DuckDB's quantile_cont: the value at rank q·(n−1),
// interpolated between its neighbours.
func quantileCont(xs []float64, q float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	rank := q * float64(len(s)-1)
	lo := int(rank)
	v := s[lo]
	if lo+1 < len(s) {
		v += (rank - float64(lo)) * (s[lo+1] - s[lo])
	}
	return v
}

// checkBatchAnswer compares every row of buyers_by_country with a
// computation from the orders: each must come from the batch layer alone,
// exact, with the exact distinct count and quantiles.
func checkBatchAnswer(t *testing.T, base string, from, to time.Time, orders []order) {
	t.Helper()
	type cell struct {
		n       int
		emails  map[string]bool
		amounts []float64
	}
	want := map[string]*cell{}
	for _, o := range orders {
		ts, _ := time.Parse(time.RFC3339Nano, o.TS)
		k := ts.UTC().Truncate(10*time.Minute).Format(time.RFC3339) + "|" + o.Country
		c := want[k]
		if c == nil {
			c = &cell{emails: map[string]bool{}}
			want[k] = c
		}
		c.n++
		c.emails[o.Email] = true
		c.amounts = append(c.amounts, o.Amount)
	}
	var q queryResp
	url := fmt.Sprintf("%s/v1/views/buyers_by_country?from=%s&to=%s", base, from.Format(time.RFC3339), to.Format(time.RFC3339))
	if code := httpJSON(t, "GET", url, "", nil, &q); code != 200 {
		t.Fatalf("query: status %d", code)
	}
	if len(q.Rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(q.Rows), len(want))
	}
	near := func(got any, want float64) bool {
		g, ok := got.(float64)
		return ok && math.Abs(g-want) <= 1e-9*math.Max(1, math.Abs(want))
	}
	for _, r := range q.Rows {
		k := fmt.Sprint(r["window_start"]) + "|" + fmt.Sprint(r["country"])
		c := want[k]
		if c == nil {
			t.Fatalf("unexpected row %s", k)
		}
		if r["source"] != "batch" || r["exact"] != true {
			t.Fatalf("row %s: source %v, exact %v; want batch, exact", k, r["source"], r["exact"])
		}
		if !near(r["orders"], float64(c.n)) || !near(r["buyers"], float64(len(c.emails))) ||
			!near(r["median"], quantileCont(c.amounts, 0.5)) || !near(r["p95"], quantileCont(c.amounts, 0.95)) {
			t.Fatalf("row %s: orders %v buyers %v median %v p95 %v; want %d, %d, %v, %v", k, r["orders"], r["buyers"], r["median"], r["p95"],
				c.n, len(c.emails), quantileCont(c.amounts, 0.5), quantileCont(c.amounts, 0.95))
		}
	}
}

// buyerOrders are n orders with event times in the hour before now, from a
// small set of buyers so distinct counts differ from order counts.
func buyerOrders(rng *rand.Rand, start time.Time, n, from int) []order {
	countries := []string{"DE", "FR", "US", "JP"}
	out := make([]order, n)
	for i := range out {
		out[i] = order{
			TS:      start.Add(time.Duration(rng.Int64N(int64(50 * time.Minute)))).UTC().Format(time.RFC3339Nano),
			ID:      fmt.Sprintf("b-%d", from+i),
			Country: countries[rng.IntN(len(countries))],
			Amount:  math.Round(rng.Float64()*50000) / 100,
			Items:   1 + rng.IntN(3),
			Email:   fmt.Sprintf("buyer%d@example.com", rng.IntN(60)),
		}
	}
	return out
}

// runRecord reads the run record `braid batch run` prints (one JSON line).
func runRecord(t *testing.T, out string) batchRun {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		var r batchRun
		if strings.HasPrefix(line, "{") && json.Unmarshal([]byte(line), &r) == nil && r.ID != "" {
			return r
		}
	}
	t.Fatalf("no run record in the output of braid batch run:\n%s", out)
	return batchRun{}
}

// TestBatchRunCoversRequest: a batch run asked for right after ingest —
// over HTTP or with `braid batch run` — computes from every event
// acknowledged before it, so the batch layer alone answers every window,
// exactly, distinct counts and quantiles included.
func TestBatchRunCoversRequest(t *testing.T) {
	// A settle timeout no busy machine reaches: the runs must cover their requests.
	st := testenv.Up(t, batchRunCatalog("every: 0, settle_timeout: 5m").YAML(), testenv.WithNATS())
	base := st.Base

	rng := rand.New(rand.NewPCG(13, 2026))
	now := time.Now().UTC()
	start := now.Add(-55 * time.Minute)
	from, to := start.Truncate(10*time.Minute), now.Add(10*time.Minute)
	orders := buyerOrders(rng, start, 2000, 0)
	for _, part := range [][]order{orders[:1000], orders[1000:]} {
		if r := post(t, base, ndjson(part)); r.Accepted != len(part) {
			t.Fatalf("ingest: %+v", r)
		}
	}

	// Right away over HTTP.
	asked := time.Now()
	var run batchRun
	if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 {
		t.Fatalf("batch run: status %d", code)
	}
	if run.Status != "succeeded" || run.covers() != "true" || run.RequestedAt == nil || run.RequestedAt.Before(asked.Add(-time.Second)) || run.RequestedAt.After(run.Started) {
		t.Fatalf("batch run: %+v (covers_request %s), asked at %v", run, run.covers(), asked)
	}
	if run.RowsRead != int64(len(orders)) {
		t.Fatalf("batch run read %d rows, want the %d events sent before it", run.RowsRead, len(orders))
	}
	checkBatchAnswer(t, base, from, to, orders)
	var saved batchRun
	if code := httpJSON(t, "GET", base+"/v1/batch/runs/"+run.ID, "", nil, &saved); code != 200 || saved.covers() != "true" || saved.RequestedAt == nil || !saved.RequestedAt.Equal(*run.RequestedAt) {
		t.Fatalf("run record: status %d, %+v", code, saved)
	}
	t.Logf("HTTP run %s: cutoff %s, %d rows read", run.ID, time.UnixMilli(run.Cutoffs.ms("buyers_by_country")).UTC().Format(time.RFC3339Nano), run.RowsRead)

	// Right away with `braid batch run`, a process of its own.
	more := buyerOrders(rng, start, 600, 2000)
	if r := post(t, base, ndjson(more)); r.Accepted != len(more) {
		t.Fatalf("ingest: %+v", r)
	}
	out, code := testenv.RunBraid(t, "batch", "run", "--config", st.Config)
	if code != 0 {
		t.Fatalf("braid batch run: exit %d\n%s", code, out)
	}
	cli := runRecord(t, out)
	all := append(append([]order(nil), orders...), more...)
	if cli.Status != "succeeded" || cli.covers() != "true" || cli.RowsRead != int64(len(all)) || !strings.Contains(out, "covers_request=yes") {
		t.Fatalf("braid batch run: %+v (covers_request %s), want %d rows read\n%s", cli, cli.covers(), len(all), out)
	}
	checkBatchAnswer(t, base, from, to, all)
}

// TestBatchRunSettleTimeout: without an archiver the lake never covers the
// request; after the (tiny) settle timeout the run still succeeds with the
// cutoff it has and says it does not cover the request.
func TestBatchRunSettleTimeout(t *testing.T) {
	st := testenv.NewStack(t, batchRunCatalog("every: 0, settle_timeout: 1ms").YAML(), testenv.WithNATS())
	st.Start("serve") // no archiver
	base := st.Base

	orders := buyerOrders(rand.New(rand.NewPCG(7, 13)), time.Now().Add(-time.Hour), 300, 0)
	if r := post(t, base, ndjson(orders)); r.Accepted != len(orders) {
		t.Fatalf("ingest: %+v", r)
	}
	var run batchRun
	if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 {
		t.Fatalf("batch run: status %d", code)
	}
	if run.Status != "succeeded" || run.covers() != "false" || run.RequestedAt == nil || run.RowsRead != 0 {
		t.Fatalf("batch run without an archiver: %+v (covers_request %s)", run, run.covers())
	}
	var saved batchRun
	if code := httpJSON(t, "GET", base+"/v1/batch/runs/"+run.ID, "", nil, &saved); code != 200 || saved.covers() != "false" || saved.Status != "succeeded" {
		t.Fatalf("run record: status %d, %+v", code, saved)
	}
	out, code := testenv.RunBraid(t, "batch", "run", "--config", st.Config)
	if cli := runRecord(t, out); code != 0 || cli.Status != "succeeded" || cli.covers() != "false" || !strings.Contains(out, "covers_request=no") {
		t.Fatalf("braid batch run: exit %d, %+v\n%s", code, cli, out)
	}
}

// TestBatchRunPartialExitCode: a view that fails holds back only itself —
// `braid batch run` publishes the others, says which view failed and exits
// non-zero.
func TestBatchRunPartialExitCode(t *testing.T) {
	cat := batchRunCatalog("every: 0")
	cat.Streams = append(cat.Streams, testenv.Stream{Name: "clicks", Time: "at", Fields: []string{"at: time", "page: string"}})
	cat.Views = append(cat.Views, testenv.View{Name: "clicks", Stream: "clicks", Window: "1m", GroupBy: []string{"page"}, Measures: []string{"n: count()"}})
	st := testenv.Up(t, cat.YAML())
	base, p := st.Base, st.Braid
	orders := buyerOrders(rand.New(rand.NewPCG(3, 5)), time.Now().Add(-time.Hour), 200, 0)
	if r := post(t, base, ndjson(orders)); r.Accepted != len(orders) {
		t.Fatalf("ingest: %+v", r)
	}
	var ir ingestResp
	clicks := fmt.Sprintf(`{"at": %q, "page": "/a"}`, time.Now().UTC().Add(-time.Minute).Format(time.RFC3339))
	if code := httpJSON(t, "POST", base+"/v1/streams/clicks/events", "application/json", []byte(clicks), &ir); code != 200 || ir.Accepted != 1 {
		t.Fatalf("ingest clicks: %d %+v", code, ir)
	}
	// Both streams in the lake, then a run that covers them.
	var run batchRun
	if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 || run.Status != "succeeded" || run.covers() != "true" {
		t.Fatalf("batch run: status %d, %+v", code, run)
	}
	// One more click after the run, in the lake before braid up stops, so
	// the next run computes the unit of clicks again (an unchanged unit is
	// reused, not read).
	clicks = fmt.Sprintf(`{"at": %q, "page": "/b"}`, time.Now().UTC().Add(-time.Minute).Format(time.RFC3339))
	if code := httpJSON(t, "POST", base+"/v1/streams/clicks/events", "application/json", []byte(clicks), &ir); code != 200 || ir.Accepted != 1 {
		t.Fatalf("ingest clicks: %d %+v", code, ir)
	}
	eventually(t, "the second click in the lake", 30*time.Second, func() string {
		var status struct {
			Streams map[string]struct {
				Archive struct {
					Seq uint64 `json:"seq"`
				} `json:"archive"`
			} `json:"streams"`
		}
		if code := httpJSON(t, "GET", base+"/v1/status", "", nil, &status); code != 200 {
			return fmt.Sprintf("status %d", code)
		}
		if seq := status.Streams["clicks"].Archive.Seq; seq < 2 {
			return fmt.Sprintf("clicks archived up to record %d", seq)
		}
		return ""
	})
	if err := p.Stop(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	// The lake of clicks becomes unreadable.
	files, err := filepath.Glob(filepath.Join(st.DataDir, "lake", "clicks", "*", "*.parquet"))
	if err != nil || len(files) == 0 {
		t.Fatalf("clicks lake files %v %v", files, err)
	}
	for _, f := range files {
		writeFile(t, f, "not parquet at all")
	}
	out, code := testenv.RunBraid(t, "batch", "run", "--config", st.Config)
	cli := runRecord(t, out)
	if code == 0 || cli.Status != "partial" || cli.FailedViews["clicks"] == "" || len(cli.FailedViews) != 1 || !strings.Contains(out, "view clicks failed") {
		t.Fatalf("braid batch run over an unreadable lake of clicks: exit %d, %+v\n%s", code, cli, out)
	}
	// The view of orders was published: the current version is this run's.
	views, err := batchviews.OpenDir(filepath.Join(st.DataDir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	if cur, err := views.Current(); err != nil || cur == nil || cur.ID != cli.ID {
		t.Fatalf("current version %+v %v, want the partial run %s", cur, err, cli.ID)
	}
	if cli.Cutoffs.ms("buyers_by_country") <= 0 {
		t.Fatalf("partial run cutoffs %v", cli.Cutoffs)
	}
}
