package bench

// Helpers of the query, batch, memory and speed-views benchmarks:
// sizes from the environment, a fast lake generator (Parquet written with
// storage/lake's own writer, committed by its checkpoint, exactly what the
// archiver leaves behind), a loopback HTTP load generator and percentiles.
//
// Sizes (all optional; defaults in brackets):
//
//	BRAID_BENCH_EVENTS               batch-lake sizes, comma-separated [10000000; 1M,10M,30M with BRAID_BENCH_BIG=1]
//	BRAID_BENCH_BATCH_SPAN           event-time span of the batch lake [24h]
//	BRAID_BENCH_QUERY_DAYS           days of 1-minute windows in the queried view [7]
//	BRAID_BENCH_QUERY_GROUPS         groups (countries) per window [50]
//	BRAID_BENCH_QUERY_PER_CELL       lake events per (window, group) [2]
//	BRAID_BENCH_QUERY_SPEED          events after the batch cutoff, in the speed layer [30000]
//	BRAID_BENCH_QUERY_CLIENTS        concurrent loopback clients [4]
//	BRAID_BENCH_QUERY_SECONDS        seconds of load on the 24 h query (per server) [5]
//	BRAID_BENCH_MEM_SECONDS          seconds of sustained ingest into braid up [30]
//	BRAID_BENCH_MEM_BATCH_EVERY      batch.every of braid up meanwhile [10s; 0 = no runs]
//	BRAID_BENCH_SPEED_EVENTS         live records (event times in the last 5 min) per speed-layer run [200000]
//	BRAID_BENCH_SPEED_SPREAD_EVENTS  records with event times over 24 h per speed-layer run [50000]
//	BRAID_BENCH_SPEED_VIEWS          view counts of the speed curve [1,5,20]
//	BRAID_BENCH_S3_EVENTS            events of the lake on versitygw vs local files [10000000]
//	BRAID_BENCH_S3_DAYS              days that lake spans (a work unit a day) [7]
//	BRAID_BENCH_S3_REPS              runs of each side, alternating (the fastest counts) [2]
//	BRAID_BENCH_INCR_EVENTS          events of the incremental bench's history [30000000]
//	BRAID_BENCH_INCR_DAYS            days of that history [30]
//	BRAID_BENCH_WORKERS_EVENTS       events of the one vs two workers bench [8000000]
//	BRAID_BENCH_WORKERS_DAYS         days it spans (a work unit a day) [8]
//	BRAID_BENCH_WORKERS_REPS         runs of each worker count, alternating (the fastest counts) [3]
//	BRAID_BENCH_SPEED_SCALE_EVENTS   events in the 4-partition log folded by one speed process, then by two [4000000]
//	BRAID_BENCH_ARCHIVE_SCALE_EVENTS events in the 4-partition log archived by one process, then by two [2000000]
//	BRAID_BENCH_SCALE_REPS           runs of one and of two processes, alternating (the fastest of each counts) [2]
//	BRAID_BENCH_FAILOVER_TRIALS      kills of each kind (speed process, NATS stream leader, Redis master) [5]
//	BRAID_BENCH_CLUSTER_EVENTS       events folded against a Redis Cluster vs one redis-server [300000]
//	BRAID_BENCH_CLUSTER_REPS         folds and query loads of each side, alternating (the best counts) [2]
//	BRAID_BENCH_CLUSTER_SECONDS      seconds of each query load [4]

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
)

func envInt(t testing.TB, name string, def int) int {
	s := strings.TrimSpace(os.Getenv(name))
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(s, "_", ""))
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}

func envInts(t testing.TB, name string, def []int) []int {
	s := strings.TrimSpace(os.Getenv(name))
	if s == "" {
		return def
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.ReplaceAll(strings.TrimSpace(f), "_", ""))
		if err != nil || n <= 0 {
			t.Fatalf("%s=%q: want positive integers, comma-separated", name, s)
		}
		out = append(out, n)
	}
	return out
}

func envDuration(t testing.TB, name string, def time.Duration) time.Duration {
	s := strings.TrimSpace(os.Getenv(name))
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		t.Fatalf("%s=%q: want a duration", name, s)
	}
	return d
}

