package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// The decisions' fixture: orders of customers, a customer entity with
// three features, and four rules (two over features, two over fields).

func decideStream(t testing.TB) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "customer": logic.TypeString,
			"country": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt},
		Required: []string{"amount"}, AllowedLateness: time.Hour}, []byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// decideCatalog is a catalog of the stream with the entity and the rules,
// in name order as the configuration compiles them.
func decideCatalog(t testing.TB, s *logic.Stream) *config.Catalog {
	t.Helper()
	e, err := logic.NewEntity("customer", logic.EntityDef{Stream: "orders", Key: "customer", Features: []logic.FeatureDef{
		{Name: "orders_1h", Measure: "count()", Over: time.Hour},
		{Name: "avg_basket_30d", Measure: "avg(amount)", Over: 30 * 24 * time.Hour},
		{Name: "last_country", Measure: "last(country)"},
	}}, s)
	if err != nil {
		t.Fatal(err)
	}
	defs := []struct {
		name string
		def  logic.RuleDef
		ent  *logic.Entity
	}{
		{"big_vs_history", logic.RuleDef{Entity: "customer", When: "amount > 5 * features.avg_basket_30d and country != features.last_country", Outcome: "block"}, e},
		{"frequent", logic.RuleDef{Entity: "customer", When: "features.orders_1h >= 3", Outcome: "review"}, e},
		{"huge", logic.RuleDef{When: "amount > 1000", Outcome: "block"}, nil},
		{"odd_items", logic.RuleDef{When: "items = 7", Outcome: "review"}, nil},
	}
	cat := testCatalog(s)
	cat.Entities = map[string]*logic.Entity{"customer": e}
	cat.Rules = map[string][]*logic.Rule{}
	for _, d := range defs {
		d.def.Stream = "orders"
		r, err := logic.NewRule(d.name, d.def, s, d.ent)
		if err != nil {
			t.Fatalf("rule %s: %v", d.name, err)
		}
		cat.Rules["orders"] = append(cat.Rules["orders"], r)
	}
	return cat
}

// order is an event of the test as it sends it.
type order struct {
	id       string // "": none
	ts       int64  // unix ms
	customer string // "": none
	country  string
	amount   float64
	items    int
	seq      int // the order it was stored in (history)
}

func (o order) json() []byte {
	b := fmt.Appendf(nil, `{"ts":%d,"country":%q,"amount":%g,"items":%d`, o.ts, o.country, o.amount, o.items)
	if o.id != "" {
		b = fmt.Appendf(b, `,"id":%q`, o.id)
	}
	if o.customer != "" {
		b = fmt.Appendf(b, `,"customer":%q`, o.customer)
	}
	return append(b, '}')
}

// history answers a customer's features from the orders the test knows
// are stored, computed here directly: it is the fake Features of these
// unit tests (the real one reads the entity store).
type history struct {
	mu     sync.Mutex
	orders []order
	calls  []lookupCall
	fail   error
}

type lookupCall struct {
	entity string
	keys   []string
}

func (h *history) add(os ...order) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range os {
		o.seq = len(h.orders)
		h.orders = append(h.orders, o)
	}
}

// features of a customer at now: orders in the last hour, the average
// amount of the last 30 days, the country of the latest order (greatest
// event time, ties: the later stored), each null when no order counts.
func (h *history) features(key string, now int64) (count int64, avg *float64, last *string) {
	var sum float64
	var n int
	var lastTS int64 = -1
	for _, o := range h.orders {
		if o.customer != key || o.ts >= now {
			continue
		}
		if o.ts >= now-time.Hour.Milliseconds() {
			count++
		}
		if o.ts >= now-30*24*time.Hour.Milliseconds() {
			sum += o.amount
			n++
		}
		if o.ts >= lastTS {
			lastTS, last = o.ts, &o.country
		}
	}
	if n > 0 {
		a := sum / float64(n)
		avg = &a
	}
	return count, avg, last
}

func (h *history) Lookup(_ context.Context, entity string, keys []string) ([]map[string]logic.Value, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, lookupCall{entity, slices.Clone(keys)})
	if h.fail != nil {
		return nil, h.fail
	}
	now := time.Now().UnixMilli()
	out := make([]map[string]logic.Value, len(keys))
	for i, k := range keys {
		count, avg, last := h.features(k, now)
		m := map[string]logic.Value{"orders_1h": {Kind: logic.TypeInt, I: count}}
		if avg != nil {
			m["avg_basket_30d"] = logic.Value{Kind: logic.TypeFloat, F: *avg}
		}
		if last != nil {
			m["last_country"] = logic.Value{Kind: logic.TypeString, S: *last}
		}
		out[i] = m
	}
	return out, nil
}

