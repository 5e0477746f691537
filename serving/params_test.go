package serving_test

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/tests/testenv"
)

// TestWhereValues: where=dim:a,b keeps either value; an item that names
// no dimension is another value of the dimension before it; \, and \:
// write a comma and a colon in a value; dimensions may follow each other
// in one parameter or in repeated ones.
func TestWhereValues(t *testing.T) {
	s := testenv.OrdersStream(t)
	v := testView(t, s, "v", time.Minute, 0) // dimensions country, device
	const base = "from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z"
	for _, tc := range []struct {
		where []string
		want  string // filters as dim=[values] in order
	}{
		{[]string{"country:DE,FR"}, "country=[DE FR]"},
		{[]string{"country:DE,FR,US"}, "country=[DE FR US]"},
		{[]string{"country:DE,country:FR"}, "country=[DE FR]"},
		{[]string{"country:DE", "FR"}, ""}, // a parameter starts with a dimension
		{[]string{"country:DE,FR,device:ios,web"}, "country=[DE FR] device=[ios web]"},
		{[]string{"country:DE,FR", "device:ios", "country:US"}, "country=[DE FR US] device=[ios]"},
		{[]string{`country:a\,b,c`}, "country=[a,b c]"},
		{[]string{`country:x:y,a\:b`}, "country=[x:y a:b]"},
		{[]string{`country:C:\temp,back\\slash`}, `country=[C:\temp back\slash]`},
		{[]string{"country:null,DE"}, "country=[null DE]"},
		{[]string{"country:DE,"}, "country=[DE]"},
		{[]string{"country:"}, "country=[]"},
		{[]string{"country:DE,city:Paris"}, ""},
		{[]string{"country:DE,http://x"}, ""},
		{[]string{"DE,FR"}, ""},
		{[]string{":DE"}, ""},
	} {
		vals := url.Values{}
		for _, w := range tc.where {
			vals.Add("where", w)
		}
		raw := base + "&" + vals.Encode()
		q, err := serving.ParseQuery(v, mustValues(t, raw))
		if tc.want == "" {
			var pe *serving.ParamError
			if !errors.As(err, &pe) || pe.Param != "where" {
				t.Errorf("%q: want a where error, got %v", tc.where, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.where, err)
			continue
		}
		var got []string
		for _, f := range q.Filters {
			vs := f.Values
			if vs == nil {
				vs = []string{}
			}
			if len(vs) == 1 && vs[0] == "" {
				vs = []string{}
			}
			got = append(got, fmt.Sprintf("%s=%v", v.Dims[f.Dim], vs))
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("%q: filters %s, want %s", tc.where, strings.Join(got, " "), tc.want)
		}
	}
}

func mustValues(t *testing.T, raw string) url.Values {
	t.Helper()
	vals, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

// TestRangeBoundsBuckets: the range is bounded by the buckets it answers
// (100,000), not by the windows it covers: a year of a one-minute view
// answers at step=1d, 1h and all, not at 1m; a hopping view likewise.
func TestRangeBoundsBuckets(t *testing.T) {
	s := testenv.OrdersStream(t)
	tum := testView(t, s, "tum", time.Minute, 0)
	hop := testView(t, s, "hop", time.Minute, 20*time.Second)
	year := "from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z"
	for _, tc := range []struct {
		name, query string
		ok          bool
	}{
		{"a year of minutes", year, false},
		{"a year at step=1d", year + "&step=1d", true},
		{"a year at step=1h", year + "&step=1h", true}, // 8,760 buckets
		{"a year at step=all", year + "&step=all", true},
		{"1970 to 9999 at step=all", "from=1970-01-01T00:00:00Z&to=9999-12-31T00:00:00Z&step=all", true},
		{"1970 to 9999 at step=1d", "from=1970-01-01T00:00:00Z&to=9999-12-31T00:00:00Z&step=1d", false}, // 2.9M days
		{"69 days of minutes", "from=2025-01-01T00:00:00Z&to=2025-03-11T00:00:00Z", true},               // 99,360 windows
		{"70 days of minutes", "from=2025-01-01T00:00:00Z&to=2025-03-12T00:00:00Z", false},              // 100,800
	} {
		_, err := serving.ParseQuery(tum, mustValues(t, tc.query))
		var pe *serving.ParamError
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.ok && (!errors.As(err, &pe) || pe.Param != "to" || !strings.Contains(pe.Msg, "100000")):
			t.Errorf("%s: want a to error naming the bound, got %v", tc.name, err)
		}
	}
	// A hopping view of 20 s hops: 100,000 windows are 23 days; a rollup
	// step of a day answers a year.
	if _, err := serving.ParseQuery(hop, mustValues(t, "from=2025-01-01T00:00:00Z&to=2025-01-25T00:00:00Z")); err == nil {
		t.Error("24 days of 20 s hops answered")
	}
	if _, err := serving.ParseQuery(hop, mustValues(t, year+"&step=1d")); err != nil {
		t.Errorf("a year of a hopping view at step=1d: %v", err)
	}
}
