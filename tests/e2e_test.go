package tests

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"

	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/tests/testenv"
)

type order struct {
	TS      string  `json:"ts"`
	ID      string  `json:"order_id"`
	Country string  `json:"country"`
	Amount  float64 `json:"amount"`
	Items   int     `json:"items"`
	Email   string  `json:"email"`
}

// expected is the independent computation: per minute and country.
type agg struct {
	n             int64
	sum, min, max float64
	items         int64
}

func expect(orders []order) map[string]*agg {
	out := map[string]*agg{}
	for _, o := range orders {
		ts, _ := time.Parse(time.RFC3339Nano, o.TS)
		k := ts.UTC().Truncate(time.Minute).Format(time.RFC3339) + "|" + o.Country
		a := out[k]
		if a == nil {
			a = &agg{min: math.Inf(1), max: math.Inf(-1)}
			out[k] = a
		}
		a.n++
		a.sum += o.Amount
		a.min = math.Min(a.min, o.Amount)
		a.max = math.Max(a.max, o.Amount)
		a.items += int64(o.Items)
	}
	return out
}

func genOrders(rng *rand.Rand, base time.Time, n, from int) []order {
	countries := []string{"DE", "FR", "US", "GB", "JP"}
	out := make([]order, n)
	for i := range out {
		out[i] = order{
			TS:      base.Add(time.Duration(rng.Int64N(int64(60 * time.Minute)))).UTC().Format(time.RFC3339Nano),
			ID:      fmt.Sprintf("o-%d", from+i),
			Country: countries[rng.IntN(len(countries))],
			Amount:  math.Round(rng.Float64()*20000) / 100,
			Items:   1 + rng.IntN(4),
			Email:   fmt.Sprintf("buyer%d@example.com", rng.IntN(300)),
		}
	}
	return out
}

