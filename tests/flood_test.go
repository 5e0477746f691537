package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// The speed layer is throttled (micro-batches of one log record, that is
// one request's events) so that it falls behind
// the producers; http.max_in_flight is lowered (environment override) so
// that ingest pushes back with 429.
func floodCatalog() testenv.Catalog {
	clicks := testenv.Clicks()
	clicks.Lateness = "3h"
	byPage := testenv.ClicksByPage()
	byPage.Measures = append(byPage.Measures, "ms: sum(ms)")
	return testenv.Catalog{
		Epoch:   "1s",
		Batch:   "every: 0",
		Archive: "max_rows: 20000, max_delay: 500ms",
		Speed:   "batch_size: 1, max_wait: 50ms",
		Streams: []testenv.Stream{clicks},
		Views:   []testenv.View{byPage},
	}
}

// vmRSS reads a process's resident set size in bytes from /proc.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// metricValue finds one sample of a metric in Prometheus text format.
func metricValue(text, series string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		if rest, ok := strings.CutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// TestFlood: 8 producers at full speed for about 3 s against a throttled
// speed layer that starts 2.5 s late. Pushed-back requests are retried with the same ids. When
// the speed layer has caught up, the merged view counts every accepted
// event exactly once; consumer lag was visible in /v1/status and /metrics;
// the process's memory stayed bounded.
func TestFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test: not in -short")
	}
	t.Setenv("BRAID_HTTP_MAX_IN_FLIGHT", "4")
	st := testenv.NewStack(t, floodCatalog().YAML(), testenv.WithNATS()) // the test reads the log afterwards
	_, js := st.NATS.JetStream(t)
	base, ns := st.Base, st.Namespace
	// The speed layer starts behind, as when a standby takes over: another
	// owner's writer lease holds it back for the first 2.5 s of the flood.
	if err := st.Redis.Client(t).Set(context.Background(), ns+":lease:"+speedstore.Tag("clicks", 0)+":speed", "flood-test-previous-owner", 2500*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	p := st.Start("up")
	pid := p.Cmd.Process.Pid
	const view = "clicks_by_page"
	client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16, MaxConnsPerHost: 16}}

	// Sampler: RSS, /v1/status lag and braid_speed_consumer_lag every 100 ms.
	var (
		rssStart, rssPeak         atomic.Int64
		statusLagPeak, metricPeak atomic.Int64
		serverPeak                atomic.Int64 // JetStream's own count of undelivered records (braid_consumer_pending)
		samples                   atomic.Int64
	)
	rss0, err := vmRSS(pid)
	if err != nil {
		t.Fatal(err)
	}
	rssStart.Store(rss0)
	rssPeak.Store(rss0)
	stop := make(chan struct{})
	var samplerDone sync.WaitGroup
	samplerDone.Add(1)
	go func() {
		defer samplerDone.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			samples.Add(1)
			if rss, err := vmRSS(pid); err == nil && rss > rssPeak.Load() {
				rssPeak.Store(rss)
			}
			if resp, err := client.Get(base + "/v1/status"); err == nil {
				var s lateStatus
				if json.NewDecoder(resp.Body).Decode(&s) == nil {
					if l := s.Streams["clicks"].Speed.Lag; l != nil && int64(*l) > statusLagPeak.Load() {
						statusLagPeak.Store(int64(*l))
					}
				}
				resp.Body.Close()
			}
			if resp, err := client.Get(base + "/metrics"); err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if v, ok := metricValue(string(b), `braid_speed_consumer_lag{partition="0",stream="clicks"}`); ok && int64(v) > metricPeak.Load() {
					metricPeak.Store(int64(v))
				}
				if v, ok := metricValue(string(b), `braid_consumer_pending{consumer="speed",partition="0",stream="clicks"}`); ok && int64(v) > serverPeak.Load() {
					serverPeak.Store(int64(v))
				}
			}
		}
	}()

	// The flood: 8 producers, batches of 100 events, for about 3 s.
	const producers, batch, maxRequests, maxRetries = 8, 100, 5000, 2000
	pages := []string{"home", "search", "cart", "checkout", "help"}
	now := time.Now().UTC()
	var (
		mu        sync.Mutex
		want      = map[string]int64{} // page -> accepted events
		accepted  int64
		pushed    int64
		failed    []string
		wg        sync.WaitGroup
		floodFrom = time.Now()
	)
	deadline := floodFrom.Add(3 * time.Second)
	for g := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for i := 0; i < maxRequests && time.Now().Before(deadline); i++ {
				var body bytes.Buffer
				counts := map[string]int64{}
				for k := range batch {
					page := pages[rng.IntN(len(pages))]
					counts[page]++
					ts := now.Add(-time.Duration(rng.Int64N(int64(30 * time.Minute))))
					fmt.Fprintf(&body, `{"id":"g%d-%d-%d","ts":%q,"page":%q,"ms":1}`+"\n", g, i, k, ts.Format(time.RFC3339Nano), page)
				}
				ok := false
				for try := 0; try < maxRetries && !ok; try++ {
					resp, err := client.Post(base+"/v1/streams/clicks/events", "application/x-ndjson", bytes.NewReader(body.Bytes()))
					if err != nil {
						time.Sleep(20 * time.Millisecond)
						continue
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch resp.StatusCode {
					case 200:
						var r ingestResp
						if json.Unmarshal(b, &r) != nil || r.Accepted != batch {
							mu.Lock()
							failed = append(failed, fmt.Sprintf("g%d-%d: 200 %s", g, i, b))
							mu.Unlock()
						}
						ok = true
					case 429, 503:
						if resp.Header.Get("Retry-After") == "" {
							mu.Lock()
							failed = append(failed, fmt.Sprintf("g%d-%d: %d without Retry-After", g, i, resp.StatusCode))
							mu.Unlock()
						}
						atomic.AddInt64(&pushed, 1)
						time.Sleep(time.Duration(5+rng.IntN(20)) * time.Millisecond)
					default:
						mu.Lock()
						failed = append(failed, fmt.Sprintf("g%d-%d: %d %s", g, i, resp.StatusCode, b))
						mu.Unlock()
						return
					}
				}
				mu.Lock()
				if ok {
					accepted += batch
					for p, n := range counts {
						want[p] += n
					}
				} else {
					failed = append(failed, fmt.Sprintf("g%d-%d: no 200 after %d tries", g, i, maxRetries))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	floodTook := time.Since(floodFrom)
	if len(failed) > 0 {
		t.Fatalf("%d producer failures, first: %s", len(failed), failed[0])
	}
	if accepted == 0 {
		t.Fatal("nothing accepted")
	}

	// Wait for the speed layer to catch up.
	var caughtUp lateStatus
	eventually(t, "speed layer catches up", 10*time.Minute, func() string {
		caughtUp = lateStatus{}
		if code := httpJSON(t, "GET", base+"/v1/status", "", nil, &caughtUp); code != 200 {
			return fmt.Sprintf("status %d", code)
		}
		s := caughtUp.Streams["clicks"]
		if s.Speed.Lag == nil || *s.Speed.Lag != 0 || s.Speed.Seq != s.Log.LastSeq || s.Log.LastSeq == 0 {
			lag := "null"
			if s.Speed.Lag != nil {
				lag = fmt.Sprint(*s.Speed.Lag)
			}
			return fmt.Sprintf("speed seq %d lag %s, log last_seq %d", s.Speed.Seq, lag, s.Log.LastSeq)
		}
		return ""
	})
	close(stop)
	samplerDone.Wait()

	// Nothing lost, nothing doubled: the log and the merged view hold each
	// accepted id once.
	s := caughtUp.Streams["clicks"]
	rows := viewRows(t, base, view, now.Add(-40*time.Minute).Truncate(time.Minute), now.Add(2*time.Minute), "&step=all")
	got := map[string]int64{}
	var counted int64
	for _, r := range rows {
		n, _ := r["clicks"].(float64)
		got[fmt.Sprint(r["page"])] += int64(n)
		counted += int64(n)
	}
	lost, doubled := max(accepted-counted, 0), max(counted-accepted, 0)
	t.Logf("flood: %d producers for %s: events accepted %d (distinct ids), pushed back (429/503) %d requests; log last_seq %d",
		producers, floodTook.Round(time.Millisecond), accepted, pushed, s.Log.LastSeq)
	t.Logf("flood: peak lag %d in /v1/status, %d in braid_speed_consumer_lag (%d samples); RSS %.1f MiB -> peak %.1f MiB",
		statusLagPeak.Load(), metricPeak.Load(), samples.Load(), float64(rssStart.Load())/(1<<20), float64(rssPeak.Load())/(1<<20))
	t.Logf("flood: merged count %d: lost=%d doubled=%d", counted, lost, doubled)
	logIDs := map[string]int{}
	for _, rec := range testenv.StoredEvents(t, js, ns+"_events_clicks") {
		var c struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(rec, &c); err != nil {
			t.Fatal(err)
		}
		logIDs[c.ID]++
	}
	doubledInLog := 0
	for _, n := range logIDs {
		doubledInLog += n - 1
	}
	if len(logIDs) != int(accepted) || doubledInLog != 0 || s.Accepted != uint64(accepted) {
		t.Errorf("log holds %d ids (%d stored twice), ingest accepted %d; want %d (each accepted id stored once)", len(logIDs), doubledInLog, s.Accepted, accepted)
	}
	for _, p := range pages {
		if got[p] != want[p] {
			t.Errorf("page %s: merged count %d, want %d", p, got[p], want[p])
		}
	}
	if lost != 0 || doubled != 0 {
		t.Errorf("lost=%d doubled=%d", lost, doubled)
	}
	if statusLagPeak.Load() == 0 || metricPeak.Load() == 0 || serverPeak.Load() == 0 {
		t.Errorf("consumer lag never reported: /v1/status peak %d, /metrics peak %d, braid_consumer_pending peak %d", statusLagPeak.Load(), metricPeak.Load(), serverPeak.Load())
	}
	if peak := rssPeak.Load(); peak > 1<<30 {
		t.Errorf("peak RSS %.1f MiB is over the 1 GiB sanity bound", float64(peak)/(1<<20))
	}
}

// TestFloodFullLog: nats.max_msgs (here from the environment) reaches the
// real binary's log: beyond that many log records ingest answers 429 with Retry-After, and the
// events acknowledged with 200 are exactly the stored ones.
func TestFloodFullLog(t *testing.T) {
	t.Setenv("BRAID_NATS_MAX_MSGS", "5") // log records: one per request here
	base := testenv.Up(t, floodCatalog().YAML()).Base
	ts := time.Now().UTC().Format(time.RFC3339)
	var accepted, full int
	for i := range 8 {
		var body bytes.Buffer
		for k := range 10 {
			fmt.Fprintf(&body, `{"id":"f%d-%d","ts":%q,"page":"home","ms":1}`+"\n", i, k, ts)
		}
		resp, err := http.Post(base+"/v1/streams/clicks/events", "application/x-ndjson", &body)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch resp.StatusCode {
		case 200:
			var r ingestResp
			if json.Unmarshal(b, &r) != nil || r.Accepted != 10 {
				t.Fatalf("200 answer %s", b)
			}
			accepted += r.Accepted
		case 429:
			if resp.Header.Get("Retry-After") == "" {
				t.Fatalf("429 without Retry-After: %s", b)
			}
			full++
		default:
			t.Fatalf("status %d %s", resp.StatusCode, b)
		}
	}
	var s lateStatus
	if code := httpJSON(t, "GET", base+"/v1/status", "", nil, &s); code != 200 {
		t.Fatalf("status %d", code)
	}
	st := s.Streams["clicks"]
	if accepted != 50 || full != 3 || st.Log.LastSeq != 5 || st.Accepted != 50 {
		t.Fatalf("max_msgs 5: accepted %d in 200 answers, %d answers 429, log last_seq %d, status accepted %d", accepted, full, st.Log.LastSeq, st.Accepted)
	}
	t.Logf("max_msgs 5: 50 events accepted (200) in 5 log records, 3 requests pushed back (429)")
}
