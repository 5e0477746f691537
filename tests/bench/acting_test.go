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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/tests/testenv"
)

// actingCatalog is the deployment of the entity and decision benches:
// orders partitioned by customer, a customer entity and two decision rules
// (one over the event, one over its features).
func actingCatalog() string {
	c := testenv.Catalog{
		Epoch:   "1s",
		Batch:   "every: 0",
		Archive: "max_delay: 500ms",
		Speed:   "max_wait: 5ms",
		Streams: []testenv.Stream{
			{Name: "orders", Time: "ts", ID: "order_id", Lateness: "1h", PartitionBy: "customer_id",
				Fields: []string{"ts: time", "order_id: string", "customer_id: string", "country: string", "amount: float", "items: int"}},
		},
		Views: []testenv.View{
			{Name: "orders_by_country", Stream: "orders", Window: "1m", GroupBy: []string{"country"}, Measures: []string{"orders: count()", "revenue: sum(amount)"}},
		},
	}
	c.Extra = `entities:
  customer:
    stream: orders
    key: customer_id
    features:
      orders_1h:      { measure: "count()", over: 1h }
      spend_30d:      { measure: "sum(amount)", over: 30d }
      avg_basket_30d: { measure: "avg(amount)", over: 30d }
      last_country:   { measure: "last(country)" }
rules:
  big_single_item:
    stream: orders
    when: "amount > 900 and items = 1"
    outcome: review
  new_country_big_basket:
    stream: orders
    entity: customer
    when: "amount > 5 * features.avg_basket_30d and country != features.last_country"
    outcome: block
`
	return c.YAML()
}

