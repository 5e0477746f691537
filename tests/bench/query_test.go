package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/speed"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// The merged-query benchmark: `braid serve` answering a 1-minute view
// with 50 groups over 24 h (72k rows: batch view ⊕ speed cells), hammered
// by concurrent loopback clients, next to a bare chi handler answering the
// same bytes, each in a process of its own; then the latency at 1 h / 24 h
// / 7 d ranges, each next to the bare handler answering a body of the same
// size.

func queryCatalog() testenv.Catalog {
	orders := testenv.Orders().Without("email")
	orders.Lateness = "2h"
	q1m := testenv.OrdersByCountry().Without("items")
	q1m.Name = "q1m"
	// The test writes the lake itself: the archiver of the stack must not
	// compact it meanwhile (a stream has one writer).
	return testenv.Catalog{Epoch: "10s", Batch: "every: 0", Archive: "compact: false", Streams: []testenv.Stream{orders}, Views: []testenv.View{q1m}}
}

// bareChiEnv makes the test binary a bare chi server (see TestMain): it
// answers GET /v1/views/{view}?body=NAME with the bytes of file NAME in the
// directory the variable names, and prints "addr HOST:PORT" when listening.
const bareChiEnv = "BRAID_BENCH_BARE_CHI_DIR"

// serveBareChi is the bare chi server; it never returns.
func serveBareChi(dir string) {
	bodies := map[string][]byte{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		bodies[e.Name()] = b
	}
	r := chi.NewRouter()
	r.Get("/v1/views/{view}", func(w http.ResponseWriter, r *http.Request) {
		b, ok := bodies[r.URL.Query().Get("body")]
		if !ok {
			http.Error(w, "no such body", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(b)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Printf("addr %s\n", l.Addr())
	err = http.Serve(l, r)
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

// startBareChi runs this test binary as the bare chi server over the
// bodies in dir; it is killed at the end of the test.
func startBareChi(t *testing.T, dir string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), bareChiEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "addr ")
	if err != nil || !ok {
		t.Fatalf("bare chi server: %q %v", line, err)
	}
	return "http://" + addr
}

func TestBenchQuery(t *testing.T) {
	benchOnly(t)
	days := envInt(t, "BRAID_BENCH_QUERY_DAYS", 7)
	groups := envInt(t, "BRAID_BENCH_QUERY_GROUPS", 50)
	perCell := envInt(t, "BRAID_BENCH_QUERY_PER_CELL", 2)
	nSpeed := envInt(t, "BRAID_BENCH_QUERY_SPEED", 30_000)
	clients := envInt(t, "BRAID_BENCH_QUERY_CLIENTS", 4)
	secs := time.Duration(envInt(t, "BRAID_BENCH_QUERY_SECONDS", 5)) * time.Second
	ctx := context.Background()

	st := testenv.NewStack(t, queryCatalog().YAML(), testenv.WithNATS())
	base := st.Base
	cfg, err := config.Load(st.Config)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k")) // no PII fields: the key changes nothing
	if err != nil {
		t.Fatal(err)
	}
	s, v := cat.Streams["orders"], cat.Views["q1m"]
	f := fieldsOf(t, s)
	epoch := cfg.Epoch.D()
	countries := make([]string, groups)
	for i := range countries {
		countries[i] = fmt.Sprintf("c%03d", i)
	}

	// 1. The lake, written directly: perCell events in every (minute,
	// country) cell from `days` ago up to 30 minutes ago, arrived 20
	// minutes ago; then a batch run (the batch view: days × 1440 × groups).
	end := time.Now().UTC().Truncate(time.Minute).UnixMilli()
	first := end - int64(days)*24*3600*1000
	minutes := days*1440 - 30
	nLake := minutes * groups * perCell
	arrival := end - 20*60*1000
	t0 := time.Now()
	lk, err := lake.OpenDir(filepath.Join(cfg.DataDir, "lake"))
	if err != nil {
		t.Fatal(err)
	}
	maxArr := writeLake(t, lk, s, 0, nLake, func(i int, r *lake.Row) {
		c := i / perCell
		ts := first + int64(c/groups)*60_000 + int64(mix(uint64(i))%60_000)
		f.set(r, i, ts, countries[c%groups])
		r.Arrival = arrival
	})
	commitLake(t, lk, s.Name, uint64(nLake), maxArr, epoch)
	genLake := time.Since(t0)
	views, err := batchviews.OpenDir(filepath.Join(cfg.DataDir, "batch"), batchviews.WithKeepVersions(cfg.Batch.KeepVersions))
	if err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	run, err := batch.NewRunner(batch.RunnerConfig{Epoch: epoch}, lk, views, nil, cat, testenv.Logger(t), nil).Run(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if run.RowsRead != int64(nLake) {
		t.Fatalf("batch run read %d rows, want %d", run.RowsRead, nLake)
	}
	t.Logf("lake: %d events written in %s; batch run %s: %d cells", nLake, genLake.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), run.RowsOut)

	// 2. The speed layer: nSpeed events in the last hour, arriving now
	// (after the batch cutoff), folded into Redis by the real speed layer.
	_, js := st.NATS.JetStream(t)
	log, err := eventlog.Open(ctx, js, cat.StreamOrder, eventlog.Options{Namespace: cfg.Namespace, Replicas: cfg.NATS.Replicas,
		DedupWindow: cfg.NATS.DedupWindow.D(), MaxAge: cfg.NATS.MaxAge.D(), MaxMsgs: cfg.NATS.MaxMsgs, MaxBytes: cfg.NATS.MaxBytes,
		DLQMaxAge: cfg.DLQ.MaxAge.D(), DLQMaxRecords: cfg.DLQ.MaxRecords, LateMaxMsgs: cfg.DLQ.MaxLate, PublishTimeout: cfg.NATS.PublishTimeout.D()})
	if err != nil {
		t.Fatal(err)
	}
	// publish sends events i in [from, to) of the speed sequence: event
	// times in the last hour of the lake's range, arriving now.
	publish := func(from, to int) {
		recs := make([]eventlog.Record, 0, 1000)
		now := time.Now().UnixMilli()
		for i := from; i < to; i++ {
			h := mix(uint64(i) ^ 0xabcdef)
			raw := fmt.Sprintf(`{"ts":%d,"order_id":"s%d","country":%q,"amount":%d.%02d,"items":%d}`,
				end-3600_000+int64(h%3600_000), i, countries[(h>>24)%uint64(groups)], (h>>32)%1000, (h>>8)%100, (h>>40)%9)
			ev, rec, err := s.Prepare([]byte(raw), now)
			if err != nil {
				t.Error(err)
				return
			}
			recs = append(recs, eventlog.Record{ID: ev.ID, Data: rec})
			if len(recs) == cap(recs) || i == to-1 {
				if err := log.Publish(ctx, s.Name, recs); err != nil {
					t.Error(err)
					return
				}
				recs = recs[:0]
			}
		}
	}
	publish(0, nSpeed)
	logInfo, err := log.Info(ctx, s.Name, 0)
	if err != nil {
		t.Fatal(err)
	}
	store := speedstore.New(st.Redis.Client(t), st.Namespace)
	sp := speed.New(speed.Config{BatchSize: cfg.Speed.BatchSize, MaxWait: cfg.Speed.MaxWait.D(), Epoch: epoch, MaxCells: cfg.Speed.MaxCells},
		log, store, batchviews.CutoffSource{Store: views, Catalog: cat}, nil, cat, nil, nil)
	runUntil(t, sp.Run, func() bool { p, _, _ := store.Position(ctx, s.Name, 0); return p.Seq >= logInfo.LastSeq })

	// 3. braid serve, its own process, over that state.
	serve := st.Start("serve")
	viewURL := base + "/v1/views/" + v.Name
	rangeURL := func(from int64, i int) string {
		// A different `to` (minutes past the data: the same rows) for each
		// of 1000 requests in turn, so the 512-answer cache never answers:
		// with ingest going on every speed commit changes its key anyway.
		return fmt.Sprintf("%s?from=%s&to=%s", viewURL, logic.FormatTime(from), logic.FormatTime(end+int64(i%1000+1)*60_000))
	}
	day := end - 24*3600*1000
	t0 = time.Now()
	body := getBody(t, rangeURL(day, 0))
	report(t, "query_24h_cold_first", float64(time.Since(t0).Microseconds())/1000, "ms", 0)
	var ans struct {
		Cutoff string           `json:"batch_cutoff"`
		Rows   []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatal(err)
	}
	srcs := map[string]int{}
	for _, r := range ans.Rows {
		srcs[fmt.Sprint(r["source"])]++
	}
	if want := 1440 * groups; len(ans.Rows) != want || ans.Cutoff == "" || srcs["batch+speed"] == 0 {
		t.Fatalf("24 h answer: %d rows (want %d), cutoff %q, sources %v", len(ans.Rows), want, ans.Cutoff, srcs)
	}
	t.Logf("24 h answer: %d rows, %.1f MiB, sources %v", len(ans.Rows), float64(len(body))/(1<<20), srcs)

	// 4. Throughput and latency of the 24 h query, N clients: a sliding
	// range; the same query repeated; and sliding while events arrive and
	// the speed layer commits (each commit opens a new speed position).
	braid := hammer(t, func(i int) string { return rangeURL(day, i) }, clients, secs, 4*clients)
	repeated := hammer(t, func(int) string { return rangeURL(day, 0) }, clients, secs, 4*clients)
	liveRate := envInt(t, "BRAID_BENCH_QUERY_LIVE_RATE", 2000) // events/s
	p0, _, _ := store.Position(ctx, s.Name, 0)
	liveCtx, stopLive := context.WithCancel(ctx)
	var liveWG sync.WaitGroup
	liveWG.Add(2)
	go func() { defer liveWG.Done(); _ = sp.Run(liveCtx) }()
	go func() {
		defer liveWG.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		next := nSpeed
		for {
			select {
			case <-liveCtx.Done():
				return
			case <-tick.C:
				publish(next, next+liveRate/20)
				next += liveRate / 20
			}
		}
	}()
	live := hammer(t, func(i int) string { return rangeURL(day, i) }, clients, secs, 4*clients)
	stopLive()
	liveWG.Wait()
	p1, _, _ := store.Position(ctx, s.Name, 0)
	t.Logf("24 h while ingesting %d events/s: the speed position moved from %d to %d", liveRate, p0.Seq, p1.Seq)

	// The bodies the bare handler answers: braid's own answers.
	bodyDir := t.TempDir()
	ranges := []struct {
		name string
		d    time.Duration
	}{{"1h", time.Hour}, {"24h", 24 * time.Hour}, {"7d", 7 * 24 * time.Hour}}
	for _, r := range ranges {
		if r.d > time.Duration(days)*24*time.Hour {
			continue
		}
		b := body
		if r.name != "24h" {
			b = getBody(t, rangeURL(end-r.d.Milliseconds(), 0))
		}
		if err := os.WriteFile(filepath.Join(bodyDir, r.name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bareBase := startBareChi(t, bodyDir)
	bareURL := func(name string) func(int) string {
		return func(i int) string {
			return fmt.Sprintf("%s/v1/views/%s?body=%s&from=x&to=%d", bareBase, v.Name, name, i%1000)
		}
	}
	bare := hammer(t, bareURL("24h"), clients, secs, 4*clients)
	t.Logf("24 h: braid %d requests in %s, bare %d in %s, %d bytes each", braid.n, braid.elapsed.Round(time.Millisecond), bare.n, bare.elapsed.Round(time.Millisecond), braid.bytes)
	report(t, fmt.Sprintf("query_24h_%dgroups_rps_%dclients", groups, clients), braid.rps(), "req/s", bare.rps())
	report(t, "query_24h_p50", braid.p(0.50), "ms", bare.p(0.50))
	report(t, "query_24h_p99", braid.p(0.99), "ms", bare.p(0.99))
	report(t, fmt.Sprintf("query_24h_repeated_rps_%dclients", clients), repeated.rps(), "req/s", bare.rps())
	report(t, "query_24h_repeated_p99", repeated.p(0.99), "ms", bare.p(0.99))
	report(t, fmt.Sprintf("query_24h_live_rps_%dclients", clients), live.rps(), "req/s", bare.rps())
	report(t, "query_24h_live_p99", live.p(0.99), "ms", bare.p(0.99))

	// 5. How the cost grows with the range: one client, p99 per range, next
	// to the bare handler's p99 for a body of the same size.
	for _, r := range ranges {
		if r.d > time.Duration(days)*24*time.Hour {
			t.Logf("range %s skipped: the view holds %d days", r.name, days)
			continue
		}
		from := end - r.d.Milliseconds()
		b := hammer(t, func(i int) string { return rangeURL(from, i) }, 1, 2*time.Second, 8)
		l := hammer(t, bareURL(r.name), 1, 2*time.Second, 8)
		t.Logf("range %s: %d bytes, braid p50 %.1f ms p99 %.1f ms (%d requests); bare p50 %.2f ms p99 %.2f ms", r.name, b.bytes, b.p(0.5), b.p(0.99), b.n, l.p(0.5), l.p(0.99))
		report(t, "query_p99_range_"+r.name, b.p(0.99), "ms", l.p(0.99))
	}
	if hwm, err := procStatus(serve.Cmd.Process.Pid, "VmHWM"); err == nil {
		t.Logf("braid serve peak resident memory (VmHWM): %.0f MiB", hwm)
	}
}
