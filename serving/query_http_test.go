package serving_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/tests/testenv"
)

// fakeSpeed serves cells per view, honouring ReadCells' contract.
type fakeSpeed struct {
	mu     sync.Mutex
	cells  map[string][]query.SpeedCell
	wm     int64
	seq    uint64
	err    error
	joined []*logic.View // views whose cells have joined the position (from the log's start)
}

func (f *fakeSpeed) ReadCells(_ context.Context, v *logic.View, from, to, minEpoch int64, fn func(query.SpeedCell) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	for _, c := range f.cells[v.Name] {
		if c.Window >= from && c.Window < to && c.Epoch >= minEpoch {
			if err := fn(query.SpeedCell{Epoch: c.Epoch, Window: c.Window, Group: c.Group, State: c.State.Clone()}); err != nil {
				return err
			}
		}
	}
	return nil
}

func (f *fakeSpeed) StreamStatus(context.Context, string) (query.StreamSpeed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	views := map[string]query.ViewSpeed{}
	for _, v := range f.joined {
		views[v.StateKey()] = query.ViewSpeed{JoinedOK: true, Joined: f.seq}
	}
	return query.SpeedOf([]query.PartSpeed{{Found: true, Seq: f.seq, Watermark: f.wm, Views: views}}), nil
}

type queryEnv struct {
	srv    *httptest.Server
	speed  *fakeSpeed
	views  *batchviews.Store
	evs    []testenv.OrderEvent
	cutoff int64
	wmAt   int64 // watermark after lateness
}

