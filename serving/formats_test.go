package serving_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/tests/testenv"
)

// arrowCell renders an Arrow value like the JSON answer renders it.
func arrowCell(t *testing.T, col arrow.Array, i int) string {
	t.Helper()
	if col.IsNull(i) {
		return "null"
	}
	switch c := col.(type) {
	case *array.Timestamp:
		return strconv.Quote(logic.FormatTime(int64(c.Value(i))))
	case *array.Int64:
		return strconv.FormatInt(c.Value(i), 10)
	case *array.Float64:
		return strconv.FormatFloat(c.Value(i), 'g', -1, 64)
	case *array.Boolean:
		return strconv.FormatBool(c.Value(i))
	case *array.String:
		return strconv.Quote(c.Value(i))
	}
	t.Fatalf("unexpected arrow column %T", col)
	return ""
}

// jsonCell renders a decoded JSON value (UseNumber) canonically.
func jsonCell(x any) string {
	switch y := x.(type) {
	case nil:
		return "null"
	case json.Number:
		if n, err := y.Int64(); err == nil && !strings.ContainsAny(y.String(), ".eE") {
			return strconv.FormatInt(n, 10)
		}
		f, _ := y.Float64()
		return strconv.FormatFloat(f, 'g', -1, 64)
	case string:
		return strconv.Quote(y)
	case bool:
		return strconv.FormatBool(y)
	}
	return fmt.Sprint(x)
}