// sizeLabel renders an event count for a bench name: 300k, 1M, 10M, 2.5M.
func sizeLabel(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1_000_000:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// mix is a cheap deterministic hash of i (splitmix64's finalizer), the
// generators' source of "random" values.
func mix(i uint64) uint64 {
	i += 0x9E3779B97F4A7C15
	i = (i ^ (i >> 30)) * 0xBF58476D1CE4E5B9
	i = (i ^ (i >> 27)) * 0x94D049BB133111EB
	return i ^ (i >> 31)
}

// orderFields are the value indices of the benchmarks' orders stream
// (ts, order_id, country, amount, items).
type orderFields struct {
	ts, id, country, amount, items int
	n                              int
}

func fieldsOf(t testing.TB, s *logic.Stream) orderFields {
	f := orderFields{ts: s.FieldIndex("ts"), id: s.FieldIndex("order_id"), country: s.FieldIndex("country"),
		amount: s.FieldIndex("amount"), items: s.FieldIndex("items"), n: len(s.Fields)}
	if f.ts < 0 || f.id < 0 || f.country < 0 || f.amount < 0 || f.items < 0 {
		t.Fatalf("stream %s lacks a field of ts, order_id, country, amount, items", s.Name)
	}
	return f
}

// set fills an order event: event time ts, id "o<i>", country, amount and
// items from i's hash.
func (f orderFields) set(r *lake.Row, i int, ts int64, country string) {
	h := mix(uint64(i))
	r.Event.Time = ts
	r.Event.ID = "o" + strconv.Itoa(i)
	v := r.Event.Values
	for k := range v {
		v[k] = logic.Value{}
	}
	v[f.ts] = logic.Value{Kind: logic.TypeTime, I: ts}
	v[f.id] = logic.Value{Kind: logic.TypeString, S: r.Event.ID}
	v[f.country] = logic.Value{Kind: logic.TypeString, S: country}
	v[f.amount] = logic.Value{Kind: logic.TypeFloat, F: float64(h%100000) / 100}
	v[f.items] = logic.Value{Kind: logic.TypeInt, I: int64(h>>32) % 9}
}

// lakeChunk is the rows per Write: the archiver's default archive.max_rows,
// so the files are shaped like the ones it writes.
const lakeChunk = 200_000

// writeLake writes rows [from, to) of a generated stream into the lake with
// the lake's own writer, in chunks of lakeChunk rows (log sequences i+1),
// on every core. gen fills row i's Arrival and Event (its Values come
// allocated, len(s.Fields)). It returns the largest arrival written; the
// caller commits the checkpoint.
func writeLake(t testing.TB, lk *lake.Lake, s *logic.Stream, from, to int, gen func(i int, r *lake.Row)) int64 {
	t.Helper()
	var next atomic.Int64
	next.Store(int64(from))
	var maxArr atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	workers := runtime.GOMAXPROCS(0)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rows := make([]lake.Row, lakeChunk)
			for j := range rows {
				rows[j].Event.Values = make([]logic.Value, len(s.Fields))
			}
			for {
				lo := int(next.Add(lakeChunk)) - lakeChunk
				if lo >= to {
					return
				}
				rs := rows[:min(lo+lakeChunk, to)-lo]
				var m int64
				for j := range rs {
					gen(lo+j, &rs[j])
					rs[j].Seq = uint64(lo + j + 1)
					m = max(m, rs[j].Arrival)
				}
				if _, err := lk.Write(s, rs); err != nil {
					select {
					case errc <- err:
					default:
					}
					return
				}
				for {
					cur := maxArr.Load()
					if m <= cur || maxArr.CompareAndSwap(cur, m) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errc:
		t.Fatal(err)
	default:
	}
	return maxArr.Load()
}

// commitLake commits a stream's checkpoint at seq with every record that
// arrived up to maxArrival covered: the batch cutoff (an epoch start) then
// lies after every row.
func commitLake(t testing.TB, lk *lake.Lake, stream string, seq uint64, maxArrival int64, epoch time.Duration) int64 {
	t.Helper()
	covered := logic.EpochOf(maxArrival, epoch) + epoch.Milliseconds()
	if err := lk.Commit(stream, lake.Checkpoint{Seq: seq, Arrival: maxArrival, CoveredUntil: covered}); err != nil {
		t.Fatal(err)
	}
	return covered
}

// percentile of sorted values (nearest rank).
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// load is the outcome of a load run.
type load struct {
	n       int
	elapsed time.Duration
	lat     []float64 // ms, sorted
	bytes   int64     // body bytes of the last answer
}

func (l load) rps() float64 { return float64(l.n) / l.elapsed.Seconds() }
func (l load) p(q float64) float64 {
	return percentile(l.lat, q)
}

// hammer runs `clients` loopback clients, each a keep-alive connection
// sending GET url(i) back to back and reading every body to the end, until
// d has passed and at least minReqs answers came (at most 3 minutes). Any
// answer but 200 fails the test.
func hammer(t testing.TB, url func(i int) string, clients int, d time.Duration, minReqs int) load {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Minute}
	var next, done atomic.Int64
	var failed atomic.Bool
	lats := make([][]float64, clients)
	var lastBytes atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				el := time.Since(start)
				if (el >= d && done.Load() >= int64(minReqs)) || el > 3*time.Minute {
					return
				}
				i := int(next.Add(1)) - 1
				t0 := time.Now()
				resp, err := hc.Get(url(i))
				if err != nil {
					t.Errorf("GET: %v", err)
					failed.Store(true)
					return
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat := time.Since(t0)
				if err != nil || resp.StatusCode != 200 {
					t.Errorf("GET %s: status %d, read err %v", url(i), resp.StatusCode, err)
					failed.Store(true)
					return
				}
				lats[c] = append(lats[c], float64(lat.Microseconds())/1000)
				lastBytes.Store(n)
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	out := load{elapsed: time.Since(start), bytes: lastBytes.Load()}
	if failed.Load() {
		t.FailNow()
	}
	for _, l := range lats {
		out.lat = append(out.lat, l...)
	}
	sort.Float64s(out.lat)
	out.n = len(out.lat)
	return out
}

// getBody fetches url and fails the test unless it answers 200.
func getBody(t testing.TB, url string) []byte {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return b
}

// procStatus reads a kB figure (VmHWM, VmRSS) from /proc/<pid>/status, in MiB.
func procStatus(pid int, key string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key+":"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %q: %w", key, line, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("%s not in /proc/%d/status", key, pid)
}
