package tests

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"

	"github.com/braid-data/braid/tests/testenv"
)

func numbersCatalog() testenv.Catalog {
	c := testenv.Fast()
	c.Archive = "max_rows: 1000, max_delay: 200ms"
	c.Speed = "batch_size: 100, max_wait: 50ms"
	orders := testenv.Stream{
		Name: "orders", Time: "ts", ID: "id", Lateness: "1m",
		Fields:   []string{"ts: time", "id: string", "country: string", "amount: float", "items: int"},
		Required: []string{"country"},
	}
	byCountry := testenv.OrdersByCountry()
	byCountry.Name = "by_country"
	byCountry.Measures = []string{"n: count()", "revenue: sum(amount)", "basket: avg(amount)", "items: sum(items)"}
	hourly := testenv.View{Name: "hourly", Stream: "orders", Window: "1h", Hop: "1m", GroupBy: []string{"country"}, Measures: []string{"n: count()"}}
	c.Streams = []testenv.Stream{orders}
	c.Views = []testenv.View{byCountry, hourly}
	return c
}

// numbersOrder is one order of the test: its time, country, amount and items.
type numbersOrder struct {
	id      string
	ts      time.Time
	country string
	amount  float64
	items   int64
}

func (o numbersOrder) json() string {
	return fmt.Sprintf(`{"id":%q,"ts":%q,"country":%q,"amount":%s,"items":%d}`, o.id, o.ts.UTC().Format(time.RFC3339Nano), o.country,
		strconv.FormatFloat(o.amount, 'g', -1, 64), o.items)
}