func ndjson(orders []order) []byte {
	var b bytes.Buffer
	for _, o := range orders {
		j, _ := json.Marshal(o)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

type ingestResp struct {
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
	Errors   []struct {
		Index int    `json:"index"`
		Error string `json:"error"`
	} `json:"errors"`
}

func post(t *testing.T, base string, body []byte) ingestResp {
	t.Helper()
	var r ingestResp
	if code := httpJSON(t, "POST", base+"/v1/streams/orders/events", "application/x-ndjson", body, &r); code != 200 {
		t.Fatalf("ingest: status %d", code)
	}
	return r
}

type queryResp struct {
	View        string           `json:"view"`
	BatchCutoff *string          `json:"batch_cutoff"`
	Rows        []map[string]any `json:"rows"`
}

// compare checks the merged rows against the expectation exactly (floats to
// 1e-9 relative) and that every row's source is one of sources.
func compare(q queryResp, want map[string]*agg, sources ...string) string {
	if len(q.Rows) != len(want) {
		return fmt.Sprintf("%d rows, want %d", len(q.Rows), len(want))
	}
	for _, r := range q.Rows {
		k := fmt.Sprint(r["window_start"]) + "|" + fmt.Sprint(r["country"])
		a := want[k]
		if a == nil {
			return "unexpected row " + k
		}
		src := fmt.Sprint(r["source"])
		ok := false
		for _, s := range sources {
			ok = ok || s == src
		}
		if !ok {
			return fmt.Sprintf("row %s source %s, want %v", k, src, sources)
		}
		if r["exact"] != true {
			return "row " + k + " not exact"
		}
		checks := []struct {
			name string
			want float64
		}{{"orders", float64(a.n)}, {"revenue", a.sum}, {"basket_avg", a.sum / float64(a.n)}, {"biggest", a.max}, {"smallest", a.min}, {"items", float64(a.items)}}
		for _, c := range checks {
			got, ok := r[c.name].(float64)
			if !ok || math.Abs(got-c.want) > 1e-9*math.Max(1, math.Abs(c.want)) {
				return fmt.Sprintf("row %s %s = %v, want %v", k, c.name, r[c.name], c.want)
			}
		}
	}
	return ""
}

func query(t *testing.T, base string, from, to time.Time) queryResp {
	t.Helper()
	var q queryResp
	url := fmt.Sprintf("%s/v1/views/orders_by_country?from=%s&to=%s", base, from.Format(time.RFC3339), to.Format(time.RFC3339))
	if code := httpJSON(t, "GET", url, "", nil, &q); code != 200 {
		t.Fatalf("query: status %d", code)
	}
	return q
}

func TestEndToEnd(t *testing.T) {
	st := testenv.Up(t, testenv.E2E().YAML())
	base, p := st.Base, st.Braid

	rng := rand.New(rand.NewPCG(2026, 11))
	start := time.Now().UTC().Truncate(time.Minute).Add(-90 * time.Minute)
	from, to := start, start.Add(60*time.Minute)
	orders := genOrders(rng, start, 3000, 0)

	// Phase 1: 3000 events (and a few bad ones) in shuffled order; speed only.
	bad := []byte(`{"ts":"not a time","country":"DE","amount":1}` + "\n" + `{"ts":"2026-01-01T00:00:00Z","amount":"x","country":"DE"}` + "\n" + `{oops` + "\n")
	r := post(t, base, append(bad, ndjson(orders[:1500])...))
	r2 := post(t, base, ndjson(orders[1500:]))
	if r.Accepted+r2.Accepted != 3000 || r.Rejected != 3 || r2.Rejected != 0 {
		t.Fatalf("ingest: accepted %d+%d rejected %d+%d (%+v)", r.Accepted, r2.Accepted, r.Rejected, r2.Rejected, r.Errors)
	}
	var dlq struct {
		Events []map[string]any `json:"events"`
	}
	if code := httpJSON(t, "GET", base+"/v1/dlq/orders", "", nil, &dlq); code != 200 || len(dlq.Events) != 3 {
		t.Fatalf("dlq: status %d, %d events, want 3", code, len(dlq.Events))
	}
	want := expect(orders)
	eventually(t, "speed-only answer", 60*time.Second, func() string {
		return compare(query(t, base, from, to), want, "speed")
	})
	t.Logf("phase 1: %d rows exact from the speed layer", len(want))

	// Phase 2: a batch run absorbs everything (the cutoff passes the last arrival).
	eventually(t, "batch-only answer", 90*time.Second, func() string {
		var run map[string]any
		if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 {
			return fmt.Sprintf("batch run status %d: %v", code, run)
		}
		if run["status"] != "succeeded" {
			return fmt.Sprintf("batch run: %v", run)
		}
		q := query(t, base, from, to)
		if q.BatchCutoff == nil {
			return "no batch_cutoff"
		}
		return compare(q, want, "batch")
	})
	t.Logf("phase 2: exact from the batch layer alone")
	checkBuyers(t, base, start, orders)

	// Phase 3: more events past the cutoff, plus a client retry of 200 of them.
	more := genOrders(rng, start, 600, 3000)
	r = post(t, base, ndjson(more))
	r2 = post(t, base, ndjson(more[:200]))
	if r.Accepted != 600 || r2.Accepted != 200 {
		t.Fatalf("phase 3 ingest: %+v %+v", r, r2)
	}
	all := append(append([]order{}, orders...), more...)
	want = expect(all)
	eventually(t, "batch+speed answer", 60*time.Second, func() string {
		q := query(t, base, from, to)
		if msg := compare(q, want, "batch", "batch+speed", "speed"); msg != "" {
			return msg
		}
		merged := 0
		for _, r := range q.Rows {
			if r["source"] == "batch+speed" {
				merged++
			}
		}
		if merged == 0 {
			return "no batch+speed rows"
		}
		return ""
	})
	t.Logf("phase 3: %d rows exact, merged across the cutoff, retry not doubled", len(want))

	// The audit recomputes the speed layer's part from the lake: the 600
	// new events (the retry was stored once), every window within bounds.
	eventually(t, "an audit within bounds", 60*time.Second, func() string {
		var rep struct {
			OK      bool             `json:"ok"`
			Events  int              `json:"events"`
			Windows []map[string]any `json:"windows"`
		}
		if code := httpJSON(t, "GET", base+"/v1/views/buyers_hourly/audit", "", nil, &rep); code != 200 {
			return fmt.Sprintf("audit status %d", code)
		}
		if !rep.OK || rep.Events != 600 || len(rep.Windows) == 0 {
			return fmt.Sprintf("audit: ok %v, %d events, %d windows", rep.OK, rep.Events, len(rep.Windows))
		}
		return ""
	})

	if err := p.Stop(t); err != nil {
		t.Fatalf("SIGTERM: braid exited with %v", err)
	}

	// The lake holds every accepted event exactly once, with PII hashed.
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n, seqs, ids, raw int64
	err = db.QueryRow(`SELECT count(*), count(DISTINCT (_seq, _idx)), count(DISTINCT order_id), count(*) FILTER (WHERE email LIKE '%@%') FROM `+lakeSource(t, st.DataDir, "orders")).Scan(&n, &seqs, &ids, &raw)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3600 || seqs != n || ids != n || raw != 0 {
		t.Fatalf("lake: rows %d, distinct (seq, idx) %d, distinct ids %d, raw emails %d; want 3600 each and 0", n, seqs, ids, raw)
	}

	// `braid batch run` against the same data dir: a run over every event
	// that arrived before its cutoff (checked against the lake with DuckDB).
	out, code := testenv.RunBraid(t, "batch", "run", "--config", st.Config)
	if code != 0 {
		t.Fatalf("braid batch run: exit %d\n%s", code, out)
	}
	var run struct {
		Status   string     `json:"status"`
		RowsRead int64      `json:"rows_read"`
		Cutoffs  runCutoffs `json:"cutoffs"`
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "{") {
			_ = json.Unmarshal([]byte(line), &run)
		}
	}
	var before int64
	if err := db.QueryRow(fmt.Sprintf(`SELECT count(*) FROM %s WHERE _arrival < %d`, lakeSource(t, st.DataDir, "orders"), run.Cutoffs.ms("orders_by_country"))).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if run.Status != "succeeded" || run.RowsRead != before || before < 3000 || !strings.Contains(out, fmt.Sprintf("rows_read=%d", before)) {
		t.Fatalf("braid batch run read %d rows (status %s), the lake has %d before the cutoff\n%s", run.RowsRead, run.Status, before, out)
	}
	if out, code := testenv.RunBraid(t, "audit", "--config", st.Config, "--view", "orders_by_country"); code != 0 || !strings.Contains(out, "0 beyond their bounds") {
		t.Fatalf("braid audit: exit %d\n%s", code, out)
	}
	if out, code := testenv.RunBraid(t, "batch", "run", "--config", st.Config, "--view", "nope"); code != 1 {
		t.Fatalf("batch run of an unknown view: exit %d, want 1\n%s", code, out)
	}
}

// checkBuyers checks the batch answer of buyers_hourly: exact distinct
// buyers (their emails are hashed, which keeps them distinct) and the exact
// median (quantile_cont) per hour, computed here from the orders.
func checkBuyers(t *testing.T, base string, start time.Time, orders []order) {
	t.Helper()
	type hour struct {
		emails  map[string]bool
		amounts []float64
	}
	want := map[string]*hour{}
	for _, o := range orders {
		ts, _ := time.Parse(time.RFC3339Nano, o.TS)
		k := ts.UTC().Truncate(time.Hour).Format(time.RFC3339)
		if want[k] == nil {
			want[k] = &hour{emails: map[string]bool{}}
		}
		want[k].emails[o.Email] = true
		want[k].amounts = append(want[k].amounts, o.Amount)
	}
	var q queryResp
	url := fmt.Sprintf("%s/v1/views/buyers_hourly?from=%s&to=%s", base, start.Truncate(time.Hour).Format(time.RFC3339), start.Add(3*time.Hour).Format(time.RFC3339))
	if code := httpJSON(t, "GET", url, "", nil, &q); code != 200 || len(q.Rows) != len(want) {
		t.Fatalf("buyers_hourly: status %d, %d rows, want %d", code, len(q.Rows), len(want))
	}
	for _, r := range q.Rows {
		h := want[fmt.Sprint(r["window_start"])]
		if h == nil || r["exact"] != true || r["source"] != "batch" {
			t.Fatalf("buyers_hourly row %v", r)
		}
		xs := slices.Sorted(slices.Values(h.amounts))
		rank := 0.5 * float64(len(xs)-1)
		lo := int(rank)
		med := xs[lo]
		if lo+1 < len(xs) {
			med += (rank - float64(lo)) * (xs[lo+1] - xs[lo])
		}
		if r["buyers"] != float64(len(h.emails)) || math.Abs(r["median"].(float64)-med) > 1e-9*med {
			t.Fatalf("buyers_hourly %v: buyers %v median %v, want %d and %v", r["window_start"], r["buyers"], r["median"], len(h.emails), med)
		}
	}
}

func TestCheckCommand(t *testing.T) {
	root := testenv.RepoRoot(t)
	for f, storage := range map[string]string{"demo.yaml": "files under ", "shop.yaml": "s3://shop-braid-lake/prod at https://s3.eu-central-1.amazonaws.com"} {
		out, code := testenv.RunBraid(t, "check", "--config", filepath.Join(root, "configs", f))
		if code != 0 {
			t.Fatalf("check %s: exit %d\n%s", f, code, out)
		}
		if !strings.Contains(out, f+": storage: "+storage) {
			t.Errorf("check %s does not report the storage %s:\n%s", f, storage, out)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, "epoch: 0s\nbogus: 1\nstreams:\n  o:\n    time: t\n    fields: {t: time, a: floot}\nviews:\n  v:\n    stream: nope\n    window: 1m\n    measures: {n: count()}\n")
	out, code := testenv.RunBraid(t, "check", "--config", bad)
	if code != 1 {
		t.Fatalf("check bad: exit %d\n%s", code, out)
	}
	for _, want := range []string{"line 1: epoch", "line 2: bogus: unknown key", "line 6: streams.o.fields.a", "line 9: views.v.stream"} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}

	// Mistakes of every kind in one file, none hiding another: each is
	// printed at its own line and key, and counted.
	out, code = testenv.RunBraid(t, "check", "--config", filepath.Join(root, "logic", "config", "testdata", "mixed.yaml"))
	if code != 1 {
		t.Fatalf("check mixed.yaml: exit %d\n%s", code, out)
	}
	for _, want := range []string{
		"line 4: epoch: bad duration \"30x\"",
		"line 6: retries: unknown key",
		"line 10: streams.orders.fields.amount: unknown field type \"flaot\"",
		"line 18: views.by_country.where: where: at 15: unknown field \"amout\"",
		"line 21: views.by_country.measures.total: measure \"sum(itmes)\"",
		"line 27: views.late.window: bad duration \"90x\"",
		"line 28: views.late.where: where: at 1: unknown field \"contry\"",
		"15 error(s) in ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check mixed.yaml output lacks %q:\n%s", want, out)
		}
	}
}
