package serving_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

type ingestEnv struct {
	js  jetstream.JetStream
	srv *httptest.Server
	log *eventlog.Log
	reg *prometheus.Registry
	s   *serving.Server
}

func newIngestEnv(t *testing.T, maxBody int64, maxInFlight int) *ingestEnv {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	l, err := eventlog.Open(context.Background(), js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(t), DedupWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	st := testenv.OrdersStream(t)
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = maxBody
	cfg.HTTP.MaxInFlight = maxInFlight
	reg := prometheus.NewRegistry()
	s, err := serving.New(serving.Options{Config: &cfg, Catalog: testCatalog(st, testView(t, st, "v", time.Minute, 0)), Log: l, Registry: reg, Logger: testenv.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	e := &ingestEnv{js: js, srv: httptest.NewServer(s.Handler()), log: l, reg: reg, s: s}
	t.Cleanup(e.srv.Close)
	return e
}

func (e *ingestEnv) post(t *testing.T, path, ctype, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (e *ingestEnv) ingest(t *testing.T, ctype, payload string) ingest.Result {
	t.Helper()
	code, _, body := e.post(t, "/v1/streams/orders/events", ctype, payload)
	if code != 200 {
		t.Fatalf("ingest: %d %s", code, body)
	}
	var r ingest.Result
	if err := json.Unmarshal(body, &r); err != nil || r.Errors == nil {
		t.Fatalf("ingest answer %s: %v", body, err)
	}
	return r
}

func TestIngestHTTP(t *testing.T) {
	ctx := context.Background()
	e := newIngestEnv(t, 4096, 8)
	const path = "/v1/streams/orders/events"
	ev := func(id string, extra string) string {
		return fmt.Sprintf(`{"id":%q,"ts":"2026-01-01T00:00:00Z","device":"web","amount":1.5,"email":"a@b.c"%s}`, id, extra)
	}

	// One object, no content type.
	r := e.ingest(t, "", ev("o1", ""))
	if r.Accepted != 1 || r.Rejected != 0 || len(r.Errors) != 0 {
		t.Fatalf("object: %+v", r)
	}
	// An array with one bad element.
	r = e.ingest(t, "application/json; charset=utf-8", "["+ev("a1", "")+","+ev("a2", `,"amount":"x"`)+","+ev("a3", "")+"]")
	if r.Accepted != 2 || r.Rejected != 1 || r.Errors[0].Index != 1 || !strings.Contains(r.Errors[0].Error, "amount") {
		t.Fatalf("array: %+v", r)
	}
	// NDJSON with a broken line, a missing required field and a blank line.
	nd := ev("n1", "") + "\n{not json\n\n" + `{"id":"n2","ts":1000,"email":"secret@x.org"}` + "\n" + ev("n3", "") + "\n"
	r = e.ingest(t, "application/x-ndjson", nd)
	if r.Accepted != 2 || r.Rejected != 2 || r.Errors[0].Index != 1 || r.Errors[1].Index != 2 || !strings.Contains(r.Errors[1].Error, "device") {
		t.Fatalf("ndjson: %+v", r)
	}
	// A retry of the same ids is stored once.
	r = e.ingest(t, "application/x-ndjson", ev("n1", "")+"\n"+ev("n3", ""))
	if r.Accepted != 2 {
		t.Fatalf("retry: %+v", r)
	}
	if n := len(testenv.StoredEvents(t, e.js, e.log.StreamName("orders", 0))); n != 5 { // o1 a1 a3 n1 n3
		t.Fatalf("stored %d events, want 5 (accepted, retry deduplicated)", n)
	}
	// Rejects are in the dead-letter queue, reason and field kept, PII masked.
	dls, err := e.log.DeadLetters(ctx, "orders", eventlog.Cursor{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dls) != 3 {
		t.Fatalf("dead letters %d, want 3: %+v", len(dls), dls)
	}
	if dls[0].Field != "amount" || dls[0].Source != "http" || dls[2].Field != "device" || !strings.Contains(dls[1].Reason, "invalid JSON") {
		t.Fatalf("dead letters: %+v", dls)
	}
	for _, d := range dls {
		if bytes.Contains(d.Payload, []byte("secret@x.org")) || bytes.Contains(d.Payload, []byte("a@b.c")) {
			t.Fatalf("raw PII in the dead-letter queue: %s", d.Payload)
		}
	}
	// The DLQ over HTTP.
	code, _, body := get(t, e.srv.URL+"/v1/dlq/orders?limit=2")
	var dl struct {
		Stream string
		Events []eventlog.DeadLetter
		Next   string
	}
	// The NDJSON request's two letters share a record: the page ends
	// inside it, and the next one starts after its first letter.
	if code != 200 || json.Unmarshal(body, &dl) != nil || dl.Stream != "orders" || len(dl.Events) != 2 || dl.Next != dl.Events[1].Cursor().String() ||
		dl.Events[1].Seq == dl.Events[0].Seq || dl.Events[1].Index != 0 {
		t.Fatalf("dlq: %d %s", code, body)
	}
	code, _, body = get(t, fmt.Sprintf("%s/v1/dlq/orders?after=%s", e.srv.URL, dl.Next))
	if code != 200 || json.Unmarshal(body, &dl) != nil || len(dl.Events) != 1 || dl.Events[0].Field != "device" || dl.Events[0].Index != 1 {
		t.Fatalf("dlq after: %d %s", code, body)
	}
	// After a whole record: nothing of it.
	code, _, body = get(t, fmt.Sprintf("%s/v1/dlq/orders?after=%d", e.srv.URL, dl.Events[0].Seq))
	dl.Next = ""
	if code != 200 || json.Unmarshal(body, &dl) != nil || len(dl.Events) != 0 || dl.Next != "" {
		t.Fatalf("dlq after the last record: %d %s", code, body)
	}
	if code, _, body = get(t, e.srv.URL+"/v1/dlq/orders?after=3:x"); code != 400 {
		t.Fatalf("dlq after a bad cursor: %d %s", code, body)
	}
	// Replay: nothing became valid, all kept.
	code, _, body = e.post(t, "/v1/dlq/orders/replay", "", "")
	var rr ingest.ReplayResult
	if code != 200 || json.Unmarshal(body, &rr) != nil || rr.Kept != 2 || rr.Unreplayable != 1 || rr.Replayed != 0 {
		t.Fatalf("replay: %d %s", code, body)
	}

	// Refusals, none of which stores anything.
	for _, tc := range []struct {
		name, path, ctype, body string
		code                    int
	}{
		{"unknown stream", "/v1/streams/nope/events", "", ev("x1", ""), 404},
		{"too large", path, "application/x-ndjson", strings.Repeat(ev("big", "")+"\n", 100), 413},
		{"content type", path, "text/plain", ev("x2", ""), 415},
		{"empty", path, "application/json", "  \n", 400},
		{"empty ndjson", path, "application/x-ndjson", "\n\n", 400},
		{"invalid json", path, "", `{"id":"x3",`, 400},
		{"ndjson as json", path, "application/json", ev("x4", "") + "\n" + ev("x5", ""), 400},
		{"not an object", path, "", `42`, 400},
	} {
		code, _, body := e.post(t, tc.path, tc.ctype, tc.body)
		var ae struct{ Error string }
		if code != tc.code || json.Unmarshal(body, &ae) != nil || ae.Error == "" {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.code)
		}
	}
	if n := len(testenv.StoredEvents(t, e.js, e.log.StreamName("orders", 0))); n != 5 {
		t.Fatalf("refused requests stored events: %d stored, want 5", n)
	}
	info, err := e.log.Info(ctx, "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := e.log.DeadLetterCount(ctx, "orders"); n != 3 {
		t.Fatalf("refused requests dead-lettered: %d", n)
	}

	// Counters: status counts what the log holds (5 events stored, a
	// repeated id once; 3 dead letters), the metric the answers (7 accepted).
	code, _, body = get(t, e.srv.URL+"/v1/status")
	var status map[string]any
	if code != 200 || json.Unmarshal(body, &status) != nil {
		t.Fatalf("status: %d %s", code, body)
	}
	orders := status["streams"].(map[string]any)["orders"].(map[string]any)
	lg := orders["log"].(map[string]any)
	if orders["accepted"] != 5.0 || orders["rejected"] != 3.0 || orders["dead_letters"] != 3.0 || lg["msgs"] != float64(info.Msgs) || lg["last_seq"] != float64(info.LastSeq) {
		t.Fatalf("status orders: %v", orders)
	}
	if sp := orders["speed"].(map[string]any); sp["status"] != "unavailable" {
		t.Fatalf("status speed without a speed layer: %v", sp)
	}
	if got := testenv.CounterValue(t, e.reg, "braid_ingest_events_total", map[string]string{"stream": "orders", "result": "accepted"}); got != 7 {
		t.Fatalf("braid_ingest_events_total accepted = %v", got)
	}
	code, _, body = get(t, e.srv.URL+"/metrics")
	if code != 200 || !bytes.Contains(body, []byte(`braid_http_requests_total{code="413",route="/v1/streams/{stream}/events"} 1`)) {
		t.Fatalf("metrics: %d %s", code, body)
	}
}

// TestIngestUnavailable: a stopped NATS server answers 503 with Retry-After,
// never 200.
func TestIngestUnavailable(t *testing.T) {
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	l, err := eventlog.Open(context.Background(), js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(t), DedupWindow: time.Minute, PublishTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st := testenv.OrdersStream(t)
	s, err := serving.New(serving.Options{Catalog: testCatalog(st, testView(t, st, "v", time.Minute, 0)), Log: l, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(s.Handler())
	defer h.Close()
	n.Stop()
	resp, err := http.Post(h.URL+"/v1/streams/orders/events", "application/json", strings.NewReader(`{"id":"u1","ts":1000,"device":"web"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("NATS down: %d %s (Retry-After %q)", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
}