// TestQueryArrow reads format=arrow (and Accept: arrow) back with arrow-go's
// IPC reader and compares it cell by cell with the JSON answer of the same
// query; the schema has the contract's types.
func TestQueryArrow(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 1))
	s := testenv.OrdersStream(t)
	v := testView(t, s, "orders_by_country", time.Minute, 0)
	e := newQueryEnv(t, r, v)
	base := int64(1_764_000_000_000)
	for _, extra := range []string{"", "&step=5m&group_by=country", "&step=all&group_by=&where=device:web", "&group_by=device,country&order=-revenue&limit=7"} {
		q := fmt.Sprintf("from=%s&to=%s%s", url.QueryEscape(logic.FormatTime(base)), url.QueryEscape(logic.FormatTime(base+20*minute)), extra)
		code, _, jb := get(t, e.srv.URL+"/v1/views/orders_by_country?"+q)
		if code != 200 {
			t.Fatalf("json %s: %d %s", q, code, jb)
		}
		var ja struct {
			GroupBy []string         `json:"group_by"`
			Rows    []map[string]any `json:"rows"`
		}
		dec := json.NewDecoder(bytes.NewReader(jb))
		dec.UseNumber()
		if err := dec.Decode(&ja); err != nil {
			t.Fatal(err)
		}
		if len(ja.Rows) == 0 {
			t.Fatalf("%s: no rows to compare", q)
		}
		bodies := map[string][]byte{}
		code, hdr, ab := get(t, e.srv.URL+"/v1/views/orders_by_country?"+q+"&format=arrow")
		if code != 200 || hdr.Get("Content-Type") != serving.ArrowMediaType {
			t.Fatalf("arrow %s: %d %s", q, code, hdr.Get("Content-Type"))
		}
		bodies["format"] = ab
		req, _ := http.NewRequest("GET", e.srv.URL+"/v1/views/orders_by_country?"+q, nil)
		req.Header.Set("Accept", "application/vnd.apache.arrow.stream, application/json;q=0.5")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != serving.ArrowMediaType {
			t.Fatalf("Accept arrow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		bodies["accept"] = buf.Bytes()

		for how, body := range bodies {
			rd, err := ipc.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("%s %s: ipc reader: %v", how, q, err)
			}
			sc := rd.Schema()
			wantCols := append(append([]string{"window_start"}, ja.GroupBy...), "n", "revenue", "avg", "lo", "hi", "items", "source", "exact", "final")
			if sc.NumFields() != len(wantCols) {
				t.Fatalf("%s: schema %v, want columns %v", how, sc, wantCols)
			}
			for i, name := range wantCols {
				if sc.Field(i).Name != name {
					t.Fatalf("%s: column %d is %s, want %s", how, i, sc.Field(i).Name, name)
				}
			}
			ts, ok := sc.Field(0).Type.(*arrow.TimestampType)
			if !ok || ts.Unit != arrow.Millisecond || ts.TimeZone != "UTC" {
				t.Fatalf("window_start type %v", sc.Field(0).Type)
			}
			nd := len(ja.GroupBy)
			types := map[string]arrow.Type{"n": arrow.INT64, "revenue": arrow.FLOAT64, "avg": arrow.FLOAT64, "lo": arrow.FLOAT64, "hi": arrow.INT64,
				"items": arrow.INT64, "source": arrow.STRING, "exact": arrow.BOOL, "final": arrow.BOOL, "country": arrow.STRING, "device": arrow.STRING}
			for i := 1; i < len(wantCols); i++ {
				f := sc.Field(i)
				if f.Type.ID() != types[f.Name] || (i <= nd+6) != f.Nullable {
					t.Fatalf("column %s: type %v nullable %v", f.Name, f.Type, f.Nullable)
				}
			}
			row := 0
			for rd.Next() {
				rec := rd.RecordBatch()
				for i := 0; i < int(rec.NumRows()); i++ {
					if row >= len(ja.Rows) {
						t.Fatalf("%s: more arrow rows than JSON rows", how)
					}
					for c, name := range wantCols {
						got, want := arrowCell(t, rec.Column(c), i), jsonCell(ja.Rows[row][name])
						if got != want {
							t.Fatalf("%s %s: row %d %s = %s, JSON has %s", how, q, row, name, got, want)
						}
					}
					row++
				}
			}
			if err := rd.Err(); err != nil {
				t.Fatal(err)
			}
			rd.Release()
			if row != len(ja.Rows) {
				t.Fatalf("%s %s: %d arrow rows, JSON has %d", how, q, row, len(ja.Rows))
			}
		}
	}
	// An empty answer is a valid stream with the schema and no rows.
	q := fmt.Sprintf("from=%s&to=%s&format=arrow", url.QueryEscape(logic.FormatTime(base-60*minute)), url.QueryEscape(logic.FormatTime(base-30*minute)))
	_, _, ab := get(t, e.srv.URL+"/v1/views/orders_by_country?"+q)
	rd, err := ipc.NewReader(bytes.NewReader(ab))
	if err != nil || rd.Schema().NumFields() != 12 || rd.Next() {
		t.Fatalf("empty arrow answer: %v", err)
	}
}