func postJSON(base, path, ctype string, body []byte) (int, []byte, error) {
	resp, err := http.Post(base+path, ctype, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func pct(xs []float64, p int) float64 {
	sort.Float64s(xs)
	return xs[min(len(xs)-1, len(xs)*p/100)]
}

// lookupLoad runs clients that call get until d has passed and returns
// the calls per second and the latencies (ms).
func lookupLoad(clients int, d time.Duration, get func(rng *rand.Rand) error) (float64, []float64, error) {
	var mu sync.Mutex
	var lat []float64
	var firstErr error
	var n atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			var mine []float64
			for time.Since(start) < d {
				t0 := time.Now()
				if err := get(rng); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				mine = append(mine, float64(time.Since(t0).Microseconds())/1000)
				n.Add(1)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return float64(n.Load()) / time.Since(start).Seconds(), lat, firstErr
}

// TestBenchEntityLookup: 1M customers (two orders each, one before a batch
// run and one after, so every key has a batch part and a speed part), then
// GET /v1/entities/customer/{key} of random keys from 4 clients for 10 s,
// against a bare go-redis HGETALL of one key (a hash of as many fields) on
// the same Redis server, also 4 clients.
func TestBenchEntityLookup(t *testing.T) {
	benchOnly(t)
	keys := envInt(t, "BRAID_BENCH_ENTITY_KEYS", 1_000_000)
	st := testenv.Up(t, actingCatalog())
	base := st.Base
	countries := []string{"DE", "FR", "US", "GB", "JP"}
	load := func(round int) {
		const perReq, conns = 2000, 4
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var body []byte
				for {
					i := int(next.Add(perReq)) - perReq
					if i >= keys {
						return
					}
					body = body[:0]
					now := time.Now().UTC()
					for k := i; k < min(i+perReq, keys); k++ {
						body = fmt.Appendf(body, `{"ts":%q,"order_id":"o%d-%d","customer_id":"c%d","country":%q,"amount":%d,"items":%d}`+"\n",
							now.Add(-time.Duration(k%600)*time.Second).Format(time.RFC3339Nano), round, k, k, countries[(k+round)%5], 10+k%90, 1+k%3)
					}
					for {
						code, b, err := postJSON(base, "/v1/streams/orders/events", "application/x-ndjson", body)
						if err != nil {
							t.Error(err)
							return
						}
						if code == 200 {
							break
						}
						if code != 429 && code != 503 {
							t.Errorf("ingest: %d %s", code, b)
							return
						}
						time.Sleep(20 * time.Millisecond)
					}
				}
			}()
		}
		wg.Wait()
		t.Logf("round %d: %d orders in %.1fs", round, keys, time.Since(start).Seconds())
	}
	load(0)
	t0 := time.Now()
	if code, b, err := postJSON(base, "/v1/batch/runs?wait=true", "application/json", []byte(`{}`)); err != nil || code != 200 {
		t.Fatalf("batch run: %d %s %v", code, b, err)
	}
	t.Logf("batch run (with the entity's materialisation of %d keys) took %.1fs", keys, time.Since(t0).Seconds())
	load(1)
	waitCaughtUp(t, base, "orders", false, 5*time.Minute, 50*time.Millisecond) // the speed layer folds the second round

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	const clients, dur = 4, 10 * time.Second
	rate, lat, err := lookupLoad(clients, dur, func(rng *rand.Rand) error {
		k := rng.IntN(keys)
		resp, err := client.Get(base + "/v1/entities/customer/c" + strconv.Itoa(k))
		if err != nil {
			return err
		}
		var a struct {
			Features map[string]any `json:"features"`
		}
		err = json.NewDecoder(resp.Body).Decode(&a)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil {
			return fmt.Errorf("lookup c%d: %d %v", k, resp.StatusCode, err)
		}
		if n, _ := a.Features["orders_1h"].(float64); n != 2 {
			return fmt.Errorf("lookup c%d: orders_1h = %v, want 2 (one order per round)", k, a.Features["orders_1h"])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The bare part: go-redis HGETALL of one of 100,000 hashes holding 8
	// fields of 40 bytes each, on the same Redis server.
	ropts, err := redis.ParseURL(st.Redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	ropts.PoolSize = 8
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	ctx := context.Background()
	const bareKeys = 100_000
	for i := 0; i < bareKeys; i += 1000 {
		pipe := rdb.Pipeline()
		for k := i; k < i+1000; k++ {
			pipe.HSet(ctx, "benchbare:"+strconv.Itoa(k), "a", strings.Repeat("x", 40), "b", strings.Repeat("y", 40), "c", strings.Repeat("z", 40), "d", strings.Repeat("w", 40),
				"e", strings.Repeat("v", 40), "f", strings.Repeat("u", 40), "g", strings.Repeat("t", 40), "h", strings.Repeat("s", 40))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	bareRate, bareLat, err := lookupLoad(clients, dur, func(rng *rand.Rand) error {
		return rdb.HGetAll(ctx, "benchbare:"+strconv.Itoa(rng.IntN(bareKeys))).Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	// And the bare HTTP part: a chi server answering the same bytes (one
	// key's answer, as braid gave it), 4 clients of the same kind.
	dir := t.TempDir()
	resp, err := client.Get(base + "/v1/entities/customer/c1")
	if err != nil {
		t.Fatal(err)
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := os.WriteFile(filepath.Join(dir, "entity"), answer, 0o644); err != nil {
		t.Fatal(err)
	}
	chiBase := startBareChi(t, dir)
	chiRate, chiLat, err := lookupLoad(clients, dur, func(*rand.Rand) error {
		resp, err := client.Get(chiBase + "/v1/views/entity?body=entity")
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	report(t, "entity_lookup_rps_vs_bare_chi", rate, "req/s", chiRate)
	report(t, "entity_lookup_p99_vs_bare_chi", pct(lat, 99), "ms", pct(chiLat, 99))
	report(t, "entity_lookup_rps", rate, "req/s", bareRate)
	report(t, "entity_lookup_p99", pct(lat, 99), "ms", pct(bareLat, 99))
	report(t, "entity_lookup_p50", pct(lat, 50), "ms", pct(bareLat, 50))
}

// TestBenchDecide: the same orders (fresh ids each pass) sent in requests
// of 100 from 4 connections, with ?decide=true (two rules, one reading the
// customer's features) and without; events/s and p99 per request.
func TestBenchDecide(t *testing.T) {
	benchOnly(t)
	base := testenv.Up(t, actingCatalog()).Base
	const customers, perReq, conns, total = 10_000, 100, 4, 200_000
	countries := []string{"DE", "FR", "US", "GB", "JP"}
	body := func(pass, i int) []byte {
		var b []byte
		now := time.Now().UTC().Format(time.RFC3339Nano)
		for k := i; k < i+perReq; k++ {
			b = fmt.Appendf(b, `{"ts":%q,"order_id":"d%d-%d","customer_id":"c%d","country":%q,"amount":%d,"items":%d}`+"\n",
				now, pass, k, k%customers, countries[k%5], 5+(k*7919)%1000, 1+k%3)
		}
		return b
	}
	// History for the features: one order per customer.
	for i := 0; i < customers; i += perReq {
		if code, b, err := postJSON(base, "/v1/streams/orders/events", "application/x-ndjson", body(0, i)); err != nil || code != 200 {
			t.Fatalf("history: %d %s %v", code, b, err)
		}
	}
	waitCaughtUp(t, base, "orders", false, 5*time.Minute, 50*time.Millisecond)
	run := func(pass int, path string) (float64, float64) {
		var next atomic.Int64
		var mu sync.Mutex
		var lat []float64
		var wg sync.WaitGroup
		start := time.Now()
		for range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []float64
				for {
					i := int(next.Add(perReq)) - perReq
					if i >= total {
						break
					}
					b := body(pass, i)
					t0 := time.Now()
					code, out, err := postJSON(base, path, "application/x-ndjson", b)
					if err != nil || code != 200 {
						t.Errorf("%s: %d %s %v", path, code, out, err)
						return
					}
					mine = append(mine, float64(time.Since(t0).Microseconds())/1000)
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return float64(total) / time.Since(start).Seconds(), pct(lat, 99)
	}
	plainRate, plainP99 := run(1, "/v1/streams/orders/events")
	decideRate, decideP99 := run(2, "/v1/streams/orders/events?decide=true")
	report(t, "ingest_decide", decideRate, "events/s", plainRate)
	report(t, "ingest_decide_p99_per_100", decideP99, "ms", plainP99)
}
