// Package bench is `make bench`: Braid's throughput and latency measured
// next to the raw limits of the parts it stands on, in the same run. Every
// figure prints as `bench: NAME VALUE UNIT limit=VALUE ratio=R` and the run
// is saved to bench/results/<date>.json (with the day's figures of the
// benches this run did not measure). Nothing here fails on timing.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/tests/testenv"
)

type result struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	Limit float64 `json:"limit,omitempty"`
	Ratio float64 `json:"ratio,omitempty"`
}

var (
	mu      sync.Mutex
	results []result
)

func report(t *testing.T, name string, value float64, unit string, limit float64) {
	r := result{Name: name, Value: value, Unit: unit, Limit: limit}
	if limit > 0 {
		r.Ratio = value / limit
	}
	mu.Lock()
	results = append(results, r)
	mu.Unlock()
	if limit > 0 {
		fmt.Printf("bench: %s %.1f %s limit=%.1f ratio=%.2f\n", name, value, unit, limit, r.Ratio)
	} else {
		fmt.Printf("bench: %s %.2f %s\n", name, value, unit)
	}
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(bareChiEnv); dir != "" {
		serveBareChi(dir) // the query benchmark's bare chi server (query_test.go); never returns
	}
	code := m.Run()
	if len(results) > 0 {
		dir := filepath.Join("..", "..", "bench", "results")
		_ = os.MkdirAll(dir, 0o755)
		path := filepath.Join(dir, time.Now().UTC().Format("2006-01-02")+".json")
		b, _ := json.MarshalIndent(map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "results": withEarlier(path, results)}, "", "  ")
		_ = os.WriteFile(path, append(b, '\n'), 0o644)
	}
	os.Exit(code)
}

// withEarlier is this run's results after those of the day's file at path
// that this run did not measure again (a run of some benches keeps the
// day's figures of the others).
func withEarlier(path string, rs []result) []result {
	var day struct {
		Results []result `json:"results"`
	}
	b, err := os.ReadFile(path)
	if err != nil || json.Unmarshal(b, &day) != nil {
		return rs
	}
	again := map[string]bool{}
	for _, r := range rs {
		again[r.Name] = true
	}
	var out []result
	for _, r := range day.Results {
		if !again[r.Name] {
			out = append(out, r)
		}
	}
	return append(out, rs...)
}

func benchCatalog() testenv.Catalog {
	orders := testenv.Orders()
	orders.Lateness = "1h"
	return testenv.Catalog{
		Epoch:   "1s",
		Batch:   "every: 0",
		Archive: "max_delay: 500ms",
		Streams: []testenv.Stream{orders},
		Views:   []testenv.View{testenv.OrdersByCountry().Without("items")},
	}
}

func orderLine(rng *rand.Rand, id string, ts time.Time) []byte {
	countries := []string{"DE", "FR", "US", "GB", "JP"}
	b, _ := json.Marshal(map[string]any{"ts": ts.UTC().Format(time.RFC3339Nano), "order_id": id, "country": countries[rng.IntN(5)],
		"amount": float64(rng.IntN(20000)) / 100, "items": 1 + rng.IntN(4), "email": fmt.Sprintf("b%d@example.com", rng.IntN(1000))})
	return b
}

// rawPublish measures JetStream's async publish rate of the same payloads
// on its own server: the per-message limit Braid's ingest stands on.
func rawPublish(t *testing.T, payloads [][]byte) float64 {
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "raw", Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, p := range payloads {
		m := &nats.Msg{Subject: "raw.orders", Data: p, Header: nats.Header{jetstream.MsgIDHeader: []string{fmt.Sprint(i)}}}
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		t.Fatal("raw publish did not complete")
	}
	return float64(len(payloads)) / time.Since(start).Seconds()
}