// numbersGet answers GET url: status, headers and body.
func numbersGet(t *testing.T, u string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// numbersAnswer is a JSON answer as this test reads it.
type numbersAnswer struct {
	Warnings []string         `json:"warnings"`
	Rows     []map[string]any `json:"rows"`
}

// TestNumbersAndRanges: a sum beyond what its type holds answers null,
// says so in its row (overflow, exact false) and in the answer's
// warnings, in JSON, CSV and Arrow, from the speed layer and from the
// batch layer; a year of a one-minute view answers at step=1d with the
// right rows; where=dim:a,b keeps either value (and \, writes a comma in
// one); a range holding more stored rows than http.query_max_cells is
// refused with 422 naming the limit, a narrower one answers.
func TestNumbersAndRanges(t *testing.T) {
	t.Setenv("BRAID_HTTP_QUERY_MAX_CELLS", "2000")
	base := testenv.Up(t, numbersCatalog().YAML()).Base
	postOrders := func(orders []numbersOrder) {
		t.Helper()
		var lines []string
		for _, o := range orders {
			lines = append(lines, o.json())
		}
		var r ingestResp
		if code := httpJSON(t, "POST", base+"/v1/streams/orders/events", "application/x-ndjson", []byte(strings.Join(lines, "\n")), &r); code != 200 || r.Accepted != len(orders) {
			t.Fatalf("ingest: status %d %+v", code, r)
		}
	}
	query := func(view string, from, to time.Time, extra string) (numbersAnswer, http.Header) {
		t.Helper()
		u := fmt.Sprintf("%s/v1/views/%s?from=%s&to=%s%s", base, view, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), extra)
		code, h, body := numbersGet(t, u)
		var a numbersAnswer
		if code != 200 || json.Unmarshal(body, &a) != nil {
			t.Fatalf("GET %s: %d %.500s", u, code, body)
		}
		return a, h
	}

	// 1. Two orders of 1e308 and of 9e18 items in this minute: the sums
	// overflow a float and an int64; another country's row is exact.
	now := time.Now().UTC()
	minute := now.Truncate(time.Minute)
	big1 := []numbersOrder{
		{id: "big-1", ts: now, country: "XX", amount: 1e308, items: 9e18},
		{id: "big-2", ts: now, country: "XX", amount: 1e308, items: 9e18},
		{id: "small", ts: now, country: "DE", amount: 5, items: 1},
	}
	postOrders(big1)
	checkOverflow := func(source string) {
		t.Helper()
		var a numbersAnswer
		var h http.Header
		eventually(t, "the overflowing window from "+source, 60*time.Second, func() string {
			a, h = query("by_country", minute, minute.Add(time.Minute), "")
			if len(a.Rows) != 2 || a.Rows[0]["source"] != source || a.Rows[1]["source"] != source {
				return fmt.Sprintf("rows %v", a.Rows)
			}
			return ""
		})
		byCountry := map[string]map[string]any{}
		for _, r := range a.Rows {
			byCountry[r["country"].(string)] = r
		}
		xx, de := byCountry["XX"], byCountry["DE"]
		if xx["n"] != 2.0 || xx["revenue"] != nil || xx["basket"] != nil || xx["items"] != nil || xx["exact"] != false ||
			fmt.Sprint(xx["overflow"]) != "[revenue basket items]" {
			t.Fatalf("%s: overflowing row %v", source, xx)
		}
		if de["n"] != 1.0 || de["revenue"] != 5.0 || de["items"] != 1.0 || de["exact"] != true || de["overflow"] != nil {
			t.Fatalf("%s: row in range %v", source, de)
		}
		want := []string{
			"revenue: overflow in 1 row: the value is beyond the range of a 64-bit float (magnitude up to 1.8e308) and is answered null, with exact false",
			"basket: overflow in 1 row: the value is beyond the range of a 64-bit float (magnitude up to 1.8e308) and is answered null, with exact false",
			"items: overflow in 1 row: the value is beyond the range of a 64-bit integer (magnitude up to 9.2e18) and is answered null, with exact false",
		}
		if !slices.Equal(a.Warnings, want) || !slices.Equal(h.Values("Braid-Warning"), want) {
			t.Fatalf("%s: warnings %q, header %q", source, a.Warnings, h.Values("Braid-Warning"))
		}
		// CSV: an empty cell and exact false; the warnings in the header.
		u := fmt.Sprintf("%s/v1/views/by_country?from=%s&to=%s&format=csv", base, minute.Format(time.RFC3339), minute.Add(time.Minute).Format(time.RFC3339))
		code, ch, body := numbersGet(t, u)
		recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
		if code != 200 || err != nil || len(recs) != 3 || !slices.Equal(ch.Values("Braid-Warning"), want) {
			t.Fatalf("%s: csv %d %v %q %v", source, code, err, body, ch.Values("Braid-Warning"))
		}
		for _, rec := range recs[1:] {
			if rec[1] == "XX" && (rec[2] != "2" || rec[3] != "" || rec[4] != "" || rec[5] != "" || rec[7] != "false") {
				t.Fatalf("%s: csv row %q", source, rec)
			}
		}
		// Arrow: nulls, exact false, the warnings in the schema's metadata.
		code, ah, body := numbersGet(t, strings.Replace(u, "format=csv", "format=arrow", 1))
		rd, err := ipc.NewReader(bytes.NewReader(body))
		if code != 200 || err != nil || !slices.Equal(ah.Values("Braid-Warning"), want) {
			t.Fatalf("%s: arrow %d %v", source, code, err)
		}
		defer rd.Release()
		md := rd.Schema().Metadata()
		var mdWarnings []string
		if i := md.FindKey("warnings"); i < 0 || json.Unmarshal([]byte(md.Values()[i]), &mdWarnings) != nil || !slices.Equal(mdWarnings, want) {
			t.Fatalf("%s: arrow metadata %v", source, md)
		}
		if !rd.Next() {
			t.Fatalf("%s: no arrow record", source)
		}
		rec := rd.RecordBatch()
		countries := rec.Column(1).(*array.String)
		for i := 0; i < int(rec.NumRows()); i++ {
			if countries.Value(i) != "XX" {
				continue
			}
			if !rec.Column(3).IsNull(i) || !rec.Column(4).IsNull(i) || !rec.Column(5).IsNull(i) || rec.Column(7).(*array.Boolean).Value(i) {
				t.Fatalf("%s: arrow row %d of %v", source, i, rec)
			}
		}
	}
	checkOverflow("speed")

	// 2. A year of orders, too old for the speed layer: a batch run counts
	// them. Countries include one with a comma.
	rng := rand.New(rand.NewPCG(9, 27))
	yearAgo := now.Add(-365 * 24 * time.Hour)
	countries := []string{"DE", "FR", "A,B"}
	var year []numbersOrder
	for i := range 500 {
		ts := yearAgo.Add(time.Duration(rng.Int64N(int64(364 * 24 * time.Hour))))
		year = append(year, numbersOrder{id: fmt.Sprintf("y%d", i), ts: ts, country: countries[rng.IntN(3)],
			amount: float64(rng.IntN(100000)) / 100, items: rng.Int64N(9)})
	}
	for i := 0; i < len(year); i += 100 {
		postOrders(year[i : i+100])
	}
	var run struct {
		Status        string     `json:"status"`
		CoversRequest *bool      `json:"covers_request"`
		Cutoffs       runCutoffs `json:"cutoffs"`
	}
	if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 ||
		run.Status != "succeeded" || run.CoversRequest == nil || !*run.CoversRequest || run.Cutoffs.ms("by_country") <= now.UnixMilli() {
		t.Fatalf("batch run: %d %+v", code, run)
	}
	checkOverflow("batch")

	// 3. The year at step=1d, from the batch layer, against a direct
	// computation; per day and country, and with where on two countries.
	day := 24 * time.Hour
	from, to := yearAgo.Truncate(day), now.Truncate(day).Add(day)
	type agg struct {
		n, items int64
		revenue  float64
	}
	all := append(append([]numbersOrder{}, year...), big1...)
	expect := func(keep func(string) bool, byCountry bool) map[string]*agg {
		out := map[string]*agg{}
		for _, o := range all {
			if !keep(o.country) || o.country == "XX" {
				continue
			}
			k := o.ts.Truncate(day).Format(time.RFC3339)
			if byCountry {
				k += "|" + o.country
			}
			a := out[k]
			if a == nil {
				a = &agg{}
				out[k] = a
			}
			a.n++
			a.revenue += o.amount
			a.items += o.items
		}
		return out
	}
	check := func(what string, a numbersAnswer, want map[string]*agg, byCountry bool) {
		t.Helper()
		got := 0
		for _, r := range a.Rows {
			if r["country"] == "XX" {
				continue
			}
			got++
			k := r["window_start"].(string)
			if byCountry {
				k += "|" + r["country"].(string)
			}
			w := want[k]
			if w == nil {
				t.Fatalf("%s: unexpected row %v", what, r)
			}
			if r["n"] != float64(w.n) || r["items"] != float64(w.items) || math.Abs(r["revenue"].(float64)-w.revenue) > 1e-6 ||
				r["source"] != "batch" || r["exact"] != true {
				t.Fatalf("%s: row %v, want %+v", what, r, *w)
			}
		}
		if got != len(want) {
			t.Fatalf("%s: %d rows, want %d", what, got, len(want))
		}
	}
	everyCountry := func(string) bool { return true }
	a, _ := query("by_country", from, to, "&step=1d")
	check("a year at step=1d", a, expect(everyCountry, true), true)
	a, _ = query("by_country", from, to, "&step=1d&where="+url.QueryEscape("country:DE,FR"))
	check("where=country:DE,FR", a, expect(func(c string) bool { return c == "DE" || c == "FR" }, true), true)
	a, _ = query("by_country", from, to, "&step=1d&group_by=&where="+url.QueryEscape(`country:A\,B,DE`))
	check(`where=country:A\,B,DE rolled up`, a, expect(func(c string) bool { return c == "A,B" || c == "DE" }, false), false)
	if code, _, body := numbersGet(t, fmt.Sprintf("%s/v1/views/by_country?from=%s&to=%s", base, from.Format(time.RFC3339), to.Format(time.RFC3339))); code != 400 ||
		!strings.Contains(string(body), "bad parameter to") {
		t.Fatalf("a year of minutes: %d %s", code, body)
	}

	// 4. The hourly view of 1-minute hops holds 60 rows per order: a year
	// of it reads more than 2000 stored rows, a query and a live stream
	// are refused; the day of one order answers.
	for _, path := range []string{"/v1/views/hourly", "/v1/views/hourly/live"} {
		u := fmt.Sprintf("%s%s?from=%s&to=%s&step=1d", base, path, from.Format(time.RFC3339), to.Format(time.RFC3339))
		code, _, body := numbersGet(t, u)
		if code != 422 || !strings.Contains(string(body), "query too large") || !strings.Contains(string(body), "http.query_max_cells") {
			t.Fatalf("%s over a year: %d %s", path, code, body)
		}
	}
	o := year[0]
	d0 := o.ts.Truncate(day)
	a, _ = query("hourly", d0, d0.Add(day), "&step=1d&group_by=")
	// A rollup of a hopping view merges the windows aligned to its size:
	// the hours of the day, which hold each order of the day once.
	n := 0
	for _, y := range year {
		if !y.ts.Before(d0) && y.ts.Before(d0.Add(day)) {
			n++
		}
	}
	if len(a.Rows) != 1 || a.Rows[0]["n"] != float64(n) {
		t.Fatalf("the hourly view over the day of %v: %v, want n=%d", o.ts, a.Rows, n)
	}
}
