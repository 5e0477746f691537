package serving_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// deviceFeatures answers the device entity's one feature, spend, from a
// fixed table (a device not in it has none: null); it fails while down.
type deviceFeatures struct {
	spend map[string]float64
	down  atomic.Bool
	calls atomic.Int64
}

func (f *deviceFeatures) Lookup(_ context.Context, entity string, keys []string) ([]map[string]logic.Value, error) {
	f.calls.Add(1)
	if f.down.Load() || entity != "device" {
		return nil, errors.New("entity store down")
	}
	out := make([]map[string]logic.Value, len(keys))
	for i, k := range keys {
		out[i] = map[string]logic.Value{}
		if v, ok := f.spend[k]; ok {
			out[i]["spend"] = logic.Value{Kind: logic.TypeFloat, F: v}
		}
	}
	return out, nil
}

// TestDecideHTTP: POST /v1/streams/orders/events?decide=true answers each
// valid event's decision (checked against the rules evaluated here), the
// rejects as usual and the number blocked; GET
// /v1/streams/orders/blocked lists the blocked events (and with
// outcome=review those for review) with their rules and fields, page by
// page; /v1/status counts them; /metrics has the decisions; a features
// failure is a 503 that stores nothing; without decide the rules are not
// evaluated.
func TestDecideHTTP(t *testing.T) {
	_, js := testenv.StartNATS(t).JetStream(t)
	l, err := eventlog.Open(context.Background(), js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(t), DedupWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	st := testenv.OrdersStream(t)
	dev, err := logic.NewEntity("device", logic.EntityDef{Stream: "orders", Key: "device", Features: []logic.FeatureDef{{Name: "spend", Measure: "sum(amount)", Over: time.Hour}}}, st)
	if err != nil {
		t.Fatal(err)
	}
	cat := testCatalog(st, testView(t, st, "v", time.Minute, 0))
	cat.Entities = map[string]*logic.Entity{"device": dev}
	cat.Rules = map[string][]*logic.Rule{}
	for _, r := range []struct {
		name string
		def  logic.RuleDef
		e    *logic.Entity
	}{
		{"big_spender", logic.RuleDef{Stream: "orders", Entity: "device", When: "features.spend > 100 and amount > 50", Outcome: "review"}, dev},
		{"huge", logic.RuleDef{Stream: "orders", When: "amount > 1000", Outcome: "block"}, nil},
		{"odd_items", logic.RuleDef{Stream: "orders", When: "items = 7", Outcome: "review"}, nil},
	} {
		rule, err := logic.NewRule(r.name, r.def, st, r.e)
		if err != nil {
			t.Fatal(err)
		}
		cat.Rules["orders"] = append(cat.Rules["orders"], rule)
	}
	feats := &deviceFeatures{spend: map[string]float64{"kiosk": 500, "web": 20}}
	reg := prometheus.NewRegistry()
	s, err := serving.New(serving.Options{Catalog: cat, Log: l, Features: feats, Registry: reg, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	call := func(method, path, body string) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}

	// Events: every combination of device, amount and items, one invalid
	// (no device) in every fourth place.
	now := time.Now().UnixMilli()
	type ev struct {
		device string
		amount float64
		items  int
	}
	var evs []ev
	var raws []string
	var wantIdx []int
	for i, d := range []string{"kiosk", "web", "phone"} {
		for j, a := range []float64{10, 80, 2000} {
			for k, n := range []int{1, 7} {
				if len(raws)%4 == 3 {
					raws = append(raws, fmt.Sprintf(`{"id":"bad%d","ts":%d,"amount":1}`, len(raws), now))
				}
				wantIdx = append(wantIdx, len(raws))
				evs = append(evs, ev{d, a, n})
				raws = append(raws, fmt.Sprintf(`{"id":"o%d%d%d","ts":%d,"device":%q,"amount":%g,"items":%d,"email":"x@y.z"}`, i, j, k, now, d, a, n))
			}
		}
	}
	body := "[" + strings.Join(raws, ",") + "]"
	type decision struct {
		Index   int      `json:"index"`
		Outcome string   `json:"outcome"`
		Rules   []string `json:"rules"`
	}
	var ans struct {
		Accepted  int        `json:"accepted"`
		Rejected  int        `json:"rejected"`
		Blocked   *int       `json:"blocked"`
		Decisions []decision `json:"decisions"`
	}
	code, _, b := call("POST", "/v1/streams/orders/events?decide=true", body)
	if code != 200 {
		t.Fatalf("decide: %d %s", code, b)
	}
	if err := json.Unmarshal(b, &ans); err != nil {
		t.Fatal(err)
	}
	if len(ans.Decisions) != len(evs) || ans.Rejected != len(raws)-len(evs) || ans.Blocked == nil {
		t.Fatalf("answer %s", b)
	}
	var wantBlocked, wantReview []string
	for k, e := range evs {
		// The rules, written out: spend is known for kiosk and web only.
		rules := []string{}
		out := "allow"
		if spend, ok := feats.spend[e.device]; ok && spend > 100 && e.amount > 50 {
			rules, out = append(rules, "big_spender"), "review"
		}
		if e.amount > 1000 {
			rules, out = append(rules, "huge"), "block"
		}
		if e.items == 7 {
			rules = append(rules, "odd_items")
			if out == "allow" {
				out = "review"
			}
		}
		if d := ans.Decisions[k]; d.Index != wantIdx[k] || d.Outcome != out || !slices.Equal(d.Rules, rules) {
			t.Errorf("event %d: %+v, want %s %v", wantIdx[k], d, out, rules)
		}
		id := fmt.Sprintf("%s/%g/%d", e.device, e.amount, e.items)
		switch out {
		case "block":
			wantBlocked = append(wantBlocked, id)
		case "review":
			wantReview = append(wantReview, id)
		}
	}
	if *ans.Blocked != len(wantBlocked) || ans.Accepted != len(evs)-len(wantBlocked) || len(wantBlocked) == 0 || len(wantReview) == 0 {
		t.Fatalf("accepted %d blocked %d; want %d and %d (review %d)", ans.Accepted, *ans.Blocked, len(evs)-len(wantBlocked), len(wantBlocked), len(wantReview))
	}

	// The lists, page by page.
	list := func(outcome string, limit int) []eventlog.Decided {
		var all []eventlog.Decided
		after := ""
		for {
			code, _, b := call("GET", fmt.Sprintf("/v1/streams/orders/blocked?outcome=%s&limit=%d&after=%s", outcome, limit, after), "")
			if code != 200 {
				t.Fatalf("list %s: %d %s", outcome, code, b)
			}
			var page struct {
				Stream  string             `json:"stream"`
				Outcome string             `json:"outcome"`
				Events  []eventlog.Decided `json:"events"`
				Next    string             `json:"next"`
			}
			if err := json.Unmarshal(b, &page); err != nil || page.Stream != "orders" || page.Outcome != outcome || page.Events == nil {
				t.Fatalf("list %s: %v %s", outcome, err, b)
			}
			all = append(all, page.Events...)
			if len(page.Events) < limit {
				return all
			}
			after = page.Next
		}
	}
	for outcome, want := range map[string][]string{"block": wantBlocked, "review": wantReview} {
		got := list(outcome, 2)
		var ids []string
		for _, d := range got {
			var e struct {
				Device string  `json:"device"`
				Amount float64 `json:"amount"`
				Items  int     `json:"items"`
				Email  string  `json:"email"`
			}
			if err := json.Unmarshal(d.Event, &e); err != nil || e.Email == "x@y.z" || e.Email == "" {
				t.Fatalf("%s event %s: %v (PII must be masked)", outcome, d.Event, err)
			}
			ids = append(ids, fmt.Sprintf("%s/%g/%d", e.Device, e.Amount, e.Items))
			if d.Outcome != outcome || len(d.Rules) == 0 || d.Source != "http" || d.Time.IsZero() {
				t.Fatalf("%s event %+v", outcome, d)
			}
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("%s listed %v, want %v", outcome, ids, want)
		}
	}
	if code, _, b := call("GET", "/v1/streams/orders/blocked", ""); code != 200 || !strings.Contains(string(b), `"outcome":"block"`) {
		t.Fatalf("default outcome: %d %s", code, b)
	}
	for path, want := range map[string]int{
		"/v1/streams/orders/blocked?outcome=allow": 400,
		"/v1/streams/orders/blocked?outcome=nope":  400,
		"/v1/streams/orders/blocked?after=x":       400,
		"/v1/streams/orders/blocked?limit=0":       400,
		"/v1/streams/nope/blocked":                 404,
	} {
		if code, _, b := call("GET", path, ""); code != want {
			t.Errorf("GET %s: %d %s, want %d", path, code, b, want)
		}
	}

	// Status and metrics count them.
	status := func() map[string]any {
		_, _, b := call("GET", "/v1/status", "")
		var st struct {
			Streams map[string]map[string]any `json:"streams"`
		}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		return st.Streams["orders"]
	}
	o := status()
	if o["blocked"] != float64(len(wantBlocked)) || o["review"] != float64(len(wantReview)) || o["accepted"] != float64(len(evs)-len(wantBlocked)) {
		t.Fatalf("status: blocked %v review %v accepted %v", o["blocked"], o["review"], o["accepted"])
	}
	if got := testenv.CounterValue(t, reg, "braid_decisions_total", map[string]string{"stream": "orders", "outcome": "block"}); got != float64(len(wantBlocked)) {
		t.Fatalf("braid_decisions_total block = %v", got)
	}
	if got := testenv.CounterValue(t, reg, "braid_rule_matches_total", map[string]string{"rule": "huge"}); got != float64(len(wantBlocked)) {
		t.Fatalf("braid_rule_matches_total huge = %v", got)
	}
	_, _, m := call("GET", "/metrics", "")
	if !strings.Contains(string(m), `braid_decide_duration_seconds_count{stream="orders"} 1`) {
		t.Fatalf("no decide duration in /metrics")
	}

	// The features down: 503, nothing stored.
	feats.down.Store(true)
	code, hdr, b := call("POST", "/v1/streams/orders/events?decide=true", fmt.Sprintf(`{"id":"late1","ts":%d,"device":"web","amount":3000}`, now))
	if code != 503 || hdr.Get("Retry-After") == "" || !strings.Contains(string(b), "features") {
		t.Fatalf("features down: %d %s", code, b)
	}
	if o := status(); o["blocked"] != float64(len(wantBlocked)) || o["accepted"] != float64(len(evs)-len(wantBlocked)) {
		t.Fatalf("features down stored: %v", o)
	}
	feats.down.Store(false)
	if code, _, b := call("POST", "/v1/streams/orders/events?decide=maybe", `{}`); code != 400 {
		t.Fatalf("decide=maybe: %d %s", code, b)
	}
	// Without decide: not evaluated, stored.
	calls := feats.calls.Load()
	code, _, b = call("POST", "/v1/streams/orders/events", fmt.Sprintf(`{"id":"plain1","ts":%d,"device":"web","amount":3000}`, now))
	if code != 200 || strings.Contains(string(b), "decisions") || feats.calls.Load() != calls {
		t.Fatalf("plain: %d %s", code, b)
	}
	if o := status(); o["accepted"] != float64(len(evs)-len(wantBlocked)+1) || o["blocked"] != float64(len(wantBlocked)) {
		t.Fatalf("plain: %v", o)
	}
}
