package tests

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// readings is a stream of sensor readings over two partitions (by
// device), and a view of the last and first values per site.
func lastFirstCatalog() testenv.Catalog {
	c := testenv.Fast()
	c.Streams = []testenv.Stream{{
		Name: "readings", Time: "ts", Lateness: "1h", Partitions: 2, PartitionBy: "dev",
		Fields:   []string{"ts: time", "dev: string", "site: string", "temp: float", "n: int", "ok: bool"},
		Required: []string{"dev", "site"},
	}}
	c.Views = []testenv.View{{Name: "site_latest", Stream: "readings", Window: "1m", GroupBy: []string{"site"},
		Measures: []string{"readings: count()", "last_temp: last(temp)", "first_temp: first(temp)", "last_dev: last(dev)",
			"first_ok: first(ok)", "last_n: last(n)", "last_ts: last(ts)", "first_ts: first(ts)"}}}
	return c
}

// lfEvent is a reading as the test sent it: request r, index i in it.
type lfEvent struct {
	r, i int
	ts   time.Time
	vals map[string]any
}

// TestLastFirstEndToEnd: last and first through real processes — the
// ingest over HTTP, the log's two partitions, the speed layer's commits,
// the archiver's lake, a batch run — answer the value of the latest
// (earliest) event with one per window and site, before a batch run
// (speed), after it (batch) and with events after it (batch+speed). Event
// times tie often; ties go to the event later (earlier) in the log, which
// the test knows as it sends: requests one after the other, each of one
// device (one partition, one record, events in order), a few
// milliseconds apart (later arrivals).
func TestLastFirstEndToEnd(t *testing.T) {
	st := testenv.Up(t, lastFirstCatalog().YAML(), testenv.WithNATS())
	base := st.Base
	r := rand.New(rand.NewPCG(11, 12))
	t0 := time.Now().UTC().Truncate(time.Minute).Add(-10 * time.Minute)
	var sent []lfEvent
	req := 0              // requests sent
	withFirstDev := false // the view has first_dev
	send := func(requests int) {
		for range requests {
			req++
			dev := fmt.Sprint("d", r.IntN(6))
			var lines []string
			for i := range 1 + r.IntN(5) {
				e := lfEvent{r: req, i: i, ts: t0.Add(time.Duration(r.IntN(18)) * 10 * time.Second), vals: map[string]any{"dev": dev, "site": []string{"a", "b"}[r.IntN(2)]}}
				if r.IntN(4) > 0 {
					e.vals["temp"] = float64(r.IntN(400)) / 8
				}
				if r.IntN(4) > 0 {
					e.vals["n"] = int64(r.IntN(100))
				}
				if r.IntN(4) > 0 {
					e.vals["ok"] = r.IntN(2) == 0
				}
				m := map[string]any{"ts": e.ts.Format(time.RFC3339)}
				for k, x := range e.vals {
					m[k] = x
				}
				j, _ := json.Marshal(m)
				lines = append(lines, string(j))
				sent = append(sent, e)
			}
			var resp ingestResp
			if code := httpJSON(t, "POST", base+"/v1/streams/readings/events", "application/x-ndjson", []byte(strings.Join(lines, "\n")), &resp); code != 200 || resp.Accepted != len(lines) {
				t.Fatalf("ingest: status %d, %+v", code, resp)
			}
			time.Sleep(5 * time.Millisecond) // the next request arrives in a later millisecond
		}
	}
	// check compares the answer with the events sent; "" when equal.
	check := func(sources ...string) string {
		var q queryResp
		url := fmt.Sprintf("%s/v1/views/site_latest?from=%s&to=%s", base, t0.Format(time.RFC3339), t0.Add(3*time.Minute).Format(time.RFC3339))
		if code := httpJSON(t, "GET", url, "", nil, &q); code != 200 {
			return fmt.Sprintf("query: status %d", code)
		}
		want := lfExpect(sent, withFirstDev)
		if len(q.Rows) != len(want) {
			return fmt.Sprintf("%d rows, want %d", len(q.Rows), len(want))
		}
		for _, row := range q.Rows {
			k := fmt.Sprint(row["window_start"], "|", row["site"])
			w, ok := want[k]
			if !ok {
				return fmt.Sprintf("unexpected row %s", k)
			}
			if !strings.Contains(strings.Join(sources, ","), fmt.Sprint(row["source"])) || row["exact"] != true {
				return fmt.Sprintf("row %s: source %v exact %v, want one of %v, exact", k, row["source"], row["exact"], sources)
			}
			for m, x := range w {
				if row[m] != x {
					return fmt.Sprintf("row %s from %v: %s = %v (%T), want %v (%T)", k, row["source"], m, row[m], row[m], x, x)
				}
			}
		}
		return ""
	}
	batchRun := func() {
		var run struct {
			Status string `json:"status"`
		}
		if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 || run.Status != "succeeded" {
			t.Fatalf("batch run: status %d, %+v", code, run)
		}
	}

	send(60)
	eventually(t, "speed answers last and first", 60*time.Second, func() string { return check("speed") })
	batchRun()
	if msg := check("batch"); msg != "" {
		t.Fatalf("after a batch run: %s", msg)
	}
	send(40)
	eventually(t, "batch and speed merged", 60*time.Second, func() string { return check("batch+speed", "batch", "speed") })
	batchRun()
	if msg := check("batch"); msg != "" {
		t.Fatalf("after a second batch run: %s", msg)
	}

	// A restart with the view changed (one more measure): it is rebuilt
	// from the lake and the log, and answers the same.
	send(20)
	eventually(t, "the last events folded", 60*time.Second, func() string { return check("batch+speed", "speed") })
	if err := st.Braid.Stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	cfg, err := os.ReadFile(st.Config)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(cfg), "last_dev: last(dev)", "last_dev: last(dev)\n      first_dev: first(dev)", 1)
	if edited == string(cfg) {
		t.Fatal("the config has no last_dev measure to add to")
	}
	writeFile(t, st.Config, edited)
	st.Braid = st.Start("up")
	st.WaitViewsReady()
	withFirstDev = true
	if msg := check("batch+speed", "batch", "speed"); msg != "" {
		t.Fatalf("after the view was rebuilt: %s", msg)
	}
}

