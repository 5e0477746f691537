package bench

import (
	"fmt"
	"io"
	"net/http"
	"slices"
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
// The limit is the aim: 512 MiB. braid runs with its default memory_limit;
// the log shows the Go memory against it and the archiver's writes.
func TestBenchMemory(t *testing.T) {
	benchOnly(t)
	const perReq, conns = 1000, 4
	dur := time.Duration(envInt(t, "BRAID_BENCH_MEM_SECONDS", 30)) * time.Second
	every := envDuration(t, "BRAID_BENCH_MEM_BATCH_EVERY", 10*time.Second)
	cat := benchCatalog()
	if every != 0 {
		cat.Batch = fmt.Sprintf("every: %q", every.String())
	}
	st := testenv.Up(t, cat.YAML())
	base, p := st.Base, st.Braid
	pid := p.Cmd.Process.Pid
	startRSS, _ := procStatus(pid, "VmRSS")
	startCPU := metricValue(t, base, "process_cpu_seconds_total")

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
					code, err := postOrders(base, body)
					if err != nil {
						t.Error(err)
						failed.Store(true)
						return
					}
					if code == 200 {
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
	// Where the memory is, from braid's own metrics: the Go runtime (the
	// embedded nats-server's heap included), its limit, and the archiver's
	// writes by what triggered them.
	var heap, archive []string
	if resp, err := http.Get(base + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			name, rest, ok := strings.Cut(line, " ")
			x, err := strconv.ParseFloat(rest, 64)
			if !ok || err != nil {
				continue
			}
			switch {
			case slices.Contains([]string{"go_memstats_heap_alloc_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes",
				"go_memstats_heap_released_bytes", "go_memstats_stack_inuse_bytes", "go_memstats_sys_bytes"}, name):
				heap = append(heap, fmt.Sprintf("%s=%.0fMiB", strings.TrimSuffix(strings.TrimPrefix(name, "go_memstats_"), "_bytes"), x/(1<<20)))
			case name == "go_gc_gomemlimit_bytes":
				heap = append(heap, fmt.Sprintf("limit=%.0fMiB", x/(1<<20)))
			case strings.HasPrefix(name, "braid_archive_files_total{"), strings.HasPrefix(name, "braid_archive_writes_total{"):
				archive = append(archive, fmt.Sprintf("%s=%.0f", strings.TrimPrefix(name, "braid_archive_"), x))
			}
		}
	}
	cpu := metricValue(t, base, "process_cpu_seconds_total") - startCPU
	t.Logf("braid up Go memory after the run: %s", strings.Join(heap, " "))
	t.Logf("braid up CPU: %.1f s over the run (%.2f cores), %.1f s per million events", cpu, cpu/elapsed.Seconds(), cpu/float64(accepted.Load())*1e6)
	t.Logf("braid up archiver: %s", strings.Join(archive, " "))
	t.Logf("braid up: %d events accepted in %s (%.0f events/s, %d requests pushed back); VmRSS MiB at start %.0f, over time %s, peak sampled %.0f; VmHWM %.0f MiB",
		accepted.Load(), elapsed.Round(time.Millisecond), rate, pushedBack.Load(), startRSS, strings.Join(samples, " "), peakRSS, hwm)
	// JetStream keeps every event id for nats.dedup_window (2 min by
	// default, as here; about 110 bytes each): its share grows for the
	// whole window, then stays.
	if window := 2 * time.Minute; elapsed < window {
		t.Logf("the run covered %.0f%% of the %s dedup window, whose id state grows until the window is full (BRAID_BENCH_MEM_SECONDS=%d for the steady state)",
			100*elapsed.Seconds()/window.Seconds(), window, int(window.Seconds())+30)
	}
	report(t, "up_ingest_sustained", rate, "events/s", 0)
	report(t, "up_peak_rss_under_ingest", hwm, "MiB", memLimitMiB)
}

// metricValue reads one unlabelled metric of braid's /metrics (0 when absent).
func metricValue(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			x, _ := strconv.ParseFloat(rest, 64)
			return x
		}
	}
	return 0
}
