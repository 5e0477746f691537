package serving_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// badEnv is a serving.Server over a real JetStream log, for bad input.
type badEnv struct {
	url    string
	log    *eventlog.Log
	js     jetstream.JetStream
	stream *logic.Stream
}

// badStream is testStream with a future-skew limit: ts, id, country,
// device (required), amount (float), items (int), email (PII hash).
func badStream(t testing.TB) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"device": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt, "email": logic.TypeString},
		Required: []string{"device"}, PII: map[string]logic.PIIMode{"email": logic.PIIHash},
		AllowedLateness: 30 * time.Second, MaxFuture: time.Hour}, []byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newBadEnv(t *testing.T, cfg config.Config) *badEnv {
	t.Helper()
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	l, err := eventlog.Open(context.Background(), js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(t),
		DedupWindow: time.Minute, MaxMsgs: cfg.NATS.MaxMsgs, MaxBytes: cfg.NATS.MaxBytes, PublishTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	st := badStream(t)
	s, err := serving.New(serving.Options{Config: &cfg, Catalog: testCatalog(st, testView(t, st, "v", time.Minute, 0)), Log: l,
		Registry: prometheus.NewRegistry(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &badEnv{url: srv.URL, log: l, js: js, stream: st}
}

func badDo(t *testing.T, method, url, ctype string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
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

// storedIDs reads the stream's clean log and returns the ids of the stored
// events, in log order.
func (e *badEnv) storedIDs(t *testing.T) []string {
	t.Helper()
	var ids []string
	for i, data := range testenv.StoredEvents(t, e.js, e.log.StreamName("orders", 0)) {
		ev, err := e.stream.Decode(data)
		if err != nil {
			t.Fatalf("stored event %d does not decode: %v", i, err)
		}
		if bytes.Contains(data, []byte("secret")) {
			t.Fatalf("raw PII in the log: %s", data)
		}
		ids = append(ids, ev.ID)
	}
	return ids
}

// bev is a valid event of badStream; extra is appended inside the object
// (a repeated key overrides the earlier one: the JSON decoder keeps the last).
func bev(id, extra string) string {
	ts := time.Now().UTC().Add(-time.Minute).Format(time.RFC3339)
	return fmt.Sprintf(`{"id":%q,"ts":%q,"device":"web","amount":1.5,"items":2,"email":"secret-%s@x.org"%s}`, id, ts, id, extra)
}

type wantReject struct {
	field  string // "" = the whole event
	reason string // substring of the reason
}

// TestBadInput sends every kind of bad input through HTTP ingest: each is
// a clear error; every rejected event is in the dead-letter queue with its
// reason, field, source, time and masked payload; the log holds exactly the
// accepted events; nothing crashes.
func TestBadInput(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 4 << 20
	e := newBadEnv(t, cfg)
	const path = "/v1/streams/orders/events"
	nd := func(lines ...string) string { return strings.Join(lines, "\n") + "\n" }
	deep := func(n int) string { return strings.Repeat("[", n) + "1" + strings.Repeat("]", n) }
	huge := strings.Repeat("x", defaults.StreamMaxValueBytes+10)
	rej := func(field, reason string) wantReject { return wantReject{field, reason} }
	ctx := context.Background()

	for _, tc := range []struct {
		name     string
		method   string // default POST
		path     string // default the ingest path
		ctype    string
		body     string
		code     int
		accepted []string // ids stored by this request
		rejects  []wantReject
		errParam string // substring of the error of a refused request
	}{
		// Whole requests refused: nothing stored, nothing dead-lettered.
		{name: "malformed JSON object", ctype: "application/json", body: `{"id":"m1","ts":`, code: 400, errParam: "not valid JSON"},
		{name: "malformed JSON array", body: `[` + bev("m2", "") + `,{"id":}]`, code: 400, errParam: "not valid JSON"},
		{name: "NaN token in a JSON body", ctype: "application/json", body: bev("m3", `,"amount":NaN`), code: 400, errParam: "not valid JSON"},
		{name: "Infinity token in a JSON array", ctype: "application/json", body: "[" + bev("m4", `,"amount":-Infinity`) + "]", code: 400, errParam: "not valid JSON"},
		{name: "nesting beyond the parser limit in a JSON body", ctype: "application/json", body: `{"id":"m5","x":` + deep(20000) + `}`, code: 400, errParam: "not valid JSON"},
		{name: "JSON scalar body", ctype: "application/json", body: `"hello"`, code: 400, errParam: "object or an array"},
		{name: "empty body", ctype: "application/json", body: "", code: 400, errParam: "empty"},
		{name: "blank body", body: " \r\n\t ", code: 400, errParam: "empty"},
		{name: "blank NDJSON", ctype: "application/x-ndjson", body: "\n \n\t\n", code: 400, errParam: "empty"},
		{name: "huge body", ctype: "application/x-ndjson", body: strings.Repeat(bev("big", "")+"\n", (5<<20)/100), code: 413, errParam: "too large"},
		{name: "wrong content type", ctype: "text/plain", body: bev("c1", ""), code: 415, errParam: "content type"},
		{name: "form content type", ctype: "application/x-www-form-urlencoded", body: "id=c2", code: 415, errParam: "content type"},
		{name: "unparsable content type", ctype: "application/json; =;", body: bev("c3", ""), code: 415, errParam: "content type"},
		{name: "unknown stream", path: "/v1/streams/nope/events", body: bev("s1", ""), code: 404, errParam: "unknown stream"},
		{name: "bad stream name", path: "/v1/streams/..%2f..%2fetc/events", body: bev("s2", ""), code: 404},
		{name: "GET on ingest", method: "GET", body: "", code: 405},

		// Per event: accepted ones stored, rejected ones dead-lettered.
		{name: "malformed NDJSON line", ctype: "application/x-ndjson", body: nd(bev("a1", ""), `{"id":"b1","ts":`, bev("a2", "")),
			code: 200, accepted: []string{"a1", "a2"}, rejects: []wantReject{rej("", "invalid JSON")}},
		{name: "trailing data on a line", ctype: "application/x-ndjson", body: nd(bev("b2", "") + " " + bev("b3", "")),
			code: 200, rejects: []wantReject{rej("", "trailing data")}},
		{name: "not an object", ctype: "application/x-ndjson", body: nd("42", "null", `["x"]`, `"s"`),
			code: 200, rejects: []wantReject{rej("", "invalid JSON"), rej("", "not a JSON object"), rej("", "invalid JSON"), rej("", "invalid JSON")}},
		{name: "array element not an object", body: `[1,` + bev("a3", "") + `]`,
			code: 200, accepted: []string{"a3"}, rejects: []wantReject{rej("", "invalid JSON")}},
		{name: "invalid UTF-8 in NDJSON", ctype: "application/x-ndjson", body: nd(bev("b4", `,"country":"D`+"\xff\xfe"+`E"`), bev("a4", "")),
			code: 200, accepted: []string{"a4"}, rejects: []wantReject{rej("", "invalid UTF-8")}},
		{name: "invalid UTF-8 in a JSON array", body: "[" + bev("b5", `,"x":"`+"\xc3\x28"+`"`) + "]",
			code: 200, rejects: []wantReject{rej("", "invalid UTF-8")}},
		{name: "huge field", ctype: "application/x-ndjson", body: nd(bev("b6", `,"country":"`+huge+`"`), bev("a5", `,"country":"`+huge[:1000]+`"`)),
			code: 200, accepted: []string{"a5"}, rejects: []wantReject{rej("country", "longer than the limit")}},
		{name: "huge field beyond the log's message size", ctype: "application/x-ndjson", body: nd(bev("b40", `,"country":"`+strings.Repeat("y", 2<<20)+`"`), bev("a11", "")),
			code: 200, accepted: []string{"a11"}, rejects: []wantReject{rej("country", "longer than the limit")}},
		{name: "big event with a large unknown field is accepted", ctype: "application/x-ndjson", body: nd(bev("a12", `,"blob":"`+strings.Repeat("z", 300<<10)+`"`)),
			code: 200, accepted: []string{"a12"}},
		{name: "record larger than a log message", ctype: "application/x-ndjson", body: nd(
			fmt.Sprintf(`{"id":"%s","ts":0,"device":"%s","country":"%s"}`, strings.Repeat("<", 60000), strings.Repeat("<", 60000), strings.Repeat("<", 60000)), bev("a13", "")),
			code: 200, accepted: []string{"a13"}, rejects: []wantReject{rej("", "larger than the log's message limit")}},
		{name: "deeply nested declared field", ctype: "application/x-ndjson", body: nd(bev("b7", `,"country":`+deep(5000))),
			code: 200, rejects: []wantReject{rej("country", "want a string, got an array")}},
		{name: "deeply nested object field", ctype: "application/x-ndjson", body: nd(bev("b8", `,"amount":`+strings.Repeat(`{"a":`, 3000)+"1"+strings.Repeat("}", 3000))),
			code: 200, rejects: []wantReject{rej("amount", "want a number, got an object")}},
		{name: "deeply nested unknown field is dropped", ctype: "application/x-ndjson", body: nd(bev("a6", `,"extra":`+deep(5000))),
			code: 200, accepted: []string{"a6"}},
		{name: "nesting beyond the parser limit on a line", ctype: "application/x-ndjson", body: nd(bev("b9", `,"extra":`+deep(20000))),
			code: 200, rejects: []wantReject{rej("", "max depth")}},
		{name: "NaN and Infinity tokens", ctype: "application/x-ndjson", body: nd(bev("b10", `,"amount":NaN`), bev("b11", `,"amount":Infinity`), bev("b12", `,"items":-Infinity`)),
			code: 200, rejects: []wantReject{rej("", "invalid JSON"), rej("", "invalid JSON"), rej("", "invalid JSON")}},
		{name: "NaN and Infinity strings", ctype: "application/x-ndjson", body: nd(bev("b13", `,"amount":"NaN"`), bev("b14", `,"amount":"Infinity"`), bev("b15", `,"items":"-Inf"`), bev("b16", `,"ts":"NaN"`)),
			code: 200, rejects: []wantReject{rej("amount", "want a number, got a string"), rej("amount", "want a number, got a string"),
				rej("items", "want an integer, got a string"), rej("ts", "bad time")}},
		{name: "numbers out of range", ctype: "application/x-ndjson", body: nd(
			bev("b17", `,"items":9223372036854775808`), bev("b18", `,"items":-9223372036854775809`), bev("b19", `,"items":1e400`),
			bev("b20", `,"amount":1e400`), bev("b21", `,"amount":-1e400`), bev("b22", `,"items":1.5`), bev("b23", `,"ts":1e400`),
			bev("a7", `,"items":9223372036854775807`), bev("a8", `,"amount":1.7976931348623157e308`), bev("a9", `,"items":-9223372036854775808`)),
			code: 200, accepted: []string{"a7", "a8", "a9"}, rejects: []wantReject{rej("items", "want an integer"), rej("items", "want an integer"),
				rej("items", "want an integer"), rej("amount", "out of range"), rej("amount", "out of range"), rej("items", "want an integer"), rej("ts", "bad time")}},
		{name: "times before 1970", ctype: "application/x-ndjson", body: nd(bev("b24", `,"ts":"1969-12-31T23:59:59Z"`), bev("b25", `,"ts":-1`), bev("b26", `,"ts":"0001-01-01T00:00:00Z"`), bev("a10", `,"ts":0`)),
			code: 200, accepted: []string{"a10"}, rejects: []wantReject{rej("ts", "outside 1970..9999"), rej("ts", "outside 1970..9999"), rej("ts", "outside 1970..9999")}},
		{name: "times after 9999 and beyond max_future", ctype: "application/x-ndjson", body: nd(
			bev("b27", `,"ts":"10000-01-01T00:00:00Z"`), bev("b28", fmt.Sprintf(`,"ts":%d`, logic.MaxTimeMs+1)), bev("b29", `,"ts":"9999-12-31T23:59:59Z"`),
			bev("b30", fmt.Sprintf(`,"ts":%q`, time.Now().Add(2*time.Hour).UTC().Format(time.RFC3339)))),
			code: 200, rejects: []wantReject{rej("ts", "bad time"), rej("ts", "outside 1970..9999"), rej("ts", "ahead of the clock"), rej("ts", "ahead of the clock")}},
		{name: "bad times", ctype: "application/x-ndjson", body: nd(bev("b31", `,"ts":"2026-13-01T00:00:00Z"`), bev("b32", `,"ts":""`), bev("b33", `,"ts":true`), bev("b34", `,"ts":null`), bev("b35", `,"ts":"yesterday"`)),
			code: 200, rejects: []wantReject{rej("ts", "bad time"), rej("ts", "bad time"), rej("ts", "want a time, got a boolean"), rej("ts", "required field is missing"), rej("ts", "bad time")}},
		{name: "wrong types and missing fields", ctype: "application/x-ndjson", body: nd(bev("b36", `,"device":null`), bev("b37", `,"device":7`), bev("b38", `,"id":{"x":1}`), bev("b39", `,"email":["a@b.c"]`)),
			code: 200, rejects: []wantReject{rej("device", "required field is missing"), rej("device", "want a string, got a number"), rej("id", "want a string, got an object"), rej("email", "want a string, got an array")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method, p := tc.method, tc.path
			if method == "" {
				method = "POST"
			}
			if p == "" {
				p = path
			}
			storedBefore := e.storedIDs(t)
			dlBefore, err := e.log.DeadLetterCount(ctx, "orders")
			if err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			code, _, body := badDo(t, method, e.url+p, tc.ctype, []byte(tc.body))
			done := time.Now()
			if code != tc.code {
				t.Fatalf("status %d, want %d: %.300s", code, tc.code, body)
			}
			stored := e.storedIDs(t)
			if code != 200 {
				var ae struct {
					Error  string `json:"error"`
					Detail any    `json:"detail"`
				}
				if err := json.Unmarshal(body, &ae); err != nil || ae.Error == "" {
					t.Fatalf("refusal without a JSON error: %.300s", body)
				}
				if msg := ae.Error + " " + fmt.Sprint(ae.Detail); !strings.Contains(msg, tc.errParam) {
					t.Fatalf("error %q does not say %q", msg, tc.errParam)
				}
				if n, _ := e.log.DeadLetterCount(ctx, "orders"); n != dlBefore || len(stored) != len(storedBefore) {
					t.Fatalf("a refused request changed the log: dead letters %d -> %d, stored %d -> %d", dlBefore, n, len(storedBefore), len(stored))
				}
				return
			}
			var res ingest.Result
			if err := json.Unmarshal(body, &res); err != nil {
				t.Fatalf("answer %.300s: %v", body, err)
			}
			if res.Accepted != len(tc.accepted) || res.Rejected != len(tc.rejects) || len(res.Errors) != len(tc.rejects) {
				t.Fatalf("accepted %d rejected %d (%+v), want %d and %d", res.Accepted, res.Rejected, res.Errors, len(tc.accepted), len(tc.rejects))
			}
			// Exactly the accepted events were stored, in order.
			if got := stored[len(storedBefore):]; !slices.Equal(got, tc.accepted) {
				t.Fatalf("stored %v, want %v", got, tc.accepted)
			}
			// Every rejected one is in the dead-letter queue.
			all, err := e.log.DeadLetters(ctx, "orders", eventlog.Cursor{}, 100000)
			if err != nil {
				t.Fatal(err)
			}
			if uint64(len(all)) < dlBefore {
				t.Fatalf("dead letters shrank: %d < %d", len(all), dlBefore)
			}
			dls := all[dlBefore:]
			if len(dls) != len(tc.rejects) {
				t.Fatalf("%d new dead letters, want %d: %+v", len(dls), len(tc.rejects), dls)
			}
			for i, w := range tc.rejects {
				d, ie := dls[i], res.Errors[i]
				if d.Stream != "orders" || d.Field != w.field || !strings.Contains(d.Reason, w.reason) || d.Source != "http" {
					t.Errorf("dead letter %d: stream %q field %q reason %q source %q; want field %q reason ~%q source http", i, d.Stream, d.Field, d.Reason, d.Source, w.field, w.reason)
				}
				if d.Time.Before(sent.Add(-time.Second)) || d.Time.After(done.Add(time.Second)) {
					t.Errorf("dead letter %d time %s outside the request [%s, %s]", i, d.Time, sent, done)
				}
				if !strings.Contains(ie.Error, w.reason) || (w.field != "" && !strings.Contains(ie.Error, w.field)) {
					t.Errorf("answer error %d %q does not give the reason %q (field %q)", ie.Index, ie.Error, w.reason, w.field)
				}
				if !json.Valid(d.Payload) || len(d.Payload) == 0 {
					t.Errorf("dead letter %d payload is not JSON: %.200q", i, d.Payload)
				}
				if bytes.Contains(d.Payload, []byte("secret-")) {
					t.Errorf("dead letter %d payload holds raw PII: %.300s", i, d.Payload)
				}
				var obj map[string]any
				if json.Unmarshal(d.Payload, &obj) == nil && obj != nil {
					if em, ok := obj["email"].(string); ok && !strings.HasPrefix(em, "h:") {
						t.Errorf("dead letter %d email not hashed: %q", i, em)
					}
				}
			}
			// Error indexes point at the rejected events, in order.
			for i := 1; i < len(res.Errors); i++ {
				if res.Errors[i].Index <= res.Errors[i-1].Index {
					t.Errorf("error indexes not increasing: %+v", res.Errors)
				}
			}
		})
	}

	// The dead-letter listing over HTTP carries the same reasons and fields.
	code, _, body := get(t, e.url+"/v1/dlq/orders?limit=10000")
	var dl struct {
		Events []eventlog.DeadLetter `json:"events"`
	}
	if code != 200 || json.Unmarshal(body, &dl) != nil {
		t.Fatalf("dlq: %d %.300s", code, body)
	}
	n, _ := e.log.DeadLetterCount(ctx, "orders")
	if uint64(len(dl.Events)) != n || n == 0 {
		t.Fatalf("dlq listing has %d events, the queue %d", len(dl.Events), n)
	}
	for _, d := range dl.Events {
		if d.Reason == "" || d.Source != "http" || d.Time.IsZero() {
			t.Fatalf("dlq listing entry without reason/source/time: %+v", d)
		}
	}
	t.Logf("stored %d events, dead-lettered %d", len(e.storedIDs(t)), n)
}

// TestBadQueryParams: every bad query is a 400 naming the parameter, an
// unknown view a 404.
func TestBadQueryParams(t *testing.T) {
	e := newBadEnv(t, config.Default())
	const base = "from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z"
	for _, tc := range []struct {
		name, view, query, param string
		code                     int
	}{
		{"unknown view", "nope", base, "", 404},
		{"unknown view with bad params", "nope", "from=x", "", 404},
		{"from after to", "v", "from=2026-01-01T01:00:00Z&to=2026-01-01T00:00:00Z", "from", 400},
		{"from equals to", "v", "from=2026-01-01T01:00:00Z&to=2026-01-01T01:00:00Z", "from", 400},
		{"missing from", "v", "to=2026-01-01T01:00:00Z", "from", 400},
		{"missing to", "v", "from=2026-01-01T01:00:00Z", "to", 400},
		{"bad time", "v", "from=yesterday&to=2026-01-01T01:00:00Z", "from", 400},
		{"date without time", "v", "from=2026-01-01&to=2026-01-02", "from", 400},
		{"time before 1970", "v", "from=1969-01-01T00:00:00Z&to=2026-01-01T01:00:00Z", "from", 400},
		{"range too long", "v", "from=1970-01-01T00:00:00Z&to=9999-01-01T00:00:00Z", "to", 400},
		{"step not a multiple of the window", "v", base + "&step=90s", "step", 400},
		{"step shorter than the window", "v", base + "&step=30s", "step", 400},
		{"step negative", "v", base + "&step=-1m", "step", 400},
		{"step garbage", "v", base + "&step=soon", "step", 400},
		{"step sub-millisecond", "v", base + "&step=1500us", "step", 400},
		{"unknown dimension", "v", base + "&group_by=city", "group_by", 400},
		{"dimension twice", "v", base + "&group_by=country,country", "group_by", 400},
		{"where without a colon", "v", base + "&where=country", "where", 400},
		{"where on an unknown dimension", "v", base + "&where=city:Paris", "where", 400},
		{"where without a name", "v", base + "&where=:DE", "where", 400},
		{"unknown format", "v", base + "&format=xml", "format", 400},
		{"unknown order", "v", base + "&order=-bogus", "order", 400},
		{"limit zero", "v", base + "&limit=0", "limit", 400},
		{"limit huge", "v", base + "&limit=99999999999999999999", "limit", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := get(t, e.url+"/v1/views/"+tc.view+"?"+tc.query)
			var ae struct {
				Error string `json:"error"`
			}
			if code != tc.code || json.Unmarshal(body, &ae) != nil || ae.Error == "" {
				t.Fatalf("status %d %.300s, want %d with an error", code, body, tc.code)
			}
			if tc.param != "" && !strings.Contains(ae.Error, tc.param) {
				t.Fatalf("error %q does not name %q", ae.Error, tc.param)
			}
		})
	}
	// A good query on the same server still answers.
	if code, _, body := get(t, e.url+"/v1/views/v?"+base+"&step=2m&group_by=device&where=country:DE,country:FR"); code != 200 {
		t.Fatalf("good query: %d %.300s", code, body)
	}
}

// TestIngestBackpressure: with nats.max_msgs the clean log refuses log
// records beyond the limit; ingest answers 429 with Retry-After and never 200 for
// an event that was not stored.
func TestIngestBackpressure(t *testing.T) {
	cfg, err := config.Parse([]byte(`
nats: { max_msgs: 5 }
streams:
  orders: { time: ts, fields: { ts: time } }
views:
  v: { stream: orders, window: 1m, measures: { n: count() } }
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.NATS.MaxMsgs != 5 || cfg.NATS.MaxBytes != 0 {
		t.Fatalf("config: max_msgs %d max_bytes %d", cfg.NATS.MaxMsgs, cfg.NATS.MaxBytes)
	}
	for _, bad := range []string{"nats: { max_msgs: -1 }", "nats: { max_bytes: -5 }", "nats: { max_bytes: 1000 }"} {
		_, err := config.Parse([]byte(bad+"\nstreams:\n  o: { time: ts, fields: { ts: time } }\nviews:\n  v: { stream: o, window: 1m, measures: { n: count() } }\n"), nil)
		if err == nil || !strings.Contains(err.Error(), strings.Fields(bad)[2][:len(strings.Fields(bad)[2])-1]) {
			t.Fatalf("config %q: %v, want an error naming the key", bad, err)
		}
	}
	env, err := config.Parse([]byte("streams:\n  o: { time: ts, fields: { ts: time } }\nviews:\n  v: { stream: o, window: 1m, measures: { n: count() } }\n"),
		func(k string) string {
			return map[string]string{"BRAID_NATS_MAX_MSGS": "7", "BRAID_NATS_MAX_BYTES": "2097152"}[k]
		})
	if err != nil || env.NATS.MaxMsgs != 7 || env.NATS.MaxBytes != 2<<20 {
		t.Fatalf("environment overrides: %v %+v", err, env)
	}

	e := newBadEnv(t, *cfg)
	url := e.url + "/v1/streams/orders/events"
	// Phase 1: single events from 8 concurrent producers, more than fit.
	var mu sync.Mutex
	var ok200 []string
	pushed := 0
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				id := fmt.Sprintf("p%d-%d", g, i)
				code, hdr, body := badDo(t, "POST", url, "application/json", []byte(bev(id, "")))
				mu.Lock()
				switch code {
				case 200:
					var r ingest.Result
					if json.Unmarshal(body, &r) != nil || r.Accepted != 1 {
						t.Errorf("200 answer %s", body)
					}
					ok200 = append(ok200, id)
				case 429:
					if hdr.Get("Retry-After") == "" || !bytes.Contains(body, []byte("full")) {
						t.Errorf("429 without Retry-After or reason: %s", body)
					}
					pushed++
				default:
					t.Errorf("status %d %s", code, body)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stored := e.storedIDs(t)
	slices.Sort(stored)
	slices.Sort(ok200)
	// max_msgs counts log records: concurrent requests share records, so at
	// least 5 events fit, and exactly the answered ones are stored.
	info, err := e.log.Info(context.Background(), "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(stored, ok200) || len(stored) < 5 || pushed != 64-len(ok200) || pushed == 0 || info.Msgs != 5 {
		t.Fatalf("accepted in 200 answers %d %v, stored %d %v, pushed back %d", len(ok200), ok200, len(stored), stored, pushed)
	}
	// A retry of an accepted event is still a 200 (deduplicated, stored once).
	if code, _, body := badDo(t, "POST", url, "application/json", []byte(bev(ok200[0], ""))); code != 200 {
		t.Fatalf("retry of a stored id on a full log: %d %s", code, body)
	}
	// Phase 2: a full log refuses a batch as a whole with 429: none of its
	// events is reported accepted.
	code, hdr, body := badDo(t, "POST", url, "application/x-ndjson", []byte(bev("q1", "")+"\n"+bev("q2", "")+"\n"))
	if code != 429 || hdr.Get("Retry-After") == "" {
		t.Fatalf("batch on a full log: %d %s", code, body)
	}
	if after := e.storedIDs(t); len(after) != len(stored) {
		t.Fatalf("stored %d after the refusals, want %d", len(after), len(stored))
	}
	t.Logf("max_msgs 5: %d accepted (200), %d pushed back (429), %d stored", len(ok200), pushed, len(stored))
}
