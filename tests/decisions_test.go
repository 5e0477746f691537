package tests

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// decisionsCatalog is the end-to-end catalog with three rules over the
// orders' fields (blocks of large orders, reviews of two kinds).
func decisionsCatalog() testenv.Catalog {
	c := testenv.E2E()
	c.Extra = `rules:
  huge_order: { stream: orders, when: "amount > 180", outcome: block }
  jp_bulk:    { stream: orders, when: "country = 'JP' and items = 4", outcome: review }
  gb_big:     { stream: orders, when: "country = 'GB' and amount > 150", outcome: review }
`
	return c
}

// decideOrder is the rules of decisionsCatalog written out: the outcome
// and the rules that matched, in name order.
func decideOrder(o order) (string, []string) {
	out, rules := "allow", []string{}
	if o.Country == "GB" && o.Amount > 150 {
		out, rules = "review", append(rules, "gb_big")
	}
	if o.Amount > 180 {
		out, rules = "block", append(rules, "huge_order")
	}
	if o.Country == "JP" && o.Items == 4 {
		rules = append(rules, "jp_bulk")
		if out == "allow" {
			out = "review"
		}
	}
	return out, rules
}

type decideResp struct {
	Accepted  int  `json:"accepted"`
	Rejected  int  `json:"rejected"`
	Blocked   *int `json:"blocked"`
	Decisions []struct {
		Index   int      `json:"index"`
		Outcome string   `json:"outcome"`
		Rules   []string `json:"rules"`
	} `json:"decisions"`
}

// decidedList lists a stream's blocked or review events page by page:
// their order ids and rules.
func decidedList(t *testing.T, base, outcome string) (ids []string, rules [][]string) {
	t.Helper()
	after := ""
	for {
		var page struct {
			Events []struct {
				Outcome string          `json:"outcome"`
				Rules   []string        `json:"rules"`
				Event   json.RawMessage `json:"event"`
			} `json:"events"`
			Next string `json:"next"`
		}
		url := fmt.Sprintf("%s/v1/streams/orders/blocked?outcome=%s&limit=150&after=%s", base, outcome, after)
		if code := httpJSON(t, "GET", url, "", nil, &page); code != 200 {
			t.Fatalf("list %s: status %d", outcome, code)
		}
		for _, e := range page.Events {
			var o struct {
				ID string `json:"order_id"`
			}
			if err := json.Unmarshal(e.Event, &o); err != nil || e.Outcome != outcome || o.ID == "" {
				t.Fatalf("list %s: %s %v", outcome, e.Event, err)
			}
			ids, rules = append(ids, o.ID), append(rules, e.Rules)
		}
		if len(page.Events) < 150 {
			return ids, rules
		}
		after = page.Next
	}
}