func newQueryEnv(t *testing.T, r *rand.Rand, vs ...*logic.View) *queryEnv {
	t.Helper()
	s := vs[0].Stream
	base := int64(1_764_000_000_000)
	epochs := []int64{base, base + 10_000, base + 20_000, base + 30_000}
	e := &queryEnv{evs: testenv.RandomOrderEvents(r, 400, base, 20*minute, epochs), cutoff: base + 20_000}
	lev := prepare(t, s, e.evs)
	st, err := batchviews.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e.views = st
	e.speed = &fakeSpeed{cells: map[string][]query.SpeedCell{}, wm: base + 12*minute, seq: 7, joined: vs}
	e.wmAt = e.speed.wm - s.AllowedLateness.Milliseconds()
	ver := &batchviews.Version{Views: map[string]batchviews.ViewVersion{}}
	rows := map[string][]batchviews.Row{}
	for _, v := range vs {
		b, c := split(v, e.evs, lev, e.cutoff)
		rows[v.Name] = b
		ver.Views[v.Name] = batchviews.ViewVersion{Cutoff: e.cutoff, Definition: v.Definition()}
		e.speed.cells[v.Name] = c
	}
	if err := st.Publish(ver, rows); err != nil {
		t.Fatal(err)
	}
	srv, err := serving.New(serving.Options{Catalog: testCatalog(s, vs...), Speed: e.speed, SpeedStatus: e.speed, Views: st,
		Registry: prometheus.NewRegistry(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(srv.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

func get(t *testing.T, url string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

type queryAnswer struct {
	View        string           `json:"view"`
	From        string           `json:"from"`
	To          string           `json:"to"`
	Step        string           `json:"step"`
	BatchCutoff *string          `json:"batch_cutoff"`
	Watermark   *string          `json:"watermark"`
	Rows        []map[string]any `json:"rows"`
}

func decodeAnswer(t *testing.T, b []byte) queryAnswer {
	t.Helper()
	var a queryAnswer
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&a); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return a
}

func jsonValue(x any) any {
	n, ok := x.(json.Number)
	if !ok {
		return x
	}
	if i, err := strconv.ParseInt(string(n), 10, 64); err == nil {
		return i
	}
	f, _ := strconv.ParseFloat(string(n), 64)
	return f
}

// asFloat makes JSON numbers comparable (232.0 is written 232).
func asFloat(x any) any {
	if i, ok := x.(int64); ok {
		return float64(i)
	}
	return x
}

// checkJSONRows compares the answer's rows with the independent expectation.
func checkJSONRows(t *testing.T, label string, v *logic.View, keep []string, rows []map[string]any, want []*expRow) {
	t.Helper()
	if len(rows) != len(want) {
		t.Fatalf("%s: %d rows, want %d", label, len(rows), len(want))
	}
	idx := map[string]*expRow{}
	for _, w := range want {
		idx[fmt.Sprint(w.bucket, w.dims)] = w
	}
	prev := ""
	for _, row := range rows {
		ws, _ := row["window_start"].(string)
		tm, err := time.Parse(time.RFC3339, ws)
		if err != nil {
			t.Fatalf("%s: window_start %q", label, ws)
		}
		if ws < prev {
			t.Fatalf("%s: rows not sorted by window", label)
		}
		prev = ws
		var dims []string
		for _, d := range keep {
			x, ok := row[d]
			if !ok {
				t.Fatalf("%s: row misses dimension %s: %v", label, d, row)
			}
			if x == nil {
				dims = append(dims, "null")
			} else {
				dims = append(dims, fmt.Sprint(x))
			}
		}
		if len(row) != 1+len(keep)+len(v.Measures)+3 {
			t.Fatalf("%s: row has keys %v", label, row)
		}
		w := idx[fmt.Sprint(tm.UnixMilli(), dims)]
		if w == nil {
			t.Fatalf("%s: unexpected row %v", label, row)
		}
		for j, want := range w.values() {
			if got := jsonValue(row[v.Measures[j].Name]); !sameValue(asFloat(got), asFloat(want)) {
				t.Fatalf("%s: row %v: %s = %v, want %v", label, row, v.Measures[j].Name, got, want)
			}
		}
		if row["source"] != w.source() || row["final"] != w.final || row["exact"] != true {
			t.Fatalf("%s: row %v: want source %s final %v", label, row, w.source(), w.final)
		}
	}
}

func TestQueryHTTP(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	s := testenv.OrdersStream(t)
	tum := testView(t, s, "orders_by_country", time.Minute, 0)
	hop := testView(t, s, "orders_sliding", time.Minute, 20*time.Second)
	e := newQueryEnv(t, r, tum, hop)
	base := int64(1_764_000_000_000)
	for _, tc := range []struct {
		v     *logic.View
		query string
		eq    expQuery
		keep  []string
	}{
		{tum, "", expQuery{}, []string{"country", "device"}},
		{tum, "&step=5m&group_by=country", expQuery{step: 5 * minute, groupBy: []string{"country"}}, []string{"country"}},
		{tum, "&step=all&group_by=&where=device:web", expQuery{all: true, groupBy: []string{}, where: map[string][]string{"device": {"web"}}}, []string{}},
		{hop, "", expQuery{}, []string{"country", "device"}},
		{hop, "&step=2m&group_by=device,country", expQuery{step: 2 * minute, groupBy: []string{"device", "country"}}, []string{"device", "country"}},
		{hop, "&step=all&group_by=device", expQuery{all: true, groupBy: []string{"device"}}, []string{"device"}},
	} {
		from, to := base+90_000, base+15*minute+20_000
		q := fmt.Sprintf("from=%s&to=%s%s", url.QueryEscape(logic.FormatTime(from)), url.QueryEscape(logic.FormatTime(to)), tc.query)
		code, hdr, body := get(t, e.srv.URL+"/v1/views/"+tc.v.Name+"?"+q)
		if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
			t.Fatalf("%s %s: %d %s", tc.v.Name, q, code, body)
		}
		a := decodeAnswer(t, body)
		if a.View != tc.v.Name || a.BatchCutoff == nil || *a.BatchCutoff != logic.FormatTime(e.cutoff) || a.Watermark == nil || *a.Watermark != logic.FormatTime(e.wmAt) {
			t.Fatalf("%s: header %+v", q, a)
		}
		tc.eq.from, tc.eq.to, tc.eq.cutoff, tc.eq.watermark = from, to, e.cutoff, e.wmAt
		want := expected(tum.Window.Size.Milliseconds(), tc.v.Window.Hop.Milliseconds(), e.evs, tc.eq)
		if len(want) == 0 {
			t.Fatalf("%s: the test expects no rows", q)
		}
		checkJSONRows(t, tc.v.Name+" "+q, tc.v, tc.keep, a.Rows, want)
	}

	// CSV: header then one line per row, same numbers.
	from, to := logic.FormatTime(base), logic.FormatTime(base+10*minute)
	code, hdr, body := get(t, e.srv.URL+"/v1/views/orders_by_country?format=csv&group_by=country&from="+from+"&to="+to)
	if code != 200 || !strings.HasPrefix(hdr.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv: %d %s", code, body)
	}
	recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(recs[0], ",") != "window_start,country,n,revenue,avg,lo,hi,items,source,exact,final" {
		t.Fatalf("csv header %v", recs[0])
	}
	want := expected(minute, 0, e.evs, expQuery{from: base, to: base + 10*minute, groupBy: []string{"country"}, cutoff: e.cutoff, watermark: e.wmAt})
	if len(recs)-1 != len(want) {
		t.Fatalf("csv rows %d, want %d", len(recs)-1, len(want))
	}
	var sumN int64
	for _, rec := range recs[1:] {
		n, _ := strconv.ParseInt(rec[2], 10, 64)
		sumN += n
	}
	var wantN int64
	for _, w := range want {
		wantN += w.n
	}
	if sumN != wantN || wantN == 0 {
		t.Fatalf("csv counts %d, want %d", sumN, wantN)
	}

	// Errors.
	for _, tc := range []struct {
		path string
		code int
	}{
		{"/v1/views/nope?from=" + from + "&to=" + to, 404},
		{"/v1/views/orders_by_country?from=" + to + "&to=" + from, 400},
		{"/v1/views/orders_by_country?from=" + from, 400},
		{"/v1/views/orders_by_country?from=" + from + "&to=" + to + "&step=90s", 400},
		{"/v1/views/orders_by_country?from=" + from + "&to=" + to + "&group_by=city", 400},
		{"/v1/views/orders_by_country?from=" + from + "&to=" + to + "&where=country", 400},
		{"/v1/nothing", 404},
	} {
		code, hdr, body := get(t, e.srv.URL+tc.path)
		var ae struct {
			Error string `json:"error"`
		}
		if code != tc.code || json.Unmarshal(body, &ae) != nil || ae.Error == "" || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s, want %d with an error body", tc.path, code, body, tc.code)
		}
	}

	// A failing speed layer fails the query (no silent half answer).
	e.speed.mu.Lock()
	e.speed.err = errors.New("redis down")
	e.speed.mu.Unlock()
	if code, _, body := get(t, e.srv.URL+"/v1/views/orders_by_country?from="+from+"&to="+to); code != 503 {
		t.Fatalf("speed down: %d %s", code, body)
	}

	// Views list.
	code, _, body = get(t, e.srv.URL+"/v1/views")
	var vl struct {
		Views []struct {
			Name     string
			Stream   string
			Window   string
			Hop      *string
			Dims     []string
			Measures []struct {
				Name, Kind, Field string
				Exact             bool
			}
		}
	}
	if code != 200 || json.Unmarshal(body, &vl) != nil || len(vl.Views) != 2 || vl.Views[0].Name != "orders_by_country" ||
		vl.Views[0].Window != "1m" || vl.Views[0].Hop != nil || *vl.Views[1].Hop != "20s" || len(vl.Views[0].Measures) != 6 ||
		vl.Views[0].Measures[1].Kind != "sum" || vl.Views[0].Measures[1].Field != "amount" || !vl.Views[0].Measures[1].Exact {
		t.Fatalf("views: %d %s", code, body)
	}
}

// TestQueryNoBatchNoSpeed: nil stores do not crash; the answer says what it lacks.
func TestQueryNoBatchNoSpeed(t *testing.T) {
	s := testenv.OrdersStream(t)
	v := testView(t, s, "v", time.Minute, 0)
	srv, err := serving.New(serving.Options{Catalog: testCatalog(s, v), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(srv.Handler())
	defer h.Close()
	code, _, body := get(t, h.URL+"/v1/views/v?from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z")
	var a struct {
		BatchCutoff, Watermark *string
		Warnings               []string
		Rows                   []any
	}
	if code != 200 || json.Unmarshal(body, &a) != nil || a.BatchCutoff != nil || a.Watermark != nil || len(a.Warnings) != 2 || a.Rows == nil || len(a.Rows) != 0 {
		t.Fatalf("%d %s", code, body)
	}
	for _, p := range []string{"/v1/status", "/healthz", "/readyz", "/metrics"} {
		if code, _, body := get(t, h.URL+p); code != 200 {
			t.Fatalf("%s: %d %s", p, code, body)
		}
	}
	for _, p := range []string{"/v1/batch/runs", "/v1/dlq/orders"} {
		if code, _, _ := get(t, h.URL+p); code != 503 {
			t.Fatalf("%s without its store: %d, want 503", p, code)
		}
	}
}