// expect decides an order the way the rules say, written out here: the
// outcome and the names of the rules that matched, in name order. A
// comparison with a null feature is not true.
func (h *history) expect(o order, withFeatures bool) (string, []string) {
	var count int64
	var avg *float64
	var last *string
	if withFeatures && o.customer != "" {
		h.mu.Lock()
		count, avg, last = h.features(o.customer, time.Now().UnixMilli())
		h.mu.Unlock()
	}
	matched := []string{}
	outcome := "allow"
	if avg != nil && last != nil && o.amount > 5**avg && o.country != *last {
		matched, outcome = append(matched, "big_vs_history"), "block"
	}
	if withFeatures && o.customer != "" && count >= 3 {
		matched = append(matched, "frequent")
		if outcome == "allow" {
			outcome = "review"
		}
	}
	if o.amount > 1000 {
		matched, outcome = append(matched, "huge"), "block"
	}
	if o.items == 7 {
		matched = append(matched, "odd_items")
		if outcome == "allow" {
			outcome = "review"
		}
	}
	return outcome, matched
}

// randomOrders makes n orders of round r: fifteen customers (and some
// without), amounts mostly small, some large, a few huge (those have no
// id: the huge rule blocks them whatever the features).
func randomOrders(rng *rand.Rand, r, n int, now int64) []order {
	countries := []string{"DE", "FR", "US"}
	out := make([]order, n)
	for i := range out {
		o := order{id: fmt.Sprintf("r%d-%d", r, i), ts: now - rng.Int64N(50*time.Minute.Milliseconds()),
			country: countries[rng.IntN(len(countries))], amount: float64(10 + rng.IntN(90)), items: 1 + rng.IntN(7)}
		if rng.IntN(8) > 0 {
			o.customer = fmt.Sprintf("c%d", rng.IntN(15))
		}
		switch x := rng.IntN(20); {
		case x < 4:
			o.amount = float64(300 + rng.IntN(600))
		case x < 6:
			o.amount, o.id = float64(1001+rng.IntN(5000)), ""
		}
		out[i] = o
	}
	return out
}

// decidedIDs lists the ids of a stream's decided events with outcome o.
func decidedIDs(t *testing.T, l *eventlog.Log, o logic.Outcome) []string {
	t.Helper()
	ds, err := l.DecidedEvents(context.Background(), "orders", o, eventlog.Cursor{}, 100000)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	return ids
}