// postOrders sends an NDJSON body to the orders stream and returns the
// answer's status (the body is read and discarded).
func postOrders(base string, body []byte) (int, error) {
	resp, err := http.Post(base+"/v1/streams/orders/events", "application/x-ndjson", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// benchOnly keeps the benchmarks out of `make test`: they measure, they do
// not check, and they need the machine to themselves.
func benchOnly(t *testing.T) {
	if os.Getenv("BRAID_BENCH") == "" {
		t.Skip("run by make bench (BRAID_BENCH=1)")
	}
}

func TestBenchIngestAndFreshness(t *testing.T) {
	benchOnly(t)
	const total, perReq, conns = 1_500_000, 1000, 4
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Now()
	lines := make([][]byte, total)
	for i := range lines {
		lines[i] = orderLine(rng, fmt.Sprintf("b-%d", i), now.Add(-time.Duration(rng.IntN(600))*time.Second))
	}
	limit := rawPublish(t, lines)

	base := testenv.Up(t, benchCatalog().YAML()).Base

	// 1. HTTP ingest: NDJSON, 1000 events a request, 4 connections.
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(perReq)) - perReq
				if i >= total {
					return
				}
				body := bytes.Join(lines[i:min(i+perReq, total)], []byte("\n"))
				for {
					code, err := postOrders(base, body)
					if err != nil {
						t.Error(err)
						return
					}
					if code == 200 {
						break
					}
					time.Sleep(50 * time.Millisecond) // pushed back: retry the same ids
				}
			}
		}()
	}
	wg.Wait()
	rate := float64(total) / time.Since(start).Seconds()
	report(t, "ingest_http_ndjson", rate, "events/s", limit)
	// End to end: until the speed layer and the lake hold every event
	// (both positions at the log's last record; the lake's last file waits
	// up to archive.max_delay, 500 ms here).
	waitCaughtUp(t, base, "orders", true, 2*time.Minute, 2*time.Millisecond)
	report(t, "ingest_end_to_end", float64(total)/time.Since(start).Seconds(), "events/s", limit)

	// 4. Freshness at a steady 20,000 events/s (20 requests of 1000 a
	// second in the background): from the POST's answer to the event being
	// in a merged query.
	loadSent, stopLoad := steadyOrders(t, base, 20_000, 1000)
	time.Sleep(2 * time.Second) // the load settles
	loadStart, sentBefore := time.Now(), loadSent.Load()
	var lat []float64
	for i := 0; i < 100; i++ {
		ts := time.Now().UTC()
		country := fmt.Sprintf("F%d", i)
		line, _ := json.Marshal(map[string]any{"ts": ts.Format(time.RFC3339Nano), "order_id": fmt.Sprintf("f-%d", i), "country": country, "amount": 1.0})
		resp, err := http.Post(base+"/v1/streams/orders/events", "application/json", bytes.NewReader(line))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t0 := time.Now()
		untilInView(t, base, ts, country, t0.Add(30*time.Second))
		lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
		time.Sleep(20 * time.Millisecond) // probes spread over the steady load
	}
	stopLoad()
	t.Logf("freshness measured while ingesting %.0f events/s in the background", float64(loadSent.Load()-sentBefore)/time.Since(loadStart).Seconds())
	sort.Float64s(lat)
	report(t, "freshness_p50", lat[len(lat)/2], "ms", 0)
	report(t, "freshness_p99", lat[len(lat)*99/100], "ms", 0)
}

// waitCaughtUp waits until the speed layer (and, with archive, the
// archiver) hold every record of the stream's log, checking every poll,
// failing after limit.
func waitCaughtUp(t *testing.T, base, stream string, archive bool, limit, poll time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(limit); ; time.Sleep(poll) {
		var st struct {
			Streams map[string]struct {
				Log struct {
					LastSeq uint64 `json:"last_seq"`
				} `json:"log"`
				Speed   struct{ Seq uint64 } `json:"speed"`
				Archive struct{ Seq uint64 } `json:"archive"`
			} `json:"streams"`
		}
		r, err := http.Get(base + "/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(r.Body).Decode(&st)
		r.Body.Close()
		o := st.Streams[stream]
		if o.Log.LastSeq > 0 && o.Speed.Seq == o.Log.LastSeq && (!archive || o.Archive.Seq == o.Log.LastSeq) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("speed and archiver did not catch up with %s: %+v", stream, o)
		}
	}
}

// steadyOrders posts perReq orders rate/perReq times a second in the
// background until stop is called; sent counts the orders stored.
func steadyOrders(t *testing.T, base string, rate, perReq int) (sent *atomic.Int64, stop func()) {
	sent = new(atomic.Int64)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second * time.Duration(perReq) / time.Duration(rate))
		defer tick.Stop()
		var body []byte
		for n := 0; ; n++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			body, now := body[:0], time.Now()
			for i := range perReq {
				body = appendOrderLine(body, 1<<40+n*perReq+i, now)
				body = append(body, '\n')
			}
			code, err := postOrders(base, body)
			if err != nil {
				t.Error(err)
				return
			}
			if code == 200 {
				sent.Add(int64(perReq))
			}
		}
	}()
	return sent, func() { close(done); wg.Wait() }
}

// untilInView polls orders_by_country until the 1-minute window of ts has
// a row of country, or deadline passes.
func untilInView(t *testing.T, base string, ts time.Time, country string, deadline time.Time) {
	from := ts.Truncate(time.Minute)
	url := fmt.Sprintf("%s/v1/views/orders_by_country?from=%s&to=%s&where=country:%s", base, from.Format(time.RFC3339), from.Add(time.Minute).Format(time.RFC3339), country)
	for time.Now().Before(deadline) {
		var q struct {
			Rows []map[string]any `json:"rows"`
		}
		r, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(r.Body).Decode(&q)
		r.Body.Close()
		if len(q.Rows) == 1 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}
