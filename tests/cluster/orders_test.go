package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"
)

// order is one event of the orders stream (testenv.Orders).
type order struct {
	TS      string  `json:"ts"`
	ID      string  `json:"order_id"`
	Country string  `json:"country"`
	Amount  float64 `json:"amount"`
	Items   int     `json:"items"`
	Email   string  `json:"email"`
}

func ndjson(orders []order) []byte {
	var b bytes.Buffer
	for _, o := range orders {
		j, _ := json.Marshal(o)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func (o order) time() time.Time {
	ts, _ := time.Parse(time.RFC3339Nano, o.TS)
	return ts.UTC()
}

// answer is the part of a view query's answer the bed reads.
type answer struct {
	Rows []map[string]any `json:"rows"`
}

func viewURL(base, view string, from, to time.Time) string {
	return fmt.Sprintf("%s/v1/views/%s?from=%s&to=%s", base, view, from.Format(time.RFC3339), to.Format(time.RFC3339))
}

// minute is the independent computation of orders_by_country: per minute
// and country.
type minute struct {
	n             int64
	sum, min, max float64
	items         int64
}

func byMinute(orders []order) map[string]*minute {
	out := map[string]*minute{}
	for _, o := range orders {
		k := o.time().Truncate(time.Minute).Format(time.RFC3339) + "|" + o.Country
		a := out[k]
		if a == nil {
			a = &minute{min: math.Inf(1), max: math.Inf(-1)}
			out[k] = a
		}
		a.n++
		a.sum += o.Amount
		a.min = math.Min(a.min, o.Amount)
		a.max = math.Max(a.max, o.Amount)
		a.items += int64(o.Items)
	}
	return out
}

// compareMinute checks an answer of orders_by_country against the
// computation: the same rows, each exact (floats to 1e-9 relative).
func compareMinute(q answer, want map[string]*minute) string {
	if len(q.Rows) != len(want) {
		return fmt.Sprintf("%d rows, want %d", len(q.Rows), len(want))
	}
	for _, r := range q.Rows {
		k := fmt.Sprint(r["window_start"]) + "|" + fmt.Sprint(r["country"])
		a := want[k]
		if a == nil {
			return "unexpected row " + k
		}
		if r["exact"] != true {
			return "row " + k + " not exact"
		}
		for name, w := range map[string]float64{"orders": float64(a.n), "revenue": a.sum, "basket_avg": a.sum / float64(a.n),
			"biggest": a.max, "smallest": a.min, "items": float64(a.items)} {
			if msg := near(r[name], w); msg != "" {
				return fmt.Sprintf("row %s %s: %s", k, name, msg)
			}
		}
	}
	return ""
}

// hour is the independent computation of buyers_hourly: distinct buyers
// and the median amount (quantile_cont) per hour.
type hour struct {
	emails  map[string]bool
	amounts []float64
}

func byHour(orders []order) map[string]*hour {
	out := map[string]*hour{}
	for _, o := range orders {
		k := o.time().Truncate(time.Hour).Format(time.RFC3339)
		if out[k] == nil {
			out[k] = &hour{emails: map[string]bool{}}
		}
		out[k].emails[o.Email] = true
		out[k].amounts = append(out[k].amounts, o.Amount)
	}
	return out
}

// compareHour checks an answer of buyers_hourly against the computation,
// every row exact.
func compareHour(q answer, want map[string]*hour) string {
	if len(q.Rows) != len(want) {
		return fmt.Sprintf("%d rows, want %d", len(q.Rows), len(want))
	}
	for _, r := range q.Rows {
		k := fmt.Sprint(r["window_start"])
		h := want[k]
		if h == nil {
			return "unexpected row " + k
		}
		if r["exact"] != true {
			return "row " + k + " not exact"
		}
		xs := slices.Sorted(slices.Values(h.amounts))
		rank := 0.5 * float64(len(xs)-1)
		lo := int(rank)
		med := xs[lo]
		if lo+1 < len(xs) {
			med += (rank - float64(lo)) * (xs[lo+1] - xs[lo])
		}
		if msg := near(r["buyers"], float64(len(h.emails))); msg != "" {
			return "row " + k + " buyers: " + msg
		}
		if msg := near(r["median"], med); msg != "" {
			return "row " + k + " median: " + msg
		}
	}
	return ""
}

// near says how got (a JSON number) differs from want beyond 1e-9
// relative ("" when it does not).
func near(got any, want float64) string {
	g, ok := got.(float64)
	if !ok || math.Abs(g-want) > 1e-9*math.Max(1, math.Abs(want)) {
		return fmt.Sprintf("%v, want %v", got, want)
	}
	return ""
}
