package bench

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// memLimitMiB is the aim for braid up's resident memory.
const memLimitMiB = 512

// appendOrderLine appends one NDJSON order like orderLine's (unique id,
// event time in the last 10 minutes), without reflection: the generator
// must not take the CPU the server needs.
func appendOrderLine(b []byte, i int, now time.Time) []byte {
	h := mix(uint64(i) ^ 0x77)
	countries := [...]string{"DE", "FR", "US", "GB", "JP"}
	b = append(b, `{"ts":"`...)
	b = now.Add(-time.Duration(h%600_000)*time.Millisecond).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","order_id":"m-`...)
	b = strconv.AppendInt(b, int64(i), 10)
	b = append(b, `","country":"`...)
	b = append(b, countries[(h>>20)%5]...)
	b = append(b, `","amount":`...)
	b = strconv.AppendInt(b, int64((h>>24)%200), 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(10+(h>>32)%90), 10)
	b = append(b, `,"items":`...)
	b = strconv.AppendInt(b, int64(1+(h>>40)%4), 10)
	b = append(b, `,"email":"b`...)
	b = strconv.AppendInt(b, int64((h>>44)%1000), 10)
	b = append(b, `@example.com"}`...)
	return b
}

// TestBenchMemory: the peak resident memory (VmHWM) of `braid up` (the
// binary; embedded NATS, its own speed layer, archiver, batch scheduler and
// API) while it sustains the HTTP ingest of TestBenchIngestAndFreshness (NDJSON,
// 1000 events a request, 4 connections, as fast as it answers) for
// BRAID_BENCH_MEM_SECONDS, with a batch run every BRAID_BENCH_MEM_BATCH_EVERY.
// The limit is the aim: 512 MiB.
func TestBenchMemory(t *testing.T) {
	benchOnly(t)
	const perReq, conns = 1000, 4
	dur := time.Duration(envInt(t, "BRAID_BENCH_MEM_SECONDS", 30)) * time.Second
	every := envDuration(t, "BRAID_BENCH_MEM_BATCH_EVERY", 10*time.Second)
	cfgBody := strings.Replace(benchConfig, "batch: { every: 0 }", fmt.Sprintf("batch: { every: %q }", every.String()), 1)
	if every == 0 {
		cfgBody = benchConfig
	}
	redis := testenv.StartRedis(t)
	cfg, base, _ := testenv.WriteConfig(t, "", redis.URL, cfgBody)
	p := testenv.StartBraid(t, base, "up", "--config", cfg)
	pid := p.Cmd.Process.Pid
	startRSS, _ := procStatus(pid, "VmRSS")

	var next, accepted, pushedBack atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Bool
	start := time.Now()
	for c := 0; c < conns; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var body []byte
			for time.Since(start) < dur && !failed.Load() {
				first := int(next.Add(perReq)) - perReq
				now := time.Now()
				body = body[:0]
				for i := first; i < first+perReq; i++ {
					body = appendOrderLine(body, i, now)
					body = append(body, '\n')
				}
				for time.Since(start) < dur+30*time.Second {
					resp, err := http.Post(base+"/v1/streams/orders/events", "application/x-ndjson", bytes.NewReader(body))
					if err != nil {
						t.Error(err)
						failed.Store(true)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 {
						accepted.Add(perReq)
						break
					}
					pushedBack.Add(1)
					time.Sleep(50 * time.Millisecond) // pushed back: retry the same ids
				}
			}
		}()
	}
	// Sample the resident size meanwhile, for the log.
	var samples []string
	peakRSS := startRSS
	tick := time.NewTicker(250 * time.Millisecond)
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	last := time.Now()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-tick.C:
			rss, err := procStatus(pid, "VmRSS")
			if err != nil {
				t.Fatalf("braid up: %v\n%s", err, p.Output())
			}
			peakRSS = max(peakRSS, rss)
			if time.Since(last) >= 5*time.Second {
				last = time.Now()
				samples = append(samples, fmt.Sprintf("%ds:%.0f", int(time.Since(start).Seconds()), rss))
			}
		}
	}
	tick.Stop()
	elapsed := time.Since(start)
	if failed.Load() {
		t.FailNow()
	}
	hwm, err := procStatus(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	rate := float64(accepted.Load()) / elapsed.Seconds()
	// Where the memory is, from braid's own Go runtime metrics.
	var heap []string
	if resp, err := http.Get(base + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			for _, m := range []string{"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes"} {
				if rest, ok := strings.CutPrefix(line, m+" "); ok {
					if x, err := strconv.ParseFloat(rest, 64); err == nil {
						heap = append(heap, fmt.Sprintf("%s=%.0fMiB", strings.TrimSuffix(strings.TrimPrefix(m, "go_memstats_"), "_bytes"), x/(1<<20)))
					}
				}
			}
		}
	}
	t.Logf("braid up Go memory after the run: %s", strings.Join(heap, " "))
	t.Logf("braid up: %d events accepted in %s (%.0f events/s, %d requests pushed back); VmRSS MiB at start %.0f, over time %s, peak sampled %.0f; VmHWM %.0f MiB",
		accepted.Load(), elapsed.Round(time.Millisecond), rate, pushedBack.Load(), startRSS, strings.Join(samples, " "), peakRSS, hwm)
	report(t, "up_ingest_sustained", rate, "events/s", 0)
	report(t, "up_peak_rss_under_ingest", hwm, "MiB", memLimitMiB)
}