// TestDecisions: `braid up` with rules over the orders' fields. Requests
// with decide=true, some with invalid events, are answered with each
// event's decision, equal to the rules evaluated here; the blocked events
// are absent from the views (speed and batch), from the clean log's count
// and from the lake, and listed with their rules; review events are
// stored and listed; a retry stores nothing twice; after a kill -9 of
// braid and a restart of it and of the NATS server everything is listed
// and counted alike.
func TestDecisions(t *testing.T) {
	st := testenv.Up(t, decisionsCatalog().YAML(), testenv.WithNATS())
	base := st.Base
	rng := rand.New(rand.NewPCG(18, 18))
	start := time.Now().UTC().Truncate(time.Minute).Add(-90 * time.Minute)
	from, to := start, start.Add(60*time.Minute)
	orders := genOrders(rng, start, 2000, 0)

	var stored []order
	var wantBlocked, wantReview []string
	var wantBlockedRules, wantReviewRules [][]string
	bodies := make([][]byte, 4)
	for r := range bodies {
		part := orders[r*500 : (r+1)*500]
		var body bytes.Buffer
		var idx []int // each order's line
		line := 0
		for i, o := range part {
			if i%97 == 13 { // an invalid event before it
				body.WriteString(`{"ts":"soon","country":"DE","amount":1}` + "\n")
				line++
			}
			body.Write(ndjson([]order{o}))
			idx = append(idx, line)
			line++
		}
		bodies[r] = body.Bytes()
		var res decideResp
		if code := httpJSON(t, "POST", base+"/v1/streams/orders/events?decide=true", "application/x-ndjson", bodies[r], &res); code != 200 {
			t.Fatalf("request %d: status %d", r, code)
		}
		if len(res.Decisions) != len(part) || res.Rejected != line-len(part) || res.Blocked == nil {
			t.Fatalf("request %d: %d decisions, %d rejected, blocked %v", r, len(res.Decisions), res.Rejected, res.Blocked)
		}
		blocked := 0
		for i, o := range part {
			out, rules := decideOrder(o)
			if d := res.Decisions[i]; d.Index != idx[i] || d.Outcome != out || !slices.Equal(d.Rules, rules) {
				t.Fatalf("request %d, order %s: decided %+v, want %s %v at %d", r, o.ID, d, out, rules, idx[i])
			}
			switch out {
			case "block":
				blocked++
				wantBlocked, wantBlockedRules = append(wantBlocked, o.ID), append(wantBlockedRules, rules)
			case "review":
				wantReview, wantReviewRules = append(wantReview, o.ID), append(wantReviewRules, rules)
				stored = append(stored, o)
			default:
				stored = append(stored, o)
			}
		}
		if *res.Blocked != blocked || res.Accepted != len(part)-blocked {
			t.Fatalf("request %d: accepted %d blocked %d, want %d and %d", r, res.Accepted, *res.Blocked, len(part)-blocked, blocked)
		}
	}
	t.Logf("%d orders: %d stored (%d for review), %d blocked", len(orders), len(stored), len(wantReview), len(wantBlocked))
	if len(wantBlocked) < 100 || len(wantReview) < 50 {
		t.Fatalf("too few blocked (%d) or review (%d) orders to tell", len(wantBlocked), len(wantReview))
	}

	// A retry of a request, with decide=true, stores nothing twice: its
	// blocked orders are blocked again, kept once.
	var res decideResp
	if code := httpJSON(t, "POST", base+"/v1/streams/orders/events?decide=true", "application/x-ndjson", bodies[1], &res); code != 200 || res.Blocked == nil || *res.Blocked == 0 {
		t.Fatalf("retry: status %d, %+v", code, res)
	}

	check := func(when string) {
		t.Helper()
		var status struct {
			Streams map[string]struct {
				Accepted *uint64 `json:"accepted"`
				Blocked  *uint64 `json:"blocked"`
				Review   *uint64 `json:"review"`
			} `json:"streams"`
		}
		if code := httpJSON(t, "GET", base+"/v1/status", "", nil, &status); code != 200 {
			t.Fatalf("%s: status %d", when, code)
		}
		o := status.Streams["orders"]
		if o.Accepted == nil || o.Blocked == nil || o.Review == nil || *o.Accepted != uint64(len(stored)) ||
			*o.Blocked != uint64(len(wantBlocked)) || *o.Review != uint64(len(wantReview)) {
			t.Fatalf("%s: status accepted %v blocked %v review %v; want %d, %d, %d", when, o.Accepted, o.Blocked, o.Review, len(stored), len(wantBlocked), len(wantReview))
		}
		ids, rules := decidedList(t, base, "block")
		if !slices.Equal(ids, wantBlocked) || !slices.EqualFunc(rules, wantBlockedRules, slices.Equal) {
			t.Fatalf("%s: blocked list of %d, want %d", when, len(ids), len(wantBlocked))
		}
		ids, rules = decidedList(t, base, "review")
		if !slices.Equal(ids, wantReview) || !slices.EqualFunc(rules, wantReviewRules, slices.Equal) {
			t.Fatalf("%s: review list of %d, want %d", when, len(ids), len(wantReview))
		}
	}
	check("after ingest")

	// The views count the stored orders only: speed, then batch (the lake).
	want := expect(stored)
	eventually(t, "speed answer without the blocked orders", 60*time.Second, func() string {
		return compare(query(t, base, from, to), want, "speed")
	})
	eventually(t, "batch answer without the blocked orders", 90*time.Second, func() string {
		var run map[string]any
		if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 || run["status"] != "succeeded" {
			return fmt.Sprintf("batch run: %d %v", code, run)
		}
		q := query(t, base, from, to)
		if q.BatchCutoff == nil {
			return "no batch_cutoff"
		}
		return compare(q, want, "batch")
	})

	// kill -9, and a restart of the log's server: every decision
	// acknowledged is kept.
	st.Braid.Kill(t)
	st.NATS.Restart(t)
	p := st.Start("up")
	check("after kill -9 and restarts")
	eventually(t, "answer after the restart", 60*time.Second, func() string {
		return compare(query(t, base, from, to), want, "batch")
	})
	if err := p.Stop(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}

	// The lake holds the stored orders, each once, and no blocked one.
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT order_id FROM ` + lakeSource(t, st.DataDir, "orders") + ` ORDER BY order_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var lake []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		lake = append(lake, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var wantLake []string
	for _, o := range stored {
		wantLake = append(wantLake, o.ID)
	}
	slices.Sort(wantLake)
	if !slices.Equal(lake, wantLake) {
		t.Fatalf("lake holds %d orders, want the %d stored", len(lake), len(wantLake))
	}
}
