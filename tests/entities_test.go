package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// The entity features of these tests, on two streams with the same
// events: "orders" is partitioned by the customer (a key's state is one
// hash), "orders_rr" by the order id (a key's events spread over every
// partition, read together).
type entFeature struct{ name, measure, over string }

var entityFeatures = []entFeature{
	{"n_1h", "count()", "1h"},
	{"n_amount_2h", "count(amount)", "2h"},
	{"spend_2h", "sum(amount)", "2h"},
	{"avg_1h", "avg(amount)", "1h"},
	{"lo_3d", "min(amount)", "3d"},
	{"hi_qty_2h", "max(qty)", "2h"},
	{"qty_2h", "sum(qty)", "2h"},
	{"countries_2h", "count_distinct(country)", "2h"},
	{"p50_2h", "quantile(amount, 0.5)", "2h"},
	{"last_country", "last(country)", ""},
	{"first_amount", "first(amount)", ""},
}

// entityYAML renders an entity of the test's features.
func entityYAML(name, stream string, features []entFeature) string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s:\n    stream: %s\n    key: customer\n    features:\n", name, stream)
	for _, f := range features {
		if f.over == "" {
			fmt.Fprintf(&b, "      %s: { measure: %q }\n", f.name, f.measure)
		} else {
			fmt.Fprintf(&b, "      %s: { measure: %q, over: %s }\n", f.name, f.measure, f.over)
		}
	}
	return b.String()
}

func entitiesCatalog() testenv.Catalog {
	c := testenv.Fast()
	fields := []string{"ts: time", "order_id: string", "customer: string", "country: string", "amount: float", "qty: int"}
	c.Streams = []testenv.Stream{
		{Name: "orders", Time: "ts", ID: "order_id", Lateness: "1m", Fields: fields, Required: []string{"customer"}, Partitions: 2, PartitionBy: "customer"},
		{Name: "orders_rr", Time: "ts", ID: "order_id", Lateness: "1m", Fields: fields, Required: []string{"customer"}, Partitions: 2, PartitionBy: "order_id"},
	}
	c.Views = []testenv.View{{Name: "orders_per_min", Stream: "orders", Window: "1m", Measures: []string{"n: count()"}}}
	c.Extra = "entities:\n" + entityYAML("customer", "orders", entityFeatures) + entityYAML("buyer", "orders_rr", entityFeatures)
	return c
}

// entEvent is an event the test sent, with the span its arrival is in.
type entEvent struct {
	key      string
	ts       int64
	country  string
	amount   *float64
	qty      int64
	arrivedA int64 // arrival is in [arrivedA, arrivedB] (unix ms)
	arrivedB int64
}

// entExpect computes the features of a key as of asOf the long way: each
// feature over the events in its window (and, with arrivedBy, that had
// arrived by asOf), sorted, read. asOf never falls inside an arrival
// span (the test picks it between posts).
func entExpect(features []entFeature, evs []entEvent, key string, asOf int64, arrivedBy bool) map[string]any {
	out := map[string]any{}
	for _, f := range features {
		var in []entEvent
		for _, e := range evs {
			if e.key != key || e.ts >= asOf || arrivedBy && e.arrivedA > asOf {
				continue
			}
			if f.over != "" {
				d := map[string]int64{"1h": 3600_000, "2h": 7200_000, "3d": 3 * 86400_000, "4d": 4 * 86400_000}[f.over]
				if e.ts < asOf-d {
					continue
				}
			}
			in = append(in, e)
		}
		sort.Slice(in, func(i, j int) bool { return in[i].ts < in[j].ts })
		var amounts []float64
		var qtys []int64
		countries := map[string]bool{}
		for _, e := range in {
			if e.amount != nil {
				amounts = append(amounts, *e.amount)
			}
			qtys = append(qtys, e.qty)
			countries[e.country] = true
		}
		var v any
		switch f.measure {
		case "count()":
			v = float64(len(in))
		case "count(amount)":
			v = float64(len(amounts))
		case "sum(amount)", "avg(amount)":
			if len(amounts) > 0 {
				s := 0.0
				for _, a := range amounts {
					s += a
				}
				if f.measure == "avg(amount)" {
					s /= float64(len(amounts))
				}
				v = s
			}
		case "min(amount)":
			if len(amounts) > 0 {
				v = slices.Min(amounts)
			}
		case "max(qty)":
			if len(qtys) > 0 {
				v = float64(slices.Max(qtys))
			}
		case "sum(qty)":
			if len(qtys) > 0 {
				s := int64(0)
				for _, q := range qtys {
					s += q
				}
				v = float64(s)
			}
		case "count_distinct(country)":
			v = float64(len(countries))
		case "quantile(amount, 0.5)":
			if len(amounts) > 0 {
				slices.Sort(amounts)
				r := 0.5 * float64(len(amounts)-1)
				lo, hi := math.Floor(r), math.Ceil(r)
				v = amounts[int(lo)] + (r-lo)*(amounts[int(hi)]-amounts[int(lo)])
			}
		case "last(country)":
			if len(in) > 0 {
				v = in[len(in)-1].country
			}
		case "first(amount)":
			for _, e := range in {
				if e.amount != nil {
					v = *e.amount
					break
				}
			}
		}
		out[f.name] = v
	}
	return out
}