// TestOpenAPI: every route is documented, every documented path exists,
// and the document is valid OpenAPI 3.
func TestOpenAPI(t *testing.T) {
	s := testenv.OrdersStream(t)
	root := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	srv, err := serving.New(serving.Options{Catalog: testCatalog(s, testView(t, s, "v", time.Minute, 0)), Root: root,
		Registry: prometheus.NewRegistry(), Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(srv.Handler())
	defer h.Close()
	code, _, body := get(t, h.URL+"/v1/openapi.json")
	if code != 200 {
		t.Fatalf("openapi.json: %d", code)
	}
	doc, err := openapi3.NewLoader().LoadFromData(body)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := doc.Validate(t.Context()); err != nil {
		t.Fatalf("validate: %v", err)
	}
	documented := map[string]bool{}
	for p, item := range doc.Paths.Map() {
		for m := range item.Operations() {
			documented[m+" "+p] = true
		}
	}
	routes := map[string]bool{}
	mux, ok := srv.Handler().(chi.Routes)
	if !ok {
		t.Fatalf("handler %T is not a chi router", srv.Handler())
	}
	err = chi.Walk(mux, func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		route = strings.TrimSuffix(strings.ReplaceAll(route, "/*/", "/"), "/")
		if route == "/*" || route == "" {
			route = "/" // the dashboard and its assets
		}
		if method == "HEAD" || (route == "/" && method != "GET") || (route == "/metrics" && method != "GET") {
			return nil // mounted handlers answer every method; GET is the documented one
		}
		routes[method+" "+route] = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for r := range routes {
		if !documented[r] {
			t.Errorf("route %s is not documented", r)
		}
	}
	for d := range documented {
		if !routes[d] {
			t.Errorf("documented %s is not a route", d)
		}
	}
	if len(routes) < 14 {
		t.Fatalf("walked only %d routes: %v", len(routes), routes)
	}
}

// TestQueryCache: a repeated query is answered from the cache while the
// speed position stays, and the answer changes once a commit moves it.
func TestQueryCache(t *testing.T) {
	s := testenv.OrdersStream(t)
	v := testView(t, s, "v", time.Minute, 0)
	base := int64(1_764_000_000_000)
	sp := &fakeSpeed{cells: map[string][]query.SpeedCell{}, seq: 1, joined: []*logic.View{v}}
	add := func(epoch int64, evs []testenv.OrderEvent) {
		lev := prepare(t, s, evs)
		_, cells := split(v, evs, lev, 0)
		sp.mu.Lock()
		sp.cells[v.Name] = append(sp.cells[v.Name], cells...)
		sp.mu.Unlock()
	}
	de := "DE"
	amt := func(x float64) *float64 { return &x }
	add(base, []testenv.OrderEvent{{Epoch: base, TS: base + 1000, Country: &de, Device: "web", Amount: amt(10)}})
	reg := prometheus.NewRegistry()
	srv, err := serving.New(serving.Options{Catalog: testCatalog(s, v), Speed: sp, SpeedStatus: sp, QueryCacheBytes: 1 << 20, Registry: reg, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(srv.Handler())
	defer h.Close()
	q := h.URL + "/v1/views/v?from=" + url.QueryEscape(logic.FormatTime(base)) + "&to=" + url.QueryEscape(logic.FormatTime(base+10*minute))
	revenue := func(u string) string {
		t.Helper()
		code, _, body := get(t, u)
		if code != 200 {
			t.Fatalf("%d %s", code, body)
		}
		a := decodeAnswer(t, body)
		if len(a.Rows) != 1 {
			t.Fatalf("rows %v", a.Rows)
		}
		return fmt.Sprint(a.Rows[0]["n"], "/", a.Rows[0]["revenue"])
	}
	if got := revenue(q); got != "1/10" {
		t.Fatalf("first answer %s", got)
	}
	// New cells without a commit notice (same seq): the cached answer stays,
	// which proves the second query was served from the cache ...
	add(base+10_000, []testenv.OrderEvent{{Epoch: base + 10_000, TS: base + 2000, Country: &de, Device: "web", Amount: amt(5)}})
	if got := revenue(q); got != "1/10" {
		t.Fatalf("answer at the same position %s, want the cached 1/10", got)
	}
	// ... also under another spelling of the same query (params reordered).
	if got := revenue(h.URL + "/v1/views/v?to=" + url.QueryEscape(logic.FormatTime(base+10*minute)) + "&from=" + url.QueryEscape(logic.FormatTime(base))); got != "1/10" {
		t.Fatalf("reordered params: %s", got)
	}
	// The commit moves the position: the next answer has the new event.
	sp.mu.Lock()
	sp.seq = 2
	sp.mu.Unlock()
	if got := revenue(q); got != "2/15" {
		t.Fatalf("after the commit: %s, want 2/15", got)
	}
	// A different format of a cached answer is encoded from the same answer.
	if code, _, body := get(t, q+"&format=csv"); code != 200 || !strings.Contains(string(body), ",2,15,") {
		t.Fatalf("csv: %d %s", code, body)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	hits := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "braid_query_cache_total" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "hit" {
					hits = m.GetCounter().GetValue()
				}
			}
		}
	}
	if hits != 3 {
		t.Fatalf("cache hits %v, want 3", hits)
	}
}
