package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// decidedEvents makes n decided events of orders with ids prefix-0... and
// outcomes alternating by i%3 (two blocked, one for review).
func decidedEvents(prefix string, n int, at time.Time) []eventlog.Decided {
	out := make([]eventlog.Decided, n)
	for i := range out {
		o, rules := "block", []string{"huge", "odd_country"}
		if i%3 == 2 {
			o, rules = "review", []string{"big"}
		}
		out[i] = eventlog.Decided{ID: fmt.Sprintf("%s-%d", prefix, i), Outcome: o, Rules: rules, Source: "http", Time: at,
			Event: fmt.Appendf(nil, `{"amount":%d,"order_id":"%s-%d"}`, 1000+i, prefix, i)}
	}
	return out
}

// allDecided lists every decided event of a stream with outcome o, page
// by page.
func allDecided(t *testing.T, l *eventlog.Log, stream string, o logic.Outcome, limit int) []eventlog.Decided {
	t.Helper()
	var out []eventlog.Decided
	var after eventlog.Cursor
	for {
		page, err := l.DecidedEvents(context.Background(), stream, o, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, page...)
		if len(page) < limit {
			return out
		}
		after = page[len(page)-1].Cursor()
	}
}

// TestDecidedEvents: decided events are kept per stream and outcome,
// packed, a repeated id stored once per outcome (a retry), listed oldest
// first through a cursor, counted as events, and never on the clean log:
// an id blocked stays free there.
func TestDecidedEvents(t *testing.T) {
	ctx := context.Background()
	l := testenv.OpenLog(t, eventlog.Options{}, "orders", "clicks")
	at := time.Date(2026, 3, 1, 12, 0, 0, 123456789, time.UTC)
	first := decidedEvents("a", 3000, at)
	for range 2 { // a retry stores nothing twice
		if err := l.PublishDecided(ctx, "orders", first); err != nil {
			t.Fatal(err)
		}
	}
	second := append(decidedEvents("b", 30, at.Add(time.Second)), first[:100]...)
	if err := l.PublishDecided(ctx, "orders", second); err != nil {
		t.Fatal(err)
	}
	want := map[logic.Outcome][]eventlog.Decided{}
	for _, d := range append(slices.Clone(first), second[:30]...) {
		o, _ := logic.ParseOutcome(d.Outcome)
		want[o] = append(want[o], d)
	}
	for _, o := range []logic.Outcome{logic.Block, logic.Review} {
		n, err := l.DecidedCount(ctx, "orders", o)
		if err != nil || n != uint64(len(want[o])) {
			t.Fatalf("%s: count %d (%v), want %d", o, n, err, len(want[o]))
		}
		for _, limit := range []int{5000, 77} {
			got := allDecided(t, l, "orders", o, limit)
			if len(got) != len(want[o]) {
				t.Fatalf("%s, limit %d: listed %d, want %d", o, limit, len(got), len(want[o]))
			}
			for i, d := range got {
				w := want[o][i]
				if d.ID != w.ID || d.Outcome != w.Outcome || !slices.Equal(d.Rules, w.Rules) || d.Source != w.Source ||
					!d.Time.Equal(w.Time) || string(d.Event) != string(w.Event) || d.Stream != "orders" {
					t.Fatalf("%s, limit %d: event %d is %+v, want %+v", o, limit, i, d, w)
				}
			}
		}
		if n, err := l.DecidedCount(ctx, "clicks", o); err != nil || n != 0 {
			t.Fatalf("clicks %s: %d (%v)", o, n, err)
		}
	}
	// The ids decided are free on the clean log.
	recs := []eventlog.Record{{ID: first[0].ID, Data: []byte(`{}`)}, {ID: first[2].ID, Data: []byte(`{}`)}}
	if err := l.Publish(ctx, "orders", recs); err != nil {
		t.Fatal(err)
	}
	if n, err := l.EventCount(ctx, "orders"); err != nil || n != 2 {
		t.Fatalf("clean events %d (%v), want 2", n, err)
	}
	if err := l.PublishDecided(ctx, "orders", []eventlog.Decided{{ID: "x", Outcome: "allow"}}); !errors.Is(err, eventlog.ErrNotDecided) {
		t.Fatalf("an allowed event: %v", err)
	}
}