// entDiff describes how got differs from want ("" when equal; floats
// within 1e-9 relative).
func entDiff(got, want map[string]any) string {
	var bad []string
	for k, w := range want {
		g := got[k]
		gf, gok := g.(float64)
		wf, wok := w.(float64)
		switch {
		case gok && wok:
			if math.Abs(gf-wf) > 1e-9*math.Max(1, math.Abs(wf)) {
				bad = append(bad, fmt.Sprintf("%s=%v want %v", k, g, w))
			}
		case g != w:
			bad = append(bad, fmt.Sprintf("%s=%v want %v", k, g, w))
		}
	}
	sort.Strings(bad)
	return strings.Join(bad, ", ")
}

type entAnswer struct {
	Key         string          `json:"key"`
	AsOf        string          `json:"as_of"`
	Features    map[string]any  `json:"features"`
	Exact       map[string]bool `json:"exact"`
	FreshnessMs *int64          `json:"freshness_ms"`
}

// TestEntities: every feature of random keys, at random instants, equals
// an independent computation over the events sent — from the speed layer
// alone, after a batch run, with late events (dated days back, arriving
// after the batch cutoff) and too-late ones, after a second batch run and
// after a restart; through GET and POST :lookup, on a stream partitioned
// by the key and on one that is not.
func TestEntities(t *testing.T) {
	stack := testenv.Up(t, entitiesCatalog().YAML())
	base := stack.Base
	r := rand.New(rand.NewPCG(18, 42))
	keys := make([]string, 24)
	for i := range keys {
		keys[i] = fmt.Sprintf("c-%02d", i)
	}
	var sent []entEvent
	usedTS := map[int64]bool{}
	seq := 0
	// post sends n events dated within span back from now (a few much
	// older), to both streams, and records their arrival span.
	post := func(n int, span time.Duration, old float64) {
		now := time.Now()
		var lines []string
		var batch []entEvent
		for range n {
			ts := now.Add(-time.Duration(r.Int64N(int64(span)))).UnixMilli()
			if r.Float64() < old {
				ts = now.Add(-time.Duration(24+r.IntN(48)) * time.Hour).Add(-time.Duration(r.IntN(3600)) * time.Second).UnixMilli()
			}
			for usedTS[ts] { // distinct event times: last and first have one answer
				ts--
			}
			usedTS[ts] = true
			e := entEvent{key: keys[int(float64(len(keys))*math.Pow(r.Float64(), 1.5))], ts: ts, country: []string{"DE", "FR", "US", "JP"}[r.IntN(4)], qty: int64(1 + r.IntN(9))}
			line := fmt.Sprintf(`{"ts":%d,"order_id":"o%d","customer":%q,"country":%q,"qty":%d`, ts, seq, e.key, e.country, e.qty)
			if r.IntN(6) > 0 {
				a := math.Round(r.Float64()*20000) / 100
				e.amount = &a
				line += fmt.Sprintf(`,"amount":%v`, a)
			}
			lines = append(lines, line+"}")
			batch = append(batch, e)
			seq++
		}
		body := []byte(strings.Join(lines, "\n"))
		a := time.Now().UnixMilli()
		for _, s := range []string{"orders", "orders_rr"} {
			var resp ingestResp
			if code := httpJSON(t, "POST", base+"/v1/streams/"+s+"/events", "application/x-ndjson", body, &resp); code != 200 || resp.Accepted != n {
				t.Fatalf("ingest %s: status %d, %+v", s, code, resp)
			}
		}
		b := time.Now().UnixMilli()
		for i := range batch {
			batch[i].arrivedA, batch[i].arrivedB = a, b
		}
		sent = append(sent, batch...)
		time.Sleep(20 * time.Millisecond) // a gap between posts for as_of instants
	}
	lookup := func(entity string, ks []string, asOf string) (int, []entAnswer) {
		body, _ := json.Marshal(map[string]any{"keys": ks, "as_of": asOf})
		var out struct {
			Entity  string      `json:"entity"`
			Results []entAnswer `json:"results"`
		}
		code := httpJSON(t, "POST", base+"/v1/entities/"+entity+":lookup", "application/json", body, &out)
		return code, out.Results
	}
	// asOfs picks instants between the posts' arrival spans (and now).
	asOfs := func() []int64 {
		var gaps [][2]int64
		last := int64(0)
		spans := map[[2]int64]bool{}
		for _, e := range sent {
			spans[[2]int64{e.arrivedA, e.arrivedB}] = true
		}
		ordered := slices.SortedFunc(func(yield func([2]int64) bool) {
			for s := range spans {
				if !yield(s) {
					return
				}
			}
		}, func(a, b [2]int64) int { return int(a[0] - b[0]) })
		for _, s := range ordered {
			if last > 0 && s[0] > last+1 {
				gaps = append(gaps, [2]int64{last + 1, s[0] - 1})
			}
			last = s[1]
		}
		gaps = append(gaps, [2]int64{last + 1, time.Now().UnixMilli() - 1})
		var out []int64
		for _, g := range gaps {
			out = append(out, g[0]+r.Int64N(g[1]-g[0]+1))
		}
		// And instants well inside the events' event times, before any arrived.
		out = append(out, time.Now().Add(-30*time.Minute).UnixMilli(), time.Now().Add(-50*time.Hour).UnixMilli())
		return out
	}
	// check compares every key of both entities now (polling until the
	// speed layer has folded everything), then at random instants.
	entities := map[string][]entFeature{"customer": entityFeatures, "buyer": entityFeatures}
	check := func(stage string) {
		t.Helper()
		for _, entity := range slices.Sorted(maps.Keys(entities)) {
			features := entities[entity]
			eventually(t, stage+": "+entity+" now", 90*time.Second, func() string {
				code, res := lookup(entity, keys, "")
				if code != 200 || len(res) != len(keys) {
					return fmt.Sprintf("lookup: %d, %d results", code, len(res))
				}
				now := time.Now().UnixMilli() + 1
				for i, a := range res {
					if a.Key != keys[i] {
						return fmt.Sprintf("result %d is key %s, want %s", i, a.Key, keys[i])
					}
					if d := entDiff(a.Features, entExpect(features, sent, keys[i], now, false)); d != "" {
						return a.Key + ": " + d
					}
					for f, ex := range a.Exact {
						if !ex {
							return a.Key + ": " + f + " not exact"
						}
					}
					if a.FreshnessMs == nil {
						return a.Key + ": no freshness_ms"
					}
				}
				return ""
			})
			for _, at := range asOfs() {
				ts := time.UnixMilli(at).UTC().Format(time.RFC3339Nano)
				code, res := lookup(entity, keys, ts)
				if code != 200 || len(res) != len(keys) {
					t.Fatalf("%s: %s as_of %s: status %d, %d results", stage, entity, ts, code, len(res))
				}
				for i, a := range res {
					if d := entDiff(a.Features, entExpect(features, sent, keys[i], at, true)); d != "" {
						t.Fatalf("%s: %s %s as_of %s: %s", stage, entity, keys[i], ts, d)
					}
				}
				// GET answers the same for a random key.
				k := keys[r.IntN(len(keys))]
				var one entAnswer
				if code := httpJSON(t, "GET", base+"/v1/entities/"+entity+"/"+url.PathEscape(k)+"?as_of="+url.QueryEscape(ts), "", nil, &one); code != 200 {
					t.Fatalf("%s: GET %s/%s: %d", stage, entity, k, code)
				}
				if d := entDiff(one.Features, entExpect(features, sent, k, at, true)); d != "" || one.Key != k {
					t.Fatalf("%s: GET %s/%s as_of %s: key %s: %s", stage, entity, k, ts, one.Key, d)
				}
			}
		}
	}
	batchRun := func() {
		var run struct {
			Status string `json:"status"`
		}
		if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", nil, &run); code != 200 || run.Status != "succeeded" {
			t.Fatalf("batch run: %d %+v", code, run)
		}
	}

	// 1. Events of the last 3 hours and a few of 1-3 days back, in three
	// posts: the speed layer alone answers.
	for range 3 {
		post(60, 3*time.Hour, 0.1)
	}
	check("speed only")
	// 2. A batch run materialises the keys' days: the same answers.
	batchRun()
	check("after a batch run")
	// 3. Late events (dated days back, arriving after the cutoff) and
	// too-late ones (hours behind the watermark), beside new ones.
	post(40, 3*time.Hour, 0.5)
	post(40, 10*time.Minute, 0)
	check("late events, before the batch run")
	batchRun()
	check("late events, after the batch run")
	// 4. A restart: the state is in Redis; more events after it.
	if err := stack.Braid.Stop(t); err != nil {
		t.Fatalf("stop: %v", err)
	}
	stack.Braid = stack.Start("up")
	check("after a restart")
	post(40, 2*time.Hour, 0.2)
	check("events after the restart")
	batchRun()
	check("after the last batch run")
	// 5. Redis loses everything: the speed layer starts over from the
	// views' cutoff, the entities answer 503 until a batch run writes
	// their keys again (the run that follows a loss does it whole).
	if err := stack.Redis.Client(t).FlushAll(context.Background()).Err(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}
	eventually(t, "entities building after Redis lost its data", 60*time.Second, func() string {
		if code, _ := lookup("customer", keys[:1], ""); code != 503 {
			return fmt.Sprintf("lookup: %d", code)
		}
		return ""
	})
	post(30, 2*time.Hour, 0.2)
	batchRun()
	check("after Redis lost its data and a batch run")
	// 6. An entity added to a running deployment, and a kill -9: the new
	// entity answers 503 until a materialisation reaches where its speed
	// state starts (braid does that by itself), then exactly.
	long := append(slices.Clone(entityFeatures), entFeature{"n_4d", "count()", "4d"})
	cfg, err := os.ReadFile(stack.Config)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, stack.Config, strings.Replace(string(cfg), "entities:\n", "entities:\n"+entityYAML("customer_long", "orders", long), 1))
	stack.Braid.Kill(t)
	stack.Braid = stack.Start("up")
	entities["customer_long"] = long
	post(30, 2*time.Hour, 0.2)
	check("an entity added, after a kill -9")
	post(30, 2*time.Hour, 0.2)
	batchRun()
	check("an entity added, after a batch run")

	// Bad requests.
	for _, c := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/v1/entities/nobody/c-01", "", 404},
		{"GET", "/v1/entities/customer/c-01?as_of=yesterday", "", 400},
		{"GET", "/v1/entities/customer/c-01?as_of=" + url.QueryEscape(time.Now().Add(time.Hour).Format(time.RFC3339)), "", 400},
		{"POST", "/v1/entities/customer:lookup", `{"keys":[]}`, 400},
		{"POST", "/v1/entities/customer:lookup", `{"keyz":["a"]}`, 400},
		{"POST", "/v1/entities/customer:fetch", `{"keys":["a"]}`, 404},
		{"POST", "/v1/entities/nobody:lookup", `{"keys":["a"]}`, 404},
	} {
		var out map[string]any
		if code := httpJSON(t, c.method, base+c.path, "application/json", []byte(c.body), &out); code != c.want || out["error"] == nil {
			t.Errorf("%s %s %s: %d %v, want %d with an error", c.method, c.path, c.body, code, out, c.want)
		}
	}
}
