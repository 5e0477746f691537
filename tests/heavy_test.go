package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// heavyCatalog: a stream whose view has one group per key (the heavy one,
// and a hopping view of it that holds every event twice), beside a stream
// of ticks whose speed layer must keep committing while the heavy view is
// queried.
func heavyCatalog() testenv.Catalog {
	return testenv.Catalog{
		Epoch:   "1s",
		Batch:   "every: 0",
		Archive: "max_rows: 200000, max_delay: 1s",
		Speed:   "batch_size: 500, max_wait: 25ms",
		Streams: []testenv.Stream{
			{Name: "wide", Time: "ts", Fields: []string{"ts: time", "key: string", "amount: float"}},
			{Name: "ticks", Time: "ts", Fields: []string{"ts: time", "n: int"}},
		},
		Views: []testenv.View{
			{Name: "wide_by_key", Stream: "wide", Window: "1h", GroupBy: []string{"key"}, Measures: []string{"n: count()", "amount: sum(amount)"}},
			{Name: "wide_hop", Stream: "wide", Window: "2h", Hop: "1h", GroupBy: []string{"key"}, Measures: []string{"n: count()"}},
			{Name: "ticks_count", Stream: "ticks", Window: "1m", Measures: []string{"n: count()"}},
		},
	}
}

// heavyGroups is the number of groups of the heavy view
// (BRAID_HEAVY_GROUPS, default 200000).
func heavyGroups(t *testing.T) int {
	if s := os.Getenv("BRAID_HEAVY_GROUPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1000 {
			t.Fatalf("BRAID_HEAVY_GROUPS=%q: want a number of at least 1000", s)
		}
		return n
	}
	return 200_000
}

// metricsText fetches /metrics.
func metricsText(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// redisInfo reads one numeric field of INFO section.
func redisInfo(t *testing.T, rc *redis.Client, section, field string) int64 {
	t.Helper()
	s, err := rc.Info(context.Background(), section).Result()
	if err != nil {
		t.Fatalf("redis info: %v", err)
	}
	for _, line := range strings.Split(s, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	t.Fatalf("redis info %s: no %s", section, field)
	return 0
}

// liveClient is one live connection of the heavy test: it records when the
// first byte of the body and the first event's end arrived, and the events
// after it (names and sizes).
type heavyClient struct {
	start          time.Time
	firstByte      time.Duration
	snapshot       time.Duration
	snapshotBytes  int
	snapshotEvent  string
	status         int
	errBody        string
	mu             sync.Mutex
	events         []string // names of the events after the first
	eventBytes     []int
	err            error
	done           chan struct{}
	gotFirstByte   chan struct{}
	gotFirstEvent  chan struct{}
	firstEventData []byte // kept for the first client only
}

func openHeavy(ctx context.Context, url string, keep bool) *heavyClient {
	c := &heavyClient{start: time.Now(), done: make(chan struct{}), gotFirstByte: make(chan struct{}), gotFirstEvent: make(chan struct{})}
	go func() {
		defer close(c.done)
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			c.err = err
			return
		}
		defer resp.Body.Close()
		c.status = resp.StatusCode
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(resp.Body)
			c.errBody = string(b)
			return
		}
		br := bufio.NewReaderSize(resp.Body, 1<<16)
		if _, err := br.Peek(1); err != nil {
			c.err = err
			return
		}
		c.firstByte = time.Since(c.start)
		close(c.gotFirstByte)
		var ev bytes.Buffer // the first event's lines, for the client that keeps it
		name := ""
		first := true
		for {
			line, err := br.ReadSlice('\n')
			if first && keep {
				ev.Write(line)
			}
			if err == bufio.ErrBufferFull {
				c.snapshotBytesAdd(first, len(line))
				continue
			}
			if err != nil {
				c.err = err
				return
			}
			c.snapshotBytesAdd(first, len(line))
			switch {
			case bytes.HasPrefix(line, []byte("event: ")):
				name = strings.TrimSpace(string(line[7:]))
			case len(bytes.TrimSpace(line)) == 0 && name != "":
				if first {
					c.snapshot = time.Since(c.start)
					c.snapshotEvent = name
					if keep {
						for _, l := range strings.Split(ev.String(), "\n") {
							if d, ok := strings.CutPrefix(l, "data: "); ok {
								c.firstEventData = append(c.firstEventData, d...)
							}
						}
						ev = bytes.Buffer{}
					}
					first = false
					close(c.gotFirstEvent)
				} else {
					c.mu.Lock()
					c.events = append(c.events, name)
					c.mu.Unlock()
				}
				name = ""
			}
		}
	}()
	return c
}