// lfExpect is the answer per "window_start|site": each measure's value as
// JSON decodes it, found by ordering the events on (event time, request,
// index in the request).
func lfExpect(evs []lfEvent, firstDev bool) map[string]map[string]any {
	cells := map[string][]lfEvent{}
	for _, e := range evs {
		k := e.ts.Truncate(time.Minute).Format(time.RFC3339) + "|" + e.vals["site"].(string)
		cells[k] = append(cells[k], e)
	}
	out := map[string]map[string]any{}
	for k, es := range cells {
		sort.SliceStable(es, func(a, b int) bool {
			x, y := es[a], es[b]
			if !x.ts.Equal(y.ts) {
				return x.ts.Before(y.ts)
			}
			if x.r != y.r {
				return x.r < y.r
			}
			return x.i < y.i
		})
		pick := func(field string, last bool) any {
			for j := range es {
				e := es[j]
				if last {
					e = es[len(es)-1-j]
				}
				if x, ok := e.vals[field]; ok {
					if n, ok := x.(int64); ok {
						return float64(n) // JSON numbers decode as float64
					}
					return x
				}
			}
			return nil
		}
		out[k] = map[string]any{
			"readings":   float64(len(es)),
			"last_temp":  pick("temp", true),
			"first_temp": pick("temp", false),
			"last_dev":   pick("dev", true),
			"first_ok":   pick("ok", false),
			"last_n":     pick("n", true),
			"last_ts":    es[len(es)-1].ts.Format(time.RFC3339),
			"first_ts":   es[0].ts.Format(time.RFC3339),
		}
		if firstDev {
			out[k]["first_dev"] = pick("dev", false)
		}
	}
	return out
}