// TestDecide: requests mixing invalid, allowed, review and blocked events
// are answered with each valid event's decision, equal to the rules
// evaluated here over features computed here from the orders stored
// before; the features are read once per request for its distinct
// customers; allowed and review events are in the clean log, review and
// blocked ones kept with their rules and nothing else; a retry stores
// nothing twice (events without an id included); a features failure
// stores no event; without Features the rules over features never match.
func TestDecide(t *testing.T) {
	ctx := context.Background()
	_, js := testenv.StartNATS(t).JetStream(t)
	l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(t), DedupWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	s := decideStream(t)
	cat := decideCatalog(t, s)
	h := &history{}
	reg := prometheus.NewRegistry()
	in := ingest.NewIngester(l, cat, reg, ingest.WithFeatures(h))
	rng := rand.New(rand.NewPCG(18, 1))

	var wantClean []string
	wantKept := map[logic.Outcome][]string{}
	outcomes, matches := map[string]int{}, map[string]int{}
	check := func(what string) {
		t.Helper()
		if got := logIDs(t, js, l, s); !slices.Equal(got, wantClean) {
			t.Fatalf("%s: clean log %v, want %v", what, got, wantClean)
		}
		for _, o := range []logic.Outcome{logic.Block, logic.Review} {
			if got := decidedIDs(t, l, o); !slices.Equal(got, wantKept[o]) {
				t.Fatalf("%s: %s kept %v, want %v", what, o, got, wantKept[o])
			}
		}
	}
	for round := range 6 {
		now := time.Now().UnixMilli()
		orders := randomOrders(rng, round, 40, now)
		raws := [][]byte{}
		type want struct {
			index    int
			outcome  string
			rules    []string
			customer string
		}
		var wants []want
		var keys []string
		rejected := 0
		for i, o := range orders {
			if i%9 == 4 { // an invalid event before it
				raws = append(raws, fmt.Appendf(nil, `{"ts":%d,"country":"DE"}`, now))
				rejected++
			}
			out, rules := h.expect(o, true)
			wants = append(wants, want{len(raws), out, rules, o.customer})
			raws = append(raws, o.json())
			if o.customer != "" && !slices.Contains(keys, o.customer) {
				keys = append(keys, o.customer)
			}
		}
		calls := len(h.calls)
		var res ingest.Result
		for attempt := range 2 { // the second is a retry of the same request
			res, err = in.DecideSeq(ctx, "orders", slices.Values(raws), "http")
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Decisions) != len(orders) || res.Rejected != rejected || res.Blocked == nil {
				t.Fatalf("round %d: %d decisions, %d rejected, blocked %v; want %d, %d", round, len(res.Decisions), res.Rejected, res.Blocked, len(orders), rejected)
			}
			blocked := 0
			for k, w := range wants {
				d := res.Decisions[k]
				if d.Index != w.index || d.Outcome != w.outcome || !slices.Equal(d.Rules, w.rules) {
					t.Fatalf("round %d: event %d decided %+v, want %+v (order %+v)", round, w.index, d, w, orders[k])
				}
				if w.outcome == "block" {
					blocked++
				}
			}
			if *res.Blocked != blocked || res.Accepted != len(orders)-blocked {
				t.Fatalf("round %d: accepted %d blocked %d, want %d and %d", round, res.Accepted, *res.Blocked, len(orders)-blocked, blocked)
			}
			// One lookup for the request, of its distinct customers.
			if got := h.calls[calls:]; len(got) != 1 || got[0].entity != "customer" || !slices.Equal(got[0].keys, keys) {
				t.Fatalf("round %d: lookups %+v, want one of %v", round, got, keys)
			}
			calls = len(h.calls)
			if attempt == 0 {
				for k, o := range orders {
					w := wants[k]
					outcomes[w.outcome]++
					for _, r := range w.rules {
						matches[r]++
					}
					id := o.id
					if id == "" {
						id = ingest.DecidedID(s, "http", w.index, mustRecord(t, s, raws[w.index]))
					}
					if w.outcome != "block" {
						wantClean = append(wantClean, o.id)
					}
					if w.outcome != "allow" {
						oc, _ := logic.ParseOutcome(w.outcome)
						wantKept[oc] = append(wantKept[oc], id)
					}
				}
			}
			check(fmt.Sprintf("round %d attempt %d", round, attempt))
		}
		// The features of the next round count what was stored.
		for k, o := range orders {
			if wants[k].outcome != "block" {
				h.add(o)
			}
		}
	}
	for _, r := range cat.Rules["orders"] {
		if matches[r.Name] < 3 {
			t.Fatalf("rules matched %v: want every one several times", matches)
		}
		if got := testenv.CounterValue(t, reg, "braid_rule_matches_total", map[string]string{"stream": "orders", "rule": r.Name, "outcome": r.Outcome.String()}); got != float64(2*matches[r.Name]) {
			t.Fatalf("braid_rule_matches_total %s = %v, want %d", r.Name, got, 2*matches[r.Name])
		}
	}
	t.Logf("outcomes %v, rules matched %v", outcomes, matches)
	for _, o := range []string{"allow", "review", "block"} {
		if outcomes[o] < 10 {
			t.Fatalf("outcomes %v: want every one often", outcomes)
		}
		if got := testenv.CounterValue(t, reg, "braid_decisions_total", map[string]string{"stream": "orders", "outcome": o}); got != float64(2*outcomes[o]) {
			t.Fatalf("braid_decisions_total %s = %v, want %d (two attempts)", o, got, 2*outcomes[o])
		}
	}

	// A failure to read the features fails the request: nothing stored.
	h.fail = errors.New("entity store down")
	orders := randomOrders(rng, 99, 10, time.Now().UnixMilli())
	var raws [][]byte
	for _, o := range orders {
		o.customer = "c1"
		raws = append(raws, o.json())
	}
	if _, err := in.DecideSeq(ctx, "orders", slices.Values(raws), "http"); !errors.Is(err, ingest.ErrFeatures) {
		t.Fatalf("features down: %v, want ErrFeatures", err)
	}
	check("features down")
	h.fail = nil

	// Without Features, features read null: only the rules over fields
	// match.
	bare := ingest.NewIngester(l, cat, nil)
	res, err := bare.DecideSeq(ctx, "orders", slices.Values(raws), "http")
	if err != nil {
		t.Fatal(err)
	}
	for k, o := range orders {
		o.customer = "c1"
		out, rules := h.expect(o, false)
		if d := res.Decisions[k]; d.Outcome != out || !slices.Equal(d.Rules, rules) {
			t.Fatalf("without features: %+v, want %s %v", d, out, rules)
		}
	}

	// Without decide, rules are not evaluated: a huge order is stored.
	huge := order{id: "huge-plain", ts: time.Now().UnixMilli(), country: "DE", amount: 5000, items: 1}
	res, err = in.Ingest(ctx, "orders", [][]byte{huge.json()}, "http")
	if err != nil || res.Accepted != 1 || res.Decisions != nil || res.Blocked != nil {
		t.Fatalf("plain ingest: %+v %v", res, err)
	}
}

// mustRecord is the canonical record of a valid raw event.
func mustRecord(t *testing.T, s *logic.Stream, raw []byte) []byte {
	t.Helper()
	_, rec, err := s.Prepare(raw, 0)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
