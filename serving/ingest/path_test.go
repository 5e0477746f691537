package ingest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// fixedStream is testStream after a configuration fix: device is optional
// (same fields, same PII key).
func fixedStream(t *testing.T) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"device": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt, "email": logic.TypeString},
		PII: map[string]logic.PIIMode{"email": logic.PIIHash}, AllowedLateness: 30 * time.Second}, []byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestReplayTakesTheIngestPath: dead letters replayed after a fix end up
// exactly as the same raw events ingested under the fix: the same
// records in the log, in order (their PII masked once, not twice), and the
// ones still invalid re-queued with the reason and field an ingest gives
// them. Events that are not JSON objects stay with their first reason.
func TestReplayTakesTheIngestPath(t *testing.T) {
	ctx := context.Background()
	var raws [][]byte
	for i := range 12 {
		var ev string
		switch i % 4 {
		case 0: // valid once device is optional, with PII
			ev = fmt.Sprintf(`{"id":"e%d","ts":"2026-01-01T00:00:%02dZ","amount":%d.5,"email":"user%d@example.org"}`, i, i, i, i)
		case 1: // valid once device is optional, without an id
			ev = fmt.Sprintf(`{"ts":%d,"country":"c%d","items":%d}`, 1767225600000+int64(i), i, i)
		case 2: // still invalid: amount is not a number
			ev = fmt.Sprintf(`{"id":"e%d","ts":"2026-01-01T00:00:00Z","amount":"x%d","email":"bad%d@example.org"}`, i, i, i)
		case 3: // never an event
			ev = fmt.Sprintf(`[%d]`, i)
		}
		raws = append(raws, []byte(ev))
	}

	// Under the first configuration every event is rejected (no device).
	strict := testenv.OpenLog(t, eventlog.Options{}, "orders")
	res, err := ingest.NewIngester(strict, testCatalog(testenv.OrdersStream(t)), nil).Ingest(ctx, "orders", raws, "http")
	if err != nil || res.Rejected != len(raws) || res.Accepted != 0 {
		t.Fatalf("ingest under the first configuration: %+v %v", res, err)
	}

	// What an ingest under the fix makes of the same events, on a log of
	// its own.
	fixed := fixedStream(t)
	fresh := testenv.OpenLog(t, eventlog.Options{}, "orders")
	want, err := ingest.NewIngester(fresh, testCatalog(fixed), nil).Ingest(ctx, "orders", raws, "http")
	if err != nil || want.Accepted == 0 || want.Rejected == 0 {
		t.Fatalf("ingest under the fix: %+v %v", want, err)
	}
	wantEvents := testenv.StoredEvents(t, fresh.JetStream(), fresh.StreamName("orders", 0))
	wantLetters := storagetest.AllDeadLetters(t, fresh, "orders", 100)

	rr, err := replay(ctx, strict, fixed)
	if err != nil {
		t.Fatal(err)
	}
	never := 0
	for _, raw := range raws {
		if eventlog.NotReplayable(raw) != "" {
			never++
		}
	}
	if rr.Replayed != want.Accepted || rr.Kept != want.Rejected-never || rr.Unreplayable != never {
		t.Fatalf("replay %+v; an ingest under the fix accepts %d, rejects %d (%d never events)", rr, want.Accepted, want.Rejected, never)
	}
	got := testenv.StoredEvents(t, strict.JetStream(), strict.StreamName("orders", 0))
	if len(got) != len(wantEvents) {
		t.Fatalf("replay stored %d events, an ingest %d", len(got), len(wantEvents))
	}
	for i := range got {
		if string(got[i]) != string(wantEvents[i]) {
			t.Fatalf("event %d: replay stored %s, an ingest %s", i, got[i], wantEvents[i])
		}
	}
	// The letters left: for each event still rejected, the reason and
	// field an ingest under the fix gives it; the others unchanged.
	left := storagetest.AllDeadLetters(t, strict, "orders", 100)
	reasons := func(dls []eventlog.DeadLetter, keep func(eventlog.DeadLetter) bool) []string {
		var out []string
		for _, d := range dls {
			if keep(d) {
				out = append(out, d.Field+": "+d.Reason)
			}
		}
		return out
	}
	object := func(d eventlog.DeadLetter) bool { return d.Unreplayable == "" }
	if g, w := reasons(left, object), reasons(wantLetters, object); len(g) == 0 || !slices.Equal(g, w) {
		t.Fatalf("re-queued letters %q, an ingest under the fix rejects %q", g, w)
	}
	for _, d := range left {
		if d.Unreplayable == "" && d.Source != "replay" || d.Unreplayable != "" && d.Source != "http" {
			t.Fatalf("letter left %+v", d)
		}
	}
}

