package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"time"
)

// demo is the synthetic generator of `braid up --demo`: orders, page views
// and sensor readings with realistic shapes, posted to the HTTP API like any
// producer, including a few late and a few malformed events. Orders are
// posted with decide=true (the demo's rules block a few suspicious ones).
type demo struct {
	base   string // http://127.0.0.1:PORT
	rate   int    // events per second per stream
	logger *slog.Logger
	client *http.Client
	rng    *rand.Rand
	seq    int
}

var (
	countries = []string{"DE", "FR", "US", "GB", "NL", "ES", "IT", "JP", "BR", "PL"}
	weights   = []float64{0.22, 0.14, 0.2, 0.12, 0.06, 0.07, 0.06, 0.05, 0.04, 0.04}
	paths     = []string{"/", "/pricing", "/docs", "/docs/query", "/blog", "/signup", "/login", "/checkout"}
	sites     = []string{"berlin", "paris", "austin"}
)

func (d *demo) run(ctx context.Context) {
	d.client = &http.Client{Timeout: 10 * time.Second}
	d.rng = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	d.logger.Info("demo generator running", "events_per_second_per_stream", d.rate)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n := d.rate / 5
		if n < 1 {
			n = 1
		}
		for _, s := range []struct {
			stream string
			gen    func(time.Time) map[string]any
			query  string
		}{{"orders", d.order, "?decide=true"}, {"pageviews", d.pageview, ""}, {"sensors", d.sensor, ""}} {
			var body bytes.Buffer
			now := time.Now()
			for i := 0; i < n; i++ {
				ev := s.gen(now)
				d.seq++
				switch r := d.rng.Float64(); {
				case r < 0.01: // malformed: goes to the dead-letter queue
					body.WriteString(`{"ts": "yesterday-ish", "broken": true` + "\n")
					continue
				case r < 0.02: // late: older than the allowed lateness
					ev["ts"] = now.Add(-10 * time.Minute).UTC().Format(time.RFC3339Nano)
				case r < 0.10: // a little out of order
					ev["ts"] = now.Add(-time.Duration(d.rng.IntN(20)) * time.Second).UTC().Format(time.RFC3339Nano)
				}
				b, _ := json.Marshal(ev)
				body.Write(b)
				body.WriteByte('\n')
			}
			d.post(ctx, s.stream, s.query, body.Bytes())
		}
	}
}

func (d *demo) post(ctx context.Context, stream, query string, body []byte) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("%s/v1/streams/%s/events%s", d.base, stream, query), bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := d.client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			d.logger.Warn("demo post failed", "stream", stream, "err", err)
		}
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		d.logger.Warn("demo post refused", "stream", stream, "status", resp.StatusCode)
	}
}

func (d *demo) pick(xs []string, w []float64) string {
	r := d.rng.Float64()
	for i, p := range w {
		if r < p {
			return xs[i]
		}
		r -= p
	}
	return xs[len(xs)-1]
}

func (d *demo) order(now time.Time) map[string]any {
	amount := math.Round(math.Exp(3+0.8*d.rng.NormFloat64())*100) / 100
	items := 1 + d.rng.IntN(5)
	if d.rng.Float64() < 0.01 { // suspicious: one very expensive item (the demo's rules block it)
		amount, items = math.Round((900+2000*d.rng.Float64())*100)/100, 1
	}
	return map[string]any{
		"ts": now.UTC().Format(time.RFC3339Nano), "order_id": fmt.Sprintf("o-%d-%d", now.UnixNano(), d.seq),
		"country": d.pick(countries, weights), "amount": amount, "items": items,
		"email": fmt.Sprintf("user%d@example.com", d.rng.IntN(5000)),
		// A few thousand customers, some far more active than others
		// (the square skews the picks toward low numbers).
		"customer_id": fmt.Sprintf("c-%04d", int(demoCustomers*math.Pow(d.rng.Float64(), 2))),
	}
}

// demoCustomers is how many customers the demo's orders come from.
const demoCustomers = 3000

func (d *demo) pageview(now time.Time) map[string]any {
	p := paths[int(math.Min(float64(len(paths)-1), math.Abs(d.rng.NormFloat64())*2.5))]
	return map[string]any{
		"ts": now.UnixMilli(), "view_id": fmt.Sprintf("v-%d-%d", now.UnixNano(), d.seq), "path": p,
		"user": fmt.Sprintf("u%d", d.rng.IntN(2000)), "ms": int(math.Exp(4.5 + 0.6*d.rng.NormFloat64())), "mobile": d.rng.Float64() < 0.45,
	}
}

// overheat is the site the demo overheats at now ("" for none): for the
// first overheatFor of every overheatEvery, a site in turn, so the
// overheat alert fires now and then.
func overheat(now time.Time) string {
	n := now.UnixMilli() / overheatEvery.Milliseconds()
	if now.UnixMilli()%overheatEvery.Milliseconds() >= overheatFor.Milliseconds() {
		return ""
	}
	return sites[int(n)%len(sites)]
}

const (
	overheatEvery = 2 * time.Minute
	overheatFor   = 10 * time.Second
)

func (d *demo) sensor(now time.Time) map[string]any {
	site := sites[d.rng.IntN(len(sites))]
	hour := float64(now.Unix()%86400) / 3600
	temp := 18 + 6*math.Sin((hour-9)/24*2*math.Pi) + d.rng.NormFloat64()*0.7
	if hot := overheat(now); hot != "" && d.rng.Float64() < 0.5 {
		site, temp = hot, 81+d.rng.Float64()*12
	}
	return map[string]any{
		"ts": now.UTC().Format(time.RFC3339Nano), "device": fmt.Sprintf("%s-%02d", site, d.rng.IntN(12)), "site": site,
		"temp": math.Round(temp*100) / 100, "humidity": math.Round((45+10*d.rng.Float64())*10) / 10,
	}
}
