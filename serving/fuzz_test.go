package serving

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

func fuzzStream(t testing.TB) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"device": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt, "ok": logic.TypeBool, "email": logic.TypeString},
		Required: []string{"device"}, PII: map[string]logic.PIIMode{"email": logic.PIIMask}, MaxFuture: time.Hour}, []byte("fuzz"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fuzzView(t testing.TB, s *logic.Stream, name string, window, hop time.Duration) *logic.View {
	t.Helper()
	v, err := logic.NewView(name, logic.ViewDef{Stream: s.Name, Window: window, Hop: hop, GroupBy: []string{"country", "device"},
		Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}, {Name: "revenue", Expr: "sum(amount)"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// countEvents finds the events of a body independently of splitBody: the
// non-blank lines of NDJSON; for JSON, 1 for an object, the elements of an
// array (counted with the token decoder); -1 when the body must be refused.
func countEvents(body []byte, ndjson bool) int {
	if ndjson {
		n := 0
		for _, line := range bytes.Split(body, []byte("\n")) {
			if len(bytes.TrimSpace(line)) > 0 {
				n++
			}
		}
		if n == 0 {
			return -1
		}
		return n
	}
	if !json.Valid(body) {
		return -1
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return -1
	}
	switch tok {
	case json.Delim('{'):
		return 1
	case json.Delim('['):
		n := 0
		for dec.More() {
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return -1
			}
			n++
		}
		return n
	}
	return -1
}

// FuzzIngestBody posts arbitrary bodies (as JSON, NDJSON or without a
// content type) to the real ingest handler over a real JetStream log. It
// never panics (a 500 would be a recovered panic); a 200 accounts for every
// event found in the body (accepted + rejected), the dead-letter queue grew
// by exactly the rejected ones and the log by at most the accepted ones
// (repeated ids are stored once); a 400 only for a body with no events.
func FuzzIngestBody(f *testing.F) {
	seeds := []struct {
		body string
		mode uint8
	}{
		{`{"id":"a","ts":"2026-01-01T00:00:00Z","device":"web","amount":1.5,"email":"x@y.z"}`, 0},
		{`[{"id":"b","ts":1000,"device":"ios"},{"ts":"bad"},42,null,{"id":{"x":1}}]`, 0},
		{"{\"id\":\"c\",\"ts\":1,\"device\":\"w\"}\n\n{oops\n{\"ts\":1e400}\n  \n{\"id\":\"c\",\"ts\":1,\"device\":\"w\"}", 1},
		{`{"id":"d","ts":-1,"device":"w","items":9223372036854775808,"amount":NaN}`, 2},
		{"{\"id\":\"e\",\"ts\":0,\"device\":\"\xff\"}\r\n[1,2]", 1},
		{`[[[[{"id":"f"}]]]]`, 0},
		{``, 0},
		{"\n\n", 1},
		{`"str"`, 2},
	}
	for _, s := range seeds {
		f.Add([]byte(s.body), s.mode)
	}
	// The server and its log are set up once per process, outside the
	// target (a fuzz target must not call f's methods).
	n := testenv.StartNATS(f)
	_, js := n.JetStream(f)
	// A dedup window longer than any fuzz run: a repeated event or dead
	// letter is then always a repeat.
	log, err := eventlog.Open(context.Background(), js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(f),
		DedupWindow: 24 * time.Hour, Memory: true})
	if err != nil {
		f.Fatal(err)
	}
	name := log.StreamName("orders", 0)
	st := fuzzStream(f)
	cfg := config.Default()
	cfg.HTTP.MaxBodyBytes = 1 << 20
	cat := &config.Catalog{Streams: map[string]*logic.Stream{"orders": st}, Views: map[string]*logic.View{}, StreamOrder: []string{"orders"}}
	srv, err := New(Options{Config: &cfg, Catalog: cat, Log: log, Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	deadIDs := map[string]bool{} // dead letters stored in this process's log
	ctypes := []string{"application/json", "application/x-ndjson", ""}
	f.Fuzz(func(t *testing.T, body []byte, mode uint8) {
		ctx := context.Background()
		ctype := ctypes[int(mode)%len(ctypes)]
		ndjson := ctype == "application/x-ndjson"
		// added counts the events in the log records appended after
		// sequence from (a record holds the events of one write).
		lastSeq := func() uint64 {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			info, err := s.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return info.State.LastSeq
		}
		added := func(from uint64) uint64 {
			s, err := js.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			var n uint64
			for seq, last := from+1, lastSeq(); seq <= last; seq++ {
				m, err := s.GetMsg(ctx, seq)
				if err != nil {
					t.Fatal(err)
				}
				n += uint64(eventlog.Count(m.Data))
			}
			return n
		}
		seq0 := lastSeq()
		dl0, err := log.DeadLetterCount(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/v1/streams/orders/events", bytes.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		want := countEvents(bytes.TrimSpace(body), ndjson)
		events := added(seq0)
		dl1, err := log.DeadLetterCount(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		switch rec.Code {
		case http.StatusOK:
			var res ingest.Result
			if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
				t.Fatalf("200 answer %q: %v", rec.Body.Bytes(), err)
			}
			if res.Accepted+res.Rejected != want || len(res.Errors) != min(res.Rejected, ingest.MaxErrors) || len(res.Errors)+res.ErrorsOmitted != res.Rejected {
				t.Fatalf("accepted %d + rejected %d (errors %d), the body has %d events: %q", res.Accepted, res.Rejected, len(res.Errors), want, body)
			}
			if !slices.IsSortedFunc(res.Errors, func(a, b ingest.EventError) int { return a.Index - b.Index }) {
				t.Fatalf("errors not in event order: %+v", res.Errors)
			}
			for _, e := range res.Errors {
				if e.Index < 0 || e.Index >= want || e.Error == "" {
					t.Fatalf("bad error entry %+v of %d events", e, want)
				}
			}
			// Every reject is in the dead-letter queue under its id: stored
			// now, or earlier when the same event at the same index was
			// rejected before (dead letters are deduplicated like events).
			split, _ := splitBody(body, ndjson)
			raws := slices.Collect(split)
			repeats := 0
			for _, e := range res.Errors {
				_, _, err := st.Prepare(raws[e.Index], time.Now().UnixMilli())
				var rej *logic.RejectError
				if !errors.As(err, &rej) {
					continue // rejected for its size: not derived here
				}
				id := ingest.DeadLetterID(st, "http", e.Index, rej, raws[e.Index])
				if deadIDs[id] {
					repeats++
				}
				deadIDs[id] = true
			}
			if dl1-dl0 != uint64(res.Rejected-repeats) || events > uint64(res.Accepted) {
				t.Fatalf("dead letters +%d (%d repeated) events stored +%d, answer accepted %d rejected %d", dl1-dl0, repeats, events, res.Accepted, res.Rejected)
			}
		case http.StatusBadRequest:
			if want > 0 {
				t.Fatalf("400 %s for a body with %d events: %q", rec.Body.Bytes(), want, body)
			}
			if dl1 != dl0 || events != 0 {
				t.Fatalf("a refused body changed the log")
			}
		case http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("status %d %s for %q", rec.Code, rec.Body.Bytes(), body)
		}
	})
}

// FuzzQueryParams: ParseQuery never panics, every error is a *ParamError,
// and what it accepts is consistent.
func FuzzQueryParams(f *testing.F) {
	for _, s := range []string{
		"from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z",
		"from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z&step=5m&group_by=country&where=device:web,device:ios&format=csv&order=-n&limit=3",
		"from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&step=all&group_by=",
		"from=1970-01-01T00:00:00Z&to=9999-12-31T23:59:59.999Z&step=1d",
		"from=2026-01-01T01:00:00Z&to=2026-01-01T00:00:00Z",
		"from=x&to=&step=-1m&group_by=a,a&where=:&limit=-1&order=+",
		"%zz&from=2026-01-01T00:00:00+02:00&to=2026-01-01T00:00:00.5Z",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	s := fuzzStream(f)
	tum := fuzzView(f, s, "tum", time.Minute, 0)
	hop := fuzzView(f, s, "hop", time.Minute, 20*time.Second)
	f.Fuzz(func(t *testing.T, raw string, hopping bool) {
		v := tum
		if hopping {
			v = hop
		}
		vals, _ := url.ParseQuery(raw)
		q, err := ParseQuery(v, vals)
		if err != nil {
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Param == "" || pe.Msg == "" {
				t.Fatalf("error %v (%T) is not a *ParamError", err, err)
			}
			return
		}
		if q.From >= q.To || q.From < logic.MinTimeMs || q.To > logic.MaxTimeMs {
			t.Fatalf("accepted range [%d, %d)", q.From, q.To)
		}
		if q.Step < 0 || (q.Step > 0 && q.Step%v.Window.Step().Milliseconds() != 0) {
			t.Fatalf("accepted step %d for a view step of %s", q.Step, v.Window.Step())
		}
		if q.Limit < 0 || (q.Format != "json" && q.Format != "csv") || q.Order >= len(v.Measures) {
			t.Fatalf("accepted limit %d format %q order %d", q.Limit, q.Format, q.Order)
		}
		for i, d := range q.Dims {
			if d < 0 || d >= len(v.Dims) || q.GroupBy[i] != v.Dims[d] {
				t.Fatalf("group_by %v dims %v", q.GroupBy, q.Dims)
			}
		}
		for _, fl := range q.Filters {
			if fl.Dim < 0 || fl.Dim >= len(v.Dims) || len(fl.Values) == 0 {
				t.Fatalf("filter %+v", fl)
			}
		}
	})
}
