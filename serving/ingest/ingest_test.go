package ingest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// natsWithLimit is a JetStream server with the given max_payload (0: the
// default 1 MiB, via testenv) and a connection to it.
func natsWithLimit(t *testing.T, maxPayload int32) jetstream.JetStream {
	t.Helper()
	if maxPayload == 0 {
		_, js := testenv.StartNATS(t).JetStream(t)
		return js
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: testenv.FreePort(t), JetStream: true, StoreDir: t.TempDir(),
		MaxPayload: maxPayload, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatalf("nats server: %v", err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatalf("nats connect: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// logIDs reads a stream's clean log and returns the stored events' ids in
// log order.
func logIDs(t *testing.T, js jetstream.JetStream, l *eventlog.Log, s *logic.Stream) []string {
	t.Helper()
	ids := []string{}
	for i, data := range testenv.StoredEvents(t, js, l.StreamName(s.Name, 0)) {
		ev, err := s.Decode(data)
		if err != nil {
			t.Fatalf("stored event %d does not decode: %v", i, err)
		}
		ids = append(ids, ev.ID)
	}
	return ids
}

// TestIngestOversized: Ingester.Ingest itself (the path of HTTP, `braid
// ingest` and every other caller) rejects events too large for one log
// message to the dead-letter queue with their reason, without failing the
// batch: the other events are stored, every rejected one is dead-lettered
// once, in order, with its payload masked and, when too large for a
// message, cut to a head. The limit is the server's max_payload.
func TestIngestOversized(t *testing.T) {
	ev := func(id, extra string) string {
		return fmt.Sprintf(`{"id":%q,"ts":"2026-01-01T00:00:00Z","device":"web","amount":1.5,"email":"secret-%s@x.org"%s}`, id, id, extra)
	}
	lt := strings.Repeat("<", 60000) // 6 bytes each once escaped: 3 such values make a record over 1 MiB
	type event struct {
		raw string
		// Per limit (1 MiB, 64 KiB): "" accepted, else a substring of the
		// reason; truncated: the dead letter keeps only a head.
		reject    [2]string
		field     string
		truncated [2]bool
	}
	const tooBig, tooLong, notNumber = "larger than the log's message limit", "longer than the limit", "want a number"
	events := []event{
		{raw: ev("g1", "")},
		{raw: ev(lt, fmt.Sprintf(`,"country":%q,"device":%q`, lt, lt)), reject: [2]string{tooBig, tooBig}, truncated: [2]bool{true, true}},
		{raw: ev("field", `,"country":"`+strings.Repeat("y", 2<<20)+`"`), reject: [2]string{tooLong, tooLong}, field: "country", truncated: [2]bool{true, true}},
		{raw: ev("g2", "")},
		{raw: ev("bad", `,"amount":"x"`), reject: [2]string{notNumber, notNumber}, field: "amount"},
		{raw: ev("blob", `,"blob":"`+strings.Repeat("z", 300<<10)+`"`)}, // unknown field: dropped, the record is small
		{raw: ev("medium", `,"country":"`+strings.Repeat("m", 40000)+`","device":"`+strings.Repeat("m", 40000)+`"`),
			reject: [2]string{"", tooBig}, truncated: [2]bool{false, true}},
		{raw: ev("badblob", `,"amount":"x","blob":"`+strings.Repeat("b", 30000)+`"`), reject: [2]string{notNumber, notNumber}, field: "amount"},
		{raw: ev("g3", "")},
	}
	for li, limit := range []int32{0, 64 << 10} {
		maxMsg := int(limit)
		if maxMsg == 0 {
			maxMsg = 1 << 20
		}
		t.Run(fmt.Sprintf("max_payload=%d", maxMsg), func(t *testing.T) {
			ctx := context.Background()
			js := natsWithLimit(t, limit)
			l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(t), DedupWindow: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			st := testenv.OrdersStream(t)
			reg := prometheus.NewRegistry()
			in := ingest.NewIngester(l, testCatalog(st), reg)
			raws := make([][]byte, len(events))
			var wantIDs []string
			var wantErrs []int
			for i, e := range events {
				raws[i] = []byte(e.raw)
				if e.reject[li] == "" {
					ev, _, err := st.Prepare(raws[i], 0)
					if err != nil {
						t.Fatalf("event %d should be valid: %v", i, err)
					}
					wantIDs = append(wantIDs, ev.ID)
				} else {
					wantErrs = append(wantErrs, i)
				}
			}

			res, err := in.Ingest(ctx, "orders", raws, "test")
			if err != nil {
				t.Fatalf("ingest failed as a whole: %v", err)
			}
			if res.Accepted != len(wantIDs) || res.Rejected != len(wantErrs) || len(res.Errors) != len(wantErrs) {
				t.Fatalf("accepted %d rejected %d %+v; want %d and %d", res.Accepted, res.Rejected, res.Errors, len(wantIDs), len(wantErrs))
			}
			for k, i := range wantErrs {
				if got := res.Errors[k]; got.Index != i || !strings.Contains(got.Error, events[i].reject[li]) || !strings.Contains(got.Error, events[i].field) {
					t.Errorf("error %d = %d %.200q, want event %d: %s", k, got.Index, got.Error, i, events[i].reject[li])
				}
			}
			// Nothing else lost: exactly the accepted events are stored, in order.
			if got := logIDs(t, js, l, st); !slices.Equal(got, wantIDs) {
				t.Fatalf("stored %v, want %v", got, wantIDs)
			}
			// Every rejected one is in the dead-letter queue, in order.
			dls, err := l.DeadLetters(ctx, "orders", eventlog.Cursor{}, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(dls) != len(wantErrs) {
				t.Fatalf("%d dead letters, want %d", len(dls), len(wantErrs))
			}
			for k, i := range wantErrs {
				d, e := dls[k], events[i]
				if d.Stream != "orders" || d.Source != "test" || d.Field != e.field || !strings.Contains(d.Reason, e.reject[li]) || d.Time.IsZero() {
					t.Errorf("dead letter of event %d: %+v, want field %q reason ~%q", i, d, e.field, e.reject[li])
				}
				if !json.Valid(d.Payload) || bytes.Contains(d.Payload, []byte("secret-")) {
					t.Errorf("dead letter of event %d: payload not JSON or not masked: %.300s", i, d.Payload)
				}
				var head struct {
					Truncated bool   `json:"truncated"`
					Bytes     int    `json:"bytes"`
					Head      string `json:"head"`
				}
				_ = json.Unmarshal(d.Payload, &head)
				if head.Truncated != e.truncated[li] {
					t.Errorf("dead letter of event %d: truncated %v, want %v (%d payload bytes)", i, head.Truncated, e.truncated[li], len(d.Payload))
				}
				if head.Truncated && (head.Bytes < len(e.raw)/2 || head.Head == "" || !strings.HasPrefix(string(d.Payload), `{"truncated":true`)) {
					t.Errorf("dead letter of event %d: bad head %.300s", i, d.Payload)
				}
				if !head.Truncated {
					var obj map[string]any
					if err := json.Unmarshal(d.Payload, &obj); err != nil || obj["email"] == nil || len(d.Payload) < len(e.raw)/2 {
						t.Errorf("dead letter of event %d: payload not kept whole: %.300s", i, d.Payload)
					}
				}
				if b, _ := json.Marshal(d); len(b) > maxMsg {
					t.Errorf("dead letter of event %d is %d bytes, over the %d limit", i, len(b), maxMsg)
				}
			}
			if acc, rej := in.Counts("orders"); acc != uint64(len(wantIDs)) || rej != uint64(len(wantErrs)) {
				t.Fatalf("counts %d/%d, want %d/%d", acc, rej, len(wantIDs), len(wantErrs))
			}
			if got := testenv.CounterValue(t, reg, "braid_ingest_events_total", map[string]string{"stream": "orders", "result": "rejected"}); got != float64(len(wantErrs)) {
				t.Fatalf("braid_ingest_events_total rejected = %v", got)
			}

			// A replay of the queue goes through: nothing became valid,
			// every letter is kept, the log is unchanged.
			rr, err := in.ReplayDeadLetters(ctx, "orders", "replay")
			if err != nil || rr.Replayed != 0 || rr.Kept+rr.Unreplayable != len(wantErrs) {
				t.Fatalf("replay: %+v %v", rr, err)
			}
			if got := logIDs(t, js, l, st); !slices.Equal(got, wantIDs) {
				t.Fatalf("after replay stored %v, want %v", got, wantIDs)
			}
		})
	}
}

// TestIngestRetryStoresDeadLettersOnce: a request retried (after a
// timeout, say) stores its events and its dead letters once; two identical
// bad events of one request stay two dead letters.
func TestIngestRetryStoresDeadLettersOnce(t *testing.T) {
	ctx := context.Background()
	js := natsWithLimit(t, 0)
	l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(t), DedupWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	st := testenv.OrdersStream(t)
	in := ingest.NewIngester(l, testCatalog(st), prometheus.NewRegistry())
	bad := []byte(`{"id":"b","ts":"2026-01-01T00:00:00Z","device":"web","amount":"x"}`)
	raws := [][]byte{[]byte(`{"id":"g","ts":"2026-01-01T00:00:00Z","device":"web","amount":1}`), bad, bad,
		[]byte(`{"id":"n","ts":"2026-01-01T00:00:00Z","amount":1}`)}
	for try := range 3 {
		res, err := in.Ingest(ctx, "orders", raws, "http")
		if err != nil || res.Accepted != 1 || res.Rejected != 3 {
			t.Fatalf("try %d: %+v %v", try, res, err)
		}
	}
	// Another source is another request: its dead letters are its own.
	if _, err := in.Ingest(ctx, "orders", raws[1:2], "file:x.ndjson"); err != nil {
		t.Fatal(err)
	}
	dls, err := l.DeadLetters(ctx, "orders", eventlog.Cursor{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range dls {
		got = append(got, d.Source+"/"+d.Field)
	}
	if want := []string{"http/amount", "http/amount", "http/device", "file:x.ndjson/amount"}; !slices.Equal(got, want) {
		t.Fatalf("dead letters %v, want %v", got, want)
	}
	if ids := logIDs(t, js, l, st); !slices.Equal(ids, []string{"g"}) {
		t.Fatalf("events %v", ids)
	}
}

// TestPIIDeadLetterNotAnObject: on a stream with PII fields, an event that
// is not a JSON object is dead-lettered with its payload withheld and
// marked as never replayable: no configuration accepts it. After a
// configuration fix a replay stores the letters it now accepts, leaves
// these with their own reason, and says why; no raw PII is stored.
func TestPIIDeadLetterNotAnObject(t *testing.T) {
	ctx := context.Background()
	js := natsWithLimit(t, 0)
	ns := testenv.Namespace(t)
	l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: ns, DedupWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	st := testenv.OrdersStream(t) // device is required; email is hashed
	in := ingest.NewIngester(l, testCatalog(st), prometheus.NewRegistry())
	raws := [][]byte{
		[]byte(`["ann.smith@example.com"]`),
		[]byte(`{"id":"p1","ts":"2026-01-01T00:00:00Z","email":"ann.smith@example.com","amount":1}`),
		[]byte(`{"id":"p2","ts":"2026-01-01T00:00:00Z","email":"ann.smith@example.com","device":"web"`),
	}
	res, err := in.Ingest(ctx, "orders", raws, "http")
	if err != nil || res.Rejected != 3 {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	dls, err := l.DeadLetters(ctx, "orders", eventlog.Cursor{}, 10)
	if err != nil || len(dls) != 3 {
		t.Fatalf("dead letters: %+v %v", dls, err)
	}
	withheld := `"[payload withheld: not a JSON object and the stream has PII fields]"`
	for _, i := range []int{0, 2} {
		if d := dls[i]; string(d.Payload) != withheld || d.Unreplayable != eventlog.UnreplayableNotObject || !strings.Contains(d.Reason, "JSON") {
			t.Fatalf("letter %d: %+v", i, d)
		}
	}
	if dls[1].Unreplayable != "" || dls[1].Field != "device" {
		t.Fatalf("letter 1: %+v", dls[1])
	}

	// The fix: device is optional.
	fixed, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"device": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt, "email": logic.TypeString},
		PII: map[string]logic.PIIMode{"email": logic.PIIHash}}, []byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	for try := range 2 {
		rr, err := ingest.NewIngester(l, testCatalog(fixed), nil).ReplayDeadLetters(ctx, "orders", "replay")
		if want := (ingest.ReplayResult{Replayed: 1 - try, Unreplayable: 2}); err != nil || rr != want {
			t.Fatalf("replay %d: %+v %v, want %+v", try, rr, err, want)
		}
		left, err := l.DeadLetters(ctx, "orders", eventlog.Cursor{}, 10)
		if err != nil || len(left) != 2 {
			t.Fatalf("after replay %d: %+v %v", try, left, err)
		}
		for k, d := range left {
			orig := dls[2*k]
			if string(d.Payload) != withheld || d.Reason != orig.Reason || d.Source != "http" || !d.Time.Equal(orig.Time) || d.Unreplayable != eventlog.UnreplayableNotObject {
				t.Fatalf("after replay %d, letter %d: %+v, was %+v", try, k, d, orig)
			}
		}
		if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != 2 {
			t.Fatalf("after replay %d: %d dead letters %v", try, n, err)
		}
	}
	if ids := logIDs(t, js, l, fixed); !slices.Equal(ids, []string{"p1"}) {
		t.Fatalf("stored %v", ids)
	}
	// No raw PII anywhere in the log: events, dead letters (decompressed).
	for _, data := range testenv.StoredEvents(t, js, l.StreamName("orders", 0)) {
		if bytes.Contains(data, []byte("ann.smith")) {
			t.Fatalf("raw PII in the log: %s", data)
		}
	}
	for _, data := range testenv.StoredMessages(t, js, ns+"_dlq") {
		err := eventlog.Unpack(data, func(_ int, _, rec []byte) error {
			if bytes.Contains(rec, []byte("ann.smith")) {
				return fmt.Errorf("raw PII in a dead letter: %s", rec)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
