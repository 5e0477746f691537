package alertbox_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/storage/alertbox"
	"github.com/braid-data/braid/tests/testenv"
)

func openBox(t *testing.T, js jetstream.JetStream, ns string) *alertbox.Box {
	t.Helper()
	b, err := alertbox.Open(t.Context(), js, alertbox.Options{Namespace: ns, AckWait: 5 * time.Second, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func rec(alert, id string, window int64) alertbox.Record {
	return alertbox.Record{Kind: alertbox.KindDelivery, ID: id, Alert: alert, Window: window, Group: "g", State: "firing",
		Version: "v1", Final: true, Decided: 42, Arrival: 41, Body: []byte(`{"id":"` + id + `"}`)}
}

// TestOutbox: a record is stored once per id (a publish repeated after a
// crash), records read back in order with every key, by alert and since a
// time; a second Open over the same streams sees them.
func TestOutbox(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	ns := testenv.Namespace(t)
	b := openBox(t, js, ns)
	ctx := t.Context()
	for i := range 5 {
		r := rec("hot", fmt.Sprint("hot/w", i), int64(i))
		if i == 3 {
			r.Kind = alertbox.KindBaseline
		}
		for range 2 { // published again: stored once
			if err := b.Publish(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := b.Publish(ctx, rec("cold", "cold/w0", 0)); err != nil {
		t.Fatal(err)
	}
	mid := time.Now()
	time.Sleep(20 * time.Millisecond)
	if err := b.Publish(ctx, rec("hot", "hot/w5", 5)); err != nil {
		t.Fatal(err)
	}
	read := func(b *alertbox.Box, since time.Time) []alertbox.Record {
		var out []alertbox.Record
		if err := b.Records(ctx, "hot", since, func(r alertbox.Record) error { out = append(out, r); return nil }); err != nil {
			t.Fatal(err)
		}
		return out
	}
	all := read(b, time.Time{})
	var ids []string
	for i, r := range all {
		ids = append(ids, r.ID)
		want := rec("hot", r.ID, int64(i))
		if i == 3 {
			want.Kind = alertbox.KindBaseline
		}
		if r.Kind != want.Kind || r.Alert != "hot" || r.Window != int64(i) || r.Group != "g" || r.State != "firing" || r.Version != "v1" ||
			!r.Final || r.Decided != 42 || r.Arrival != 41 || string(r.Body) != string(want.Body) {
			t.Errorf("record %d: %+v, want %+v", i, r, want)
		}
	}
	if want := []string{"hot/w0", "hot/w1", "hot/w2", "hot/w3", "hot/w4", "hot/w5"}; !slices.Equal(ids, want) {
		t.Fatalf("records %v, want %v", ids, want)
	}
	if late := read(b, mid); len(late) != 1 || late[0].ID != "hot/w5" {
		t.Fatalf("records since the middle: %+v", late)
	}
	if none := read(b, time.Now().Add(time.Hour)); len(none) != 0 {
		t.Fatalf("records since the future: %+v", none)
	}
	if again := read(openBox(t, js, ns), time.Time{}); len(again) != len(all) {
		t.Fatalf("a second box reads %d records, want %d", len(again), len(all))
	}
	var none []alertbox.Record
	if err := b.Records(ctx, "never", time.Time{}, func(r alertbox.Record) error { none = append(none, r); return nil }); err != nil || len(none) != 0 {
		t.Fatalf("an alert without records: %v %v", none, err)
	}
}

// TestDeliveries: deliveries (never baselines) are handed to the
// consumers of two boxes, each to one at a time; a retry comes back with
// the next attempt after its delay; a dead one lands in the dead-letter
// queue with its reason and comes back, same id and body, when replayed.
func TestDeliveries(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	ns := testenv.Namespace(t)
	b1, b2 := openBox(t, js, ns), openBox(t, js, ns)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()

	var mu sync.Mutex
	var failDead atomic.Bool // a/dead fails until the test replays it
	failDead.Store(true)
	attempts := map[string][]int{}
	retriedAt := map[string]time.Time{}
	var gaps []time.Duration
	handle := func(_ context.Context, d *alertbox.Delivery) {
		mu.Lock()
		attempts[d.ID] = append(attempts[d.ID], d.Attempt)
		if at, ok := retriedAt[d.ID]; ok {
			gaps = append(gaps, time.Since(at))
		}
		mu.Unlock()
		switch {
		case d.ID == "a/retry" && d.Attempt < 3:
			mu.Lock()
			retriedAt[d.ID] = time.Now()
			mu.Unlock()
			_ = d.Retry(300 * time.Millisecond)
		case d.ID == "a/dead" && failDead.Load() && d.Attempt < 2:
			_ = d.Retry(10 * time.Millisecond)
		case d.ID == "a/dead" && failDead.Load():
			_ = d.Dead(ctx, "receiver said 500")
		default:
			_ = d.Done()
		}
	}
	done := make(chan struct{}, 2)
	for _, b := range []*alertbox.Box{b1, b2} {
		go func() { _ = b.Consume(ctx, 4, handle); done <- struct{}{} }()
	}
	for i := range 20 {
		if err := b1.Publish(ctx, rec("a", fmt.Sprint("a/ok", i), int64(i))); err != nil {
			t.Fatal(err)
		}
	}
	base := rec("a", "a/base", 0)
	base.Kind = alertbox.KindBaseline
	for _, r := range []alertbox.Record{rec("a", "a/retry", 1), rec("a", "a/dead", 2), base} {
		if err := b1.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, "every delivery ended", 30*time.Second, func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(attempts["a/retry"]) < 3 || len(attempts["a/dead"]) < 2 || len(attempts) < 22 {
			return fmt.Sprintf("%v", attempts)
		}
		return ""
	})
	dls, err := b2.DeadLetters(ctx, "a", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 1 || dls[0].ID != "a/dead" || dls[0].Error != "receiver said 500" || dls[0].Attempts != 2 || dls[0].FailedAt == 0 ||
		string(dls[0].Body) != string(rec("a", "a/dead", 2).Body) || dls[0].Window != 2 {
		t.Fatalf("dead letters: %+v", dls)
	}
	counts, err := b1.DeadLetterCounts(ctx)
	if err != nil || counts["a"] != 1 || len(counts) != 1 {
		t.Fatalf("dead-letter counts %v %v", counts, err)
	}
	failDead.Store(false)
	nrep, err := b2.Replay(ctx, "a")
	if err != nil || nrep != 1 {
		t.Fatalf("replay: %d %v", nrep, err)
	}
	testenv.Eventually(t, "the replayed delivery delivered", 30*time.Second, func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(attempts["a/dead"]) < 3 {
			return fmt.Sprintf("%v", attempts["a/dead"])
		}
		return ""
	})
	if dls, err := b1.DeadLetters(ctx, "a", 0); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters after the replay: %+v %v", dls, err)
	}
	cancel()
	<-done
	<-done
	mu.Lock()
	defer mu.Unlock()
	for id, at := range attempts {
		want := []int{1}
		switch id {
		case "a/retry":
			want = []int{1, 2, 3}
		case "a/dead":
			want = []int{1, 2, 1} // the replay is a new delivery of the same id
		case "a/base":
			t.Errorf("a baseline was delivered")
		}
		if !slices.Equal(at, want) {
			t.Errorf("%s: attempts %v, want %v", id, at, want)
		}
	}
	for _, g := range gaps[:2] {
		if g < 250*time.Millisecond {
			t.Errorf("a retry came back after %v, before its 300ms delay", g)
		}
	}
}

// TestJournal: recent outcomes keep the last defaults.AlertRecent per
// alert; the state holds the last value; Notify publishes the body with
// its id.
func TestJournal(t *testing.T) {
	n := testenv.StartNATS(t)
	nc, js := n.JetStream(t)
	b := openBox(t, js, testenv.Namespace(t))
	ctx := t.Context()
	for i := range 60 {
		if err := b.Log(ctx, "a", alertbox.Outcome{ID: fmt.Sprint(i), Outcome: "delivered"}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.Recent(ctx, "a")
	if err != nil || len(got) != 50 || got[0].ID != "10" || got[49].ID != "59" {
		t.Fatalf("recent: %d %v", len(got), err)
	}
	if got, err := b.Recent(ctx, "b"); err != nil || len(got) != 0 {
		t.Fatalf("recent of another alert: %v %v", got, err)
	}
	if s, err := b.State(ctx, "a"); err != nil || s != nil {
		t.Fatalf("state before any: %q %v", s, err)
	}
	for _, v := range []string{"one", "two"} {
		if err := b.SetState(ctx, "a", []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := b.State(ctx, "a"); err != nil || string(s) != "two" {
		t.Fatalf("state: %q %v", s, err)
	}
	sub, err := nc.SubscribeSync("ops.alerts")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Notify(ctx, "ops.alerts", "a/x/firing", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(m.Data) != `{"x":1}` || m.Header.Get(nats.MsgIdHdr) != "a/x/firing" {
		t.Fatalf("notified: %v %v", m, err)
	}
}