// TestLoadIsOneIngest: a load in batches stores what one ingest of all its
// events stores: its events are numbered by their place in the whole load,
// so its dead letters get the ids of the ingest's, and running the ingest
// after the load stores nothing new; its counts and metrics add up.
func TestLoadIsOneIngest(t *testing.T) {
	ctx := context.Background()
	l := testenv.OpenLog(t, eventlog.Options{}, "orders")
	reg := prometheus.NewRegistry()
	in := ingest.NewIngester(l, testCatalog(testenv.OrdersStream(t)), reg)
	var raws [][]byte
	for i := range 30 {
		device := `,"device":"web"`
		if i%3 == 1 {
			device = "" // rejected: device is required
		}
		raws = append(raws, fmt.Appendf(nil, `{"id":"e%d","ts":"2026-01-01T00:00:00Z","amount":1%s}`, i%10, device)) // ids repeat: deduplicated
	}
	ld, err := in.NewLoad("orders", "file:x.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	var accepted, rejected int
	var errs []ingest.EventError
	for b := range slices.Chunk(raws, 7) {
		res, err := ld.Ingest(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		accepted, rejected, errs = accepted+res.Accepted, rejected+res.Rejected, append(errs, res.Errors...)
	}
	if err := ld.Close(ctx); err != nil {
		t.Fatal(err)
	}
	letters := storagetest.AllDeadLetters(t, l, "orders", 100)
	events := testenv.StoredEvents(t, l.JetStream(), l.StreamName("orders", 0))

	res, err := in.Ingest(ctx, "orders", raws, "file:x.ndjson")
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != accepted || res.Rejected != rejected || !slices.Equal(res.Errors, errs) {
		t.Fatalf("load accepted %d rejected %d %v; one ingest %+v", accepted, rejected, errs, res)
	}
	if again := storagetest.AllDeadLetters(t, l, "orders", 100); len(again) != len(letters) || len(letters) != rejected {
		t.Fatalf("%d dead letters after the load (%d rejected), %d after the same ingest", len(letters), rejected, len(again))
	}
	if again := testenv.StoredEvents(t, l.JetStream(), l.StreamName("orders", 0)); len(again) != len(events) {
		t.Fatalf("%d events after the load, %d after the same ingest", len(events), len(again))
	}
	for k, e := range errs {
		if d := letters[k]; d.Source != "file:x.ndjson" || d.Field != "device" || e.Index%3 != 1 {
			t.Fatalf("error %+v, letter %+v", e, d)
		}
	}
	if acc, rej := in.Counts("orders"); acc != uint64(2*accepted) || rej != uint64(2*rejected) {
		t.Fatalf("counts %d/%d after two runs of %d/%d", acc, rej, accepted, rejected)
	}
	if got := testenv.CounterValue(t, reg, "braid_ingest_events_total", map[string]string{"stream": "orders", "result": "accepted"}); got != float64(2*accepted) {
		t.Fatalf("braid_ingest_events_total accepted = %v, want %d", got, 2*accepted)
	}
}

// TestUnknownStreamAndNoLog: an ingester refuses a stream its catalog does
// not declare, and without a log fails as the log being unavailable.
func TestUnknownStreamAndNoLog(t *testing.T) {
	ctx := context.Background()
	l := testenv.OpenLog(t, eventlog.Options{}, "orders")
	in := ingest.NewIngester(l, testCatalog(testenv.OrdersStream(t)), nil)
	if _, err := in.Ingest(ctx, "nope", [][]byte{[]byte(`{}`)}, "http"); !errors.Is(err, ingest.ErrUnknownStream) {
		t.Fatalf("unknown stream: %v", err)
	}
	if _, err := in.ReplayDeadLetters(ctx, "nope", "replay"); !errors.Is(err, ingest.ErrUnknownStream) {
		t.Fatalf("replay of an unknown stream: %v", err)
	}
	none := ingest.NewIngester(nil, testCatalog(testenv.OrdersStream(t)), nil)
	if _, err := none.Ingest(ctx, "orders", [][]byte{[]byte(`{}`)}, "http"); !errors.Is(err, eventlog.ErrUnavailable) {
		t.Fatalf("no log: %v", err)
	}
	if _, err := none.NewLoad("orders", "file:x"); !errors.Is(err, eventlog.ErrUnavailable) {
		t.Fatalf("no log: %v", err)
	}
}