func (c *heavyClient) snapshotBytesAdd(first bool, n int) {
	if first {
		c.snapshotBytes += n
	} else {
		c.mu.Lock()
		if len(c.eventBytes) <= len(c.events) {
			c.eventBytes = append(c.eventBytes, 0)
		}
		c.eventBytes[len(c.events)] += n
		c.mu.Unlock()
	}
}

// sampler records the peak of a value sampled every period until stopped.
type sampler struct {
	peak atomic.Int64
	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func sample(period time.Duration, f func() int64) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		for {
			if v := f(); v > s.peak.Load() {
				s.peak.Store(v)
			}
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *sampler) end() int64 {
	s.once.Do(func() { close(s.stop); <-s.done })
	return s.peak.Load()
}

// durations summarizes latencies: median and max.
func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("p50 %s max %s", s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// TestHeavyLiveQuery: one view with many groups in one window and 20 live
// clients on it, beside a stream of ticks whose speed layer commits
// throughout. Every client gets its snapshot; the 20 share one computation
// per speed position; the ticks keep being committed and the speed layer
// never loses its lease; braid's memory stays bounded; a query over the
// budget answers 422 naming the limit; and the computation of clients that
// leave stops.
func TestHeavyLiveQuery(t *testing.T) {
	if testing.Short() {
		t.Skip("heavy: not in -short")
	}
	groups := heavyGroups(t)
	// The budget: the live clients' query (one cell and one row per group)
	// fits; the hopping view over two windows reads twice as many cells.
	t.Setenv("BRAID_HTTP_QUERY_MAX_CELLS", strconv.Itoa(groups*3/2))
	t.Setenv("BRAID_HTTP_QUERY_MAX_ROWS", strconv.Itoa(groups*3/2))
	st := testenv.Up(t, heavyCatalog().YAML())
	rc := st.Redis.Client(t)
	base, p, ns := st.Base, st.Braid, st.Namespace
	pid := p.Cmd.Process.Pid

	// One event per key, all at one time: one window, `groups` groups.
	ts := time.Now().UTC().Add(-10 * time.Second)
	hour := ts.Truncate(time.Hour)
	tsText := ts.Format(time.RFC3339Nano)
	t0 := time.Now()
	const perPost = 20000
	for i := 0; i < groups; i += perPost {
		var b bytes.Buffer
		for k := i; k < min(groups, i+perPost); k++ {
			fmt.Fprintf(&b, `{"ts":%q,"key":"k%07d","amount":%d.5}`+"\n", tsText, k, k%100)
		}
		var r ingestResp
		if code := httpJSON(t, "POST", base+"/v1/streams/wide/events", "application/x-ndjson", b.Bytes(), &r); code != 200 || r.Accepted != min(groups, i+perPost)-i {
			t.Fatalf("ingest wide: %d %+v", code, r)
		}
	}
	from, to := hour.Format(time.RFC3339), hour.Add(time.Hour).Format(time.RFC3339)
	total := fmt.Sprintf("%s/v1/views/wide_by_key?from=%s&to=%s&group_by=", base, from, to)
	eventually(t, "the speed layer holds every wide event", 120*time.Second, func() string {
		var q queryResp
		if code := httpJSON(t, "GET", total, "", nil, &q); code != 200 {
			return fmt.Sprintf("status %d", code)
		}
		if len(q.Rows) != 1 || q.Rows[0]["n"] != float64(groups) {
			return fmt.Sprintf("rows %v", q.Rows)
		}
		return ""
	})
	t.Logf("%d groups ingested and committed in %s", groups, time.Since(t0).Round(time.Millisecond))

	// The ticks: one event every 50 ms; the speed position of the stream
	// is watched in Redis.
	tickCtx, stopTicks := context.WithCancel(context.Background())
	defer stopTicks()
	var ticksSent atomic.Int64
	var tickWG sync.WaitGroup
	tickWG.Add(2)
	go func() {
		defer tickWG.Done()
		for tickCtx.Err() == nil {
			body := fmt.Sprintf(`{"ts":%q,"n":1}`, time.Now().UTC().Format(time.RFC3339Nano))
			req, _ := http.NewRequestWithContext(tickCtx, "POST", base+"/v1/streams/ticks/events", strings.NewReader(body))
			if resp, err := http.DefaultClient.Do(req); err == nil {
				if resp.StatusCode == 200 {
					ticksSent.Add(1)
				}
				resp.Body.Close()
			}
			select {
			case <-tickCtx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	var posMu sync.Mutex
	var commits int
	var maxStall time.Duration
	go func() {
		defer tickWG.Done()
		last, lastAt := "", time.Now()
		for tickCtx.Err() == nil {
			seq, err := rc.HGet(context.Background(), ns+":pos:"+speedstore.Tag("ticks", 0), "seq").Result()
			posMu.Lock()
			if err == nil && seq != last {
				if last != "" {
					commits++
					maxStall = max(maxStall, time.Since(lastAt))
				}
				last, lastAt = seq, time.Now()
			} else if last != "" {
				maxStall = max(maxStall, time.Since(lastAt))
			}
			posMu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	// Let the ticks start before the heavy clients come.
	eventually(t, "ticks are committed", 30*time.Second, func() string {
		posMu.Lock()
		defer posMu.Unlock()
		if commits < 3 {
			return fmt.Sprintf("%d commits", commits)
		}
		return ""
	})

	metrics0 := metricsText(t, base)
	rss := sample(100*time.Millisecond, func() int64 { n, _ := vmRSS(pid); return n })
	heapPeak := sample(250*time.Millisecond, func() int64 {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		v, _ := metricValue(string(b), "go_memstats_heap_inuse_bytes")
		return int64(v)
	})

	t.Cleanup(func() {
		if t.Failed() {
			posMu.Lock()
			defer posMu.Unlock()
			t.Logf("memory: peak RSS %d MiB, peak Go heap in use %d MiB; ticks: %d commits seen, longest time without a commit %s",
				rss.end()>>20, heapPeak.end()>>20, commits, maxStall.Round(time.Millisecond))
		}
	})

	posMu.Lock()
	commitsBefore := commits
	posMu.Unlock()

	// 20 live clients on every group of the window.
	const nClients = 20
	liveURL := fmt.Sprintf("%s/v1/views/wide_by_key/live?from=%s&to=%s", base, from, to)
	liveCtx, closeLive := context.WithCancel(context.Background())
	defer closeLive()
	clients := make([]*heavyClient, nClients)
	for i := range clients {
		clients[i] = openHeavy(liveCtx, liveURL, i == 0)
	}
	deadline := time.After(180 * time.Second)
	got := 0
	for _, c := range clients {
		select {
		case <-c.gotFirstEvent:
			got++
		case <-c.done:
		case <-deadline:
		}
	}
	var firstBytes, snapshots []time.Duration
	for _, c := range clients {
		if c.firstByte > 0 {
			firstBytes = append(firstBytes, c.firstByte)
		}
		if c.snapshot > 0 {
			snapshots = append(snapshots, c.snapshot)
		}
	}
	t.Logf("live: %d of %d clients got their snapshot (%d bytes each); first byte %s; snapshot %s",
		got, nClients, clients[0].snapshotBytes, durations(firstBytes), durations(snapshots))

	// A change to one group: every client gets a small rows event, not
	// the window again.
	if got == nClients {
		var r ingestResp
		if code := httpJSON(t, "POST", base+"/v1/streams/wide/events", "application/x-ndjson", []byte(fmt.Sprintf(`{"ts":%q,"key":"k0000007","amount":1}`, tsText)), &r); code != 200 || r.Accepted != 1 {
			t.Fatalf("ingest wide: %d %+v", code, r)
		}
		eventually(t, "every live client got the change", 120*time.Second, func() string {
			for i, c := range clients {
				c.mu.Lock()
				n := slices.Index(c.events, "rows")
				size := 0
				if n >= 0 && n < len(c.eventBytes) {
					size = c.eventBytes[n]
				}
				c.mu.Unlock()
				if n < 0 {
					return fmt.Sprintf("client %d: events %v", i, c.events)
				}
				if size > 4096 {
					t.Fatalf("client %d: a rows event of %d bytes for one changed group", i, size)
				}
			}
			return ""
		})
	}
	metrics1 := metricsText(t, base)
	closeLive()
	for _, c := range clients {
		<-c.done
	}
	rssPeak, heapMax := rss.end(), heapPeak.end()
	posMu.Lock()
	stall, nCommits := maxStall, commits
	posMu.Unlock()
	t.Logf("memory: peak RSS %d MiB, peak Go heap in use %d MiB", rssPeak>>20, heapMax>>20)
	t.Logf("ticks: %d sent, %d commits seen (%d while the heavy view was queried), longest time without a commit %s",
		ticksSent.Load(), nCommits, nCommits-commitsBefore, stall.Round(time.Millisecond))
	comp0, _ := metricValue(metrics0, `braid_query_computations_total{result="done"}`)
	comp1, _ := metricValue(metrics1, `braid_query_computations_total{result="done"}`)
	t.Logf("computations done while the clients were connected: %v", comp1-comp0)

	if got != nClients {
		t.Fatalf("only %d of %d live clients got a snapshot within 180s", got, nClients)
	}
	var snap []map[string]any
	if err := json.Unmarshal(clients[0].firstEventData, &snap); err != nil || clients[0].snapshotEvent != "snapshot" {
		t.Fatalf("first event %q: %v", clients[0].snapshotEvent, err)
	}
	if len(snap) != groups {
		t.Fatalf("snapshot of %d rows, want %d", len(snap), groups)
	}
	out := p.Output()
	for _, bad := range []string{"writer lease lost", "speed stream failed", "i/o timeout"} {
		if strings.Contains(out, bad) {
			t.Errorf("braid logged %q while the heavy view was queried", bad)
		}
	}
	if v, ok := metricValue(metrics1, `braid_speed_lease_lost_total{stream="ticks"}`); !ok || v != 0 {
		t.Errorf("braid_speed_lease_lost_total{stream=\"ticks\"} = %v (found %v), want 0", v, ok)
	}
	// The 20 clients share one computation per speed position: a couple
	// of positions (the snapshot, the change), never one per client.
	if comp1-comp0 <= 0 || comp1-comp0 >= nClients {
		t.Errorf("%v computations for %d clients at a few positions: want them shared", comp1-comp0, nClients)
	}
	// The ticks kept being committed: every tick sent before now is in
	// the position within a bounded wait.
	stopTicks()
	tickWG.Wait()
	sent := ticksSent.Load()
	eventually(t, "every tick committed", 60*time.Second, func() string {
		var q queryResp
		tf, tt := time.Now().UTC().Add(-time.Hour).Truncate(time.Minute), time.Now().UTC().Add(time.Hour).Truncate(time.Minute)
		u := fmt.Sprintf("%s/v1/views/ticks_count?from=%s&to=%s&step=all", base, tf.Format(time.RFC3339), tt.Format(time.RFC3339))
		if code := httpJSON(t, "GET", u, "", nil, &q); code != 200 || len(q.Rows) != 1 {
			return fmt.Sprintf("status %d rows %v", code, q.Rows)
		}
		if n := q.Rows[0]["n"].(float64); int64(n) != sent {
			return fmt.Sprintf("%v ticks counted, %d sent", n, sent)
		}
		return ""
	})
	if nCommits <= commitsBefore {
		t.Errorf("no commit of the ticks stream while the heavy view was queried")
	}
	// Memory stays within the budget: the default memory_limit (384 MiB
	// of Go memory) plus the code and what the collector has not returned.
	if rssPeak > 640<<20 {
		t.Errorf("peak RSS %d MiB while 20 clients watched %d groups", rssPeak>>20, groups)
	}

	// Over the budget: the hopping view over both of its windows reads
	// twice the groups in cells. 422, naming the limit and the ways to
	// narrow the query.
	hopURL := fmt.Sprintf("%s/v1/views/wide_hop?from=%s&to=%s&group_by=", base, hour.Add(-time.Hour).Format(time.RFC3339), hour.Add(time.Hour).Format(time.RFC3339))
	var e struct {
		Error  string `json:"error"`
		Detail string `json:"detail"`
		Limit  string `json:"limit"`
	}
	tq := time.Now()
	code := httpJSON(t, "GET", hopURL, "", nil, &e)
	t.Logf("over-budget query: %d in %s: %s: %s", code, time.Since(tq).Round(time.Millisecond), e.Error, e.Detail)
	if code != http.StatusUnprocessableEntity || e.Limit != "http.query_max_cells" || !strings.Contains(e.Detail, "http.query_max_cells") || !strings.Contains(e.Detail, "from") {
		t.Fatalf("over-budget query: %d %+v, want 422 naming http.query_max_cells and a narrower range", code, e)
	}
	liveHop := strings.Replace(hopURL, "/wide_hop?", "/wide_hop/live?", 1)
	if code := httpJSON(t, "GET", liveHop, "", nil, &e); code != http.StatusUnprocessableEntity || e.Limit != "http.query_max_cells" {
		t.Fatalf("over-budget live query: %d %+v, want 422", code, e)
	}
	// Narrowed to one of the windows, it answers.
	var q queryResp
	narrow := fmt.Sprintf("%s/v1/views/wide_hop?from=%s&to=%s&group_by=", base, hour.Format(time.RFC3339), hour.Add(time.Hour).Format(time.RFC3339))
	if code := httpJSON(t, "GET", narrow, "", nil, &q); code != 200 || len(q.Rows) != 1 {
		t.Fatalf("narrowed query: %d %v", code, q.Rows)
	}

	// Clients that leave while their computation reads: 20 clients of a
	// new query shape at a new position; as soon as the read of the
	// window's cells has begun, Redis is held busy (a script) and the
	// clients leave. Once Redis answers again the computation stops: it
	// is cancelled, and Redis sends little more. (Should the read end
	// before the script starts, the clients get their snapshot: again.)
	for attempt := 1; ; attempt++ {
		seq0, _ := rc.HGet(context.Background(), ns+":pos:"+speedstore.Tag("wide", 0), "seq").Result()
		var r ingestResp
		change := fmt.Sprintf(`{"ts":%q,"key":"k%07d","amount":1}`, tsText, attempt)
		if code := httpJSON(t, "POST", base+"/v1/streams/wide/events", "application/x-ndjson", []byte(change), &r); code != 200 || r.Accepted != 1 {
			t.Fatalf("ingest wide: %d %+v", code, r)
		}
		eventually(t, "the change committed", 60*time.Second, func() string {
			if seq, _ := rc.HGet(context.Background(), ns+":pos:"+speedstore.Tag("wide", 0), "seq").Result(); seq == seq0 {
				return "position " + seq
			}
			return ""
		})
		m0 := metricsText(t, base)
		cancelled0, _ := metricValue(m0, `braid_query_computations_total{result="cancelled"}`)
		scans0 := redisCalls(t, rc, "hscan")
		leaveCtx, leave := context.WithCancel(context.Background())
		shape := fmt.Sprintf("%s/v1/views/wide_by_key/live?from=%s&to=%s&where=key:k%07d", base, from, to, attempt)
		leavers := make([]*heavyClient, nClients)
		for i := range leavers {
			leavers[i] = openHeavy(leaveCtx, shape, false)
		}
		began := false
		for wait := time.Now(); time.Since(wait) < 60*time.Second; {
			if redisCalls(t, rc, "hscan") > scans0 {
				began = true
				break
			}
			time.Sleep(time.Millisecond)
		}
		busy := make(chan error, 1)
		go func() {
			busy <- rc.Eval(context.Background(), `local t0 = redis.call('TIME'); local s = tonumber(t0[1]) * 1000000 + tonumber(t0[2])
while true do local t = redis.call('TIME'); if tonumber(t[1]) * 1000000 + tonumber(t[2]) - s > 1500000 then break end end
return 1`, nil).Err()
		}()
		time.Sleep(300 * time.Millisecond)
		leave()
		for _, c := range leavers {
			<-c.done
		}
		if err := <-busy; err != nil {
			t.Fatalf("busy script: %v", err)
		}
		out0 := redisInfo(t, rc, "stats", "total_net_output_bytes")
		lost := !began
		for _, c := range leavers {
			select {
			case <-c.gotFirstEvent:
				lost = true
			default:
			}
		}
		if lost {
			if attempt == 10 {
				t.Fatalf("in 10 attempts the computation's read never outlasted the start of a script")
			}
			t.Logf("attempt %d: the read ended before Redis was held; again", attempt)
			continue
		}
		eventually(t, "the computation stopped after the clients left", 60*time.Second, func() string {
			m := metricsText(t, base)
			running, _ := metricValue(m, "braid_query_computations_running")
			cancelled, _ := metricValue(m, `braid_query_computations_total{result="cancelled"}`)
			feeds, _ := metricValue(m, "braid_live_queries")
			if running != 0 || cancelled <= cancelled0 || feeds != 0 {
				return fmt.Sprintf("running %v, cancelled %v (before %v), live queries %v", running, cancelled, cancelled0, feeds)
			}
			return ""
		})
		sent := redisInfo(t, rc, "stats", "total_net_output_bytes") - out0
		t.Logf("after 20 clients left during the read: the computation was cancelled; Redis then sent %d KiB", sent>>10)
		// A full read of the window is at least 20 bytes per group.
		if sent > int64(groups)*20/4 {
			t.Errorf("Redis sent %d bytes after the clients left, a good part of a full read of %d groups", sent, groups)
		}
		break
	}
}

// redisCalls is the number of calls of a command Redis has served.
func redisCalls(t *testing.T, rc *redis.Client, cmd string) int64 {
	t.Helper()
	s, err := rc.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatalf("redis info: %v", err)
	}
	for _, line := range strings.Split(s, "\r\n") {
		if rest, ok := strings.CutPrefix(line, "cmdstat_"+cmd+":calls="); ok {
			n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
			return n
		}
	}
	return 0
}
