package tests

// The fault-injection suite ("nothing lost, nothing doubled"). Each trial
// runs Braid as separate processes (`braid serve`, `braid speed`,
// `braid archive`, `braid batch run`) against a nats-server process
// (testenv.NatsServerBin: go.mod's version) and a redis-server, streams known events over HTTP (with
// ids, retrying every non-200 with the same ids), injects one fault with
// real signals and real server restarts at a random moment, and then checks
// against an independent computation of the accepted events:
//
//   - the merged answer of GET /v1/views/... is exact (every measure of
//     every window and group), before and after a batch run;
//   - the lake holds every accepted event exactly once, and JetStream
//     stored each exactly once.
//
// Faults: kill -9 of braid speed / braid archive / braid batch run; Redis
// restarted empty; FLUSHALL; kill -9 of nats-server; two speed processes
// with a zombie writer (SIGSTOP/SIGCONT) and the writer lease removed;
// everything killed at once; SIGTERM of each process (exit code 0).
//
// BRAID_FAULT_SEED replays a seed (printed by every run); BRAID_FAULT_TRIALS
// sets the trials per fault (default 1; `make test-faults` runs 20).

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// faultCatalog is the e2e stream and view, with small micro-batches and
// archive writes so a fault lands between many commits.
func faultCatalog() testenv.Catalog {
	c := testenv.Fast()
	c.Archive = "max_rows: 400, max_delay: 200ms"
	c.Speed = "batch_size: 100, max_wait: 50ms"
	c.Streams = []testenv.Stream{testenv.Orders()}
	c.Views = []testenv.View{testenv.OrdersByCountry()}
	return c
}

const (
	faultEvents   = 1600 // per trial
	faultBatch    = 50   // events per POST
	faultPhase1   = 8    // POSTs before the first batch run
	faultPace     = 25 * time.Millisecond
	settleTimeout = 2 * time.Minute
)

// fault is one kind of injected failure. inject runs in the test goroutine
// at the chosen moment (the producer keeps streaming meanwhile) and returns
// what it did.
type fault struct {
	name   string
	speeds int // `braid speed` processes to run
	inject func(tr *trial) string
}

func faults() []fault {
	return []fault{
		{name: "speed-kill9", speeds: 1, inject: func(tr *trial) string {
			tr.speeds[0].Kill(tr.t)
			down := tr.pause(1000)
			tr.speeds[0] = tr.startSpeed()
			return fmt.Sprintf("kill -9 braid speed, restarted %v later", down)
		}},
		{name: "archive-kill9", speeds: 1, inject: func(tr *trial) string {
			tr.archive.Kill(tr.t)
			down := tr.pause(1000)
			tr.archive = tr.startArchive()
			return fmt.Sprintf("kill -9 braid archive, restarted %v later", down)
		}},
		{name: "batch-kill9", speeds: 1, inject: injectBatchKill},
		{name: "redis-restart", speeds: 1, inject: func(tr *trial) string {
			tr.redis.Restart(tr.t)
			return "redis-server killed and restarted empty on the same port"
		}},
		{name: "redis-flushall", speeds: 1, inject: func(tr *trial) string {
			if err := tr.redis.Client(tr.t).FlushAll(context.Background()).Err(); err != nil {
				tr.t.Fatalf("FLUSHALL: %v", err)
			}
			return "FLUSHALL"
		}},
		{name: "nats-kill9", speeds: 1, inject: func(tr *trial) string {
			tr.nats.Kill()
			down := tr.pause(2500)
			tr.nats.Start(tr.t)
			return fmt.Sprintf("kill -9 nats-server, restarted on the same port and store %v later", down)
		}},
		{name: "two-speed", speeds: 2, inject: injectTwoSpeed},
		{name: "all-restart", speeds: 1, inject: injectAllRestart},
		{name: "sigterm", speeds: 1, inject: injectSigterm},
	}
}

// TestFaults runs every fault BRAID_FAULT_TRIALS times.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("fault injection runs real processes for a minute or more; skipped with -short")
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BRAID_FAULT_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BRAID_FAULT_SEED=%q: %v", s, err)
		}
		seed = v
	}
	trials := 1
	if s := os.Getenv("BRAID_FAULT_TRIALS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("BRAID_FAULT_TRIALS=%q: want a positive integer", s)
		}
		trials = v
	}
	t.Logf("fault seed %d (replay: BRAID_FAULT_SEED=%d), %d trial(s) per fault", seed, seed, trials)
	testenv.BraidBin(t)
	testenv.NatsServerBin(t)
	for fi, f := range faults() {
		t.Run(f.name, func(t *testing.T) {
			for i := 1; i <= trials; i++ {
				t.Run(fmt.Sprintf("trial%02d", i), func(t *testing.T) {
					rng := rand.New(rand.NewPCG(splitmix(seed^uint64(fi)<<32^uint64(i)), splitmix(seed+uint64(fi)<<32+uint64(i))))
					t.Logf("seed %d, fault %s, trial %d", seed, f.name, i)
					runTrial(t, f, rng)
				})
			}
		})
	}
}

// splitmix scrambles a seed (SplitMix64), so trials with nearby numbers
// draw unrelated sequences.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// trial is one run of the system with one fault.
type trial struct {
	t       *testing.T
	rng     *rand.Rand
	st      *testenv.Stack
	nats    *testenv.NATSProc
	redis   *testenv.Redis
	base    string
	dataDir string
	ns      string
	serve   *testenv.Proc
	archive *testenv.Proc
	speeds  []*testenv.Proc
	prod    *producer
	from    time.Time
	to      time.Time

	killedRun    string // a batch run killed after it started: its record must end failed
	publishedRun string // a batch run killed after it published: its record must end succeeded
}

func (tr *trial) startSpeed() *testenv.Proc {
	return tr.st.Spawn("speed")
}

func (tr *trial) startArchive() *testenv.Proc {
	return tr.st.Spawn("archive")
}

func (tr *trial) startServe() *testenv.Proc {
	return tr.st.Start("serve")
}

// pause sleeps a random 0..maxMs milliseconds and returns how long.
func (tr *trial) pause(maxMs int) time.Duration {
	d := time.Duration(tr.rng.IntN(maxMs+1)) * time.Millisecond
	time.Sleep(d)
	return d
}

func runTrial(t *testing.T, f fault, rng *rand.Rand) {
	t0 := time.Now()
	tr := &trial{t: t, rng: rng}
	// A short publish timeout, so a nats-server outage turns into non-200
	// answers that the producer retries with the same ids.
	st := testenv.NewStack(t, faultCatalog().YAML(), testenv.WithNATSProc(), testenv.NATSKeys("publish_timeout: 1s"))
	tr.st, tr.nats, tr.redis, tr.base, tr.dataDir, tr.ns = st, st.NATSProc, st.Redis, st.Base, st.DataDir, st.Namespace
	tr.serve = tr.startServe()
	for range f.speeds {
		tr.speeds = append(tr.speeds, tr.startSpeed())
	}
	tr.archive = tr.startArchive()

	start := time.Now().UTC().Truncate(time.Minute).Add(-90 * time.Minute)
	tr.from, tr.to = start, start.Add(60*time.Minute)
	orders := genOrders(rng, start, faultEvents, 0)
	var batches [][]order
	for i := 0; i < len(orders); i += faultBatch {
		batches = append(batches, orders[i:min(i+faultBatch, len(orders))])
	}
	tr.prod = &producer{base: tr.base, done: make(chan struct{})}

	// Phase 1: some events, archived, and a first batch version, so the
	// fault meets a system with a batch cutoff (a Redis rebuild starts there).
	for _, b := range batches[:faultPhase1] {
		if err := tr.prod.post(b); err != nil {
			t.Fatalf("phase 1: %v", err)
		}
	}
	tr.waitCovered()
	run1 := tr.batchRun()
	if run1["status"] != "succeeded" {
		t.Fatalf("phase 1 batch run: %v", run1)
	}
	t.Logf("phase 1: %d events accepted, batch run %v (%s)", tr.prod.n.Load(), run1["status"], runSummary(run1))

	// Phase 2: stream the rest; inject the fault after a random number of
	// accepted events.
	rest := batches[faultPhase1:]
	go tr.prod.run(rest, faultPace)
	phase1 := int64(faultPhase1 * faultBatch)
	at := phase1 + int64(rng.IntN(len(rest)*faultBatch*3/4))
	tr.prod.waitFor(at)
	streamed := time.Since(tr.prod.started)
	atN := tr.prod.n.Load()
	what := f.inject(tr)
	t.Logf("injected: %s, after %d accepted events (%v into phase 2)", what, atN, streamed.Round(time.Millisecond))

	select {
	case <-tr.prod.done:
	case <-time.After(5 * time.Minute):
		t.Fatalf("producer not done after 5 minutes (%d events accepted)", tr.prod.n.Load())
	}
	if tr.prod.err != nil {
		t.Fatalf("producer: %v", tr.prod.err)
	}
	accepted := tr.prod.acceptedOrders()
	want := expect(accepted)
	t.Logf("producer: %d events accepted in %d POSTs (%d failed attempts retried with the same ids)",
		len(accepted), tr.prod.posts.Load(), tr.prod.failures.Load())

	// (a) the merged answer, settled, before and after a batch run.
	src := tr.checkAnswer("before the batch run", want)
	tr.waitCovered() // so the run's cutoff passes every accepted event
	run2 := tr.batchRun()
	if run2["status"] != "succeeded" {
		t.Fatalf("batch run after the fault: %v", run2)
	}
	src2 := tr.checkAnswer("after the batch run", want)
	if tr.killedRun != "" {
		if st := tr.runStatus(tr.killedRun); st != "failed" {
			t.Errorf("the killed batch run %s is recorded as %q after the next run, want failed (interrupted)", tr.killedRun, st)
		}
	}
	if tr.publishedRun != "" {
		if st := tr.runStatus(tr.publishedRun); st != "succeeded" {
			t.Errorf("the batch run %s killed after publishing is recorded as %q after the next run, want succeeded", tr.publishedRun, st)
		}
	}
	t.Logf("checked answers: %d rows exact before the batch run (sources %s), %d after it (sources %s; %s)",
		len(want), src, len(want), src2, runSummary(run2))

	// (b) the lake and JetStream hold every accepted event exactly once.
	lakeRows, jsMsgs := tr.checkLake(accepted)
	t.Logf("checked lake: %d rows == %d distinct (_seq, _idx) == %d distinct accepted ids == the log's events (in %d log records); trial took %v",
		lakeRows, lakeRows, len(accepted), jsMsgs, time.Since(t0).Round(time.Millisecond))
}

// injectBatchKill runs `braid batch run` as a process and kills it -9 at a
// random moment: the version served stays the previous one unless the run
// had published a complete version, and the next run succeeds.
func injectBatchKill(tr *trial) string {
	t := tr.t
	prev := tr.current()
	p := tr.st.Spawn("batch", "run")
	// The run first waits until the lake covers what the log held when it
	// started; the kill is meant for the computation and publishing after
	// (or for the process, should it end before).
	waited := func(out string) bool {
		for _, m := range []string{"the lake covers the request", "settle timeout", "batch run not started", "batch run failed", "braid batch:"} {
			if strings.Contains(out, m) {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(settleTimeout); !waited(p.Output()) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	delay := tr.pause(60) // a run over these few events takes about 50 ms
	err := p.Signal(t, syscall.SIGKILL)
	cur := tr.current()
	stage := "before its first log line"
	for _, line := range strings.Split(p.Output(), "\n") {
		if i := strings.Index(line, "msg="); i >= 0 {
			stage = "after " + strings.SplitN(line[i:], " layer=", 2)[0]
		}
	}
	switch {
	case err == nil:
		// It finished first (exit 0): its version must be the current one.
		if cur == prev || tr.runStatus(cur) != "succeeded" {
			t.Errorf("batch run exited 0 before the kill, but the current version is %q (previous %q, run status %q)", cur, prev, tr.runStatus(cur))
		}
		return fmt.Sprintf("`braid batch run` finished before kill -9 at +%v (version %s)", delay, cur)
	case cur == prev:
		if m := regexp.MustCompile(`run=(\S+)`).FindStringSubmatch(p.Output()); m != nil && strings.Contains(p.Output(), "batch run started") {
			tr.killedRun = m[1] // its record says running: the next run must mark it failed
		}
		return fmt.Sprintf("kill -9 `braid batch run` at +%v, %s (%v): previous version %s still current", delay, stage, err, prev)
	default:
		// Killed after publishing: the version it left must be complete,
		// and its record succeeded — at once, or (killed between the
		// current pointer's write and the record's save) after the next run.
		switch st := tr.runStatus(cur); st {
		case "succeeded":
		case "running":
			tr.publishedRun = cur
		default:
			t.Errorf("killed batch run left current version %q (previous %q) whose run is %q", cur, prev, st)
		}
		return fmt.Sprintf("kill -9 `braid batch run` at +%v, %s (%v), after it published version %s", delay, stage, err, cur)
	}
}

// injectTwoSpeed runs two speed processes and makes the one writing a
// zombie: SIGSTOP while it streams (typically with a fetched, uncommitted
// micro-batch in hand), the other takes over the stream and commits past
// it, then SIGCONT: the zombie's stale commit must be refused by the
// position's compare-and-set. Then the writer lease is deleted over and
// over for a while (its owner takes it again at its next tick).
func injectTwoSpeed(tr *trial) string {
	t := tr.t
	rdb := tr.redis.Client(t)
	ctx := context.Background()
	// The stream's one partition: its speed lease and position.
	leaseKey, posKey := tr.ns+":lease:"+speedstore.Tag("orders", 0)+":speed", tr.ns+":pos:"+speedstore.Tag("orders", 0)
	// The writer is the lease holder: its owner string ends in -<pid>-<hex>.
	zombie := -1
	eventually(t, "a speed process holds the lease", settleTimeout, func() string {
		owner, err := rdb.Get(ctx, leaseKey).Result()
		if err != nil {
			return "lease: " + err.Error()
		}
		parts := strings.Split(owner, "-")
		if len(parts) < 3 {
			return "lease owner " + owner
		}
		pid, _ := strconv.Atoi(parts[len(parts)-2])
		for i, p := range tr.speeds {
			if p.Cmd.Process.Pid == pid {
				zombie = i
				return ""
			}
		}
		return "lease owner " + owner + " is no speed process of this test"
	})
	z := tr.speeds[zombie]
	if err := z.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP: %v", err)
	}
	_, last := tr.jsState()
	zpos, _ := rdb.HGet(ctx, posKey, "seq").Result()
	if err := rdb.Del(ctx, leaseKey).Err(); err != nil {
		t.Fatalf("del lease: %v", err)
	}
	// The other one takes over and commits everything the log held at the
	// stop (what the zombie had fetched comes back to it after the ack wait).
	other := tr.speeds[1-zombie].Cmd.Process.Pid
	eventually(t, "the other speed process commits past the zombie", settleTimeout, func() string {
		m, err := rdb.HGetAll(ctx, posKey).Result()
		if err != nil {
			return err.Error()
		}
		seq, _ := strconv.ParseUint(m["seq"], 10, 64)
		if !strings.Contains(m["owner"], fmt.Sprintf("-%d-", other)) || seq < last {
			return fmt.Sprintf("position %v, want owner pid %d and seq >= %d", m, other, last)
		}
		return ""
	})
	if err := z.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT: %v", err)
	}
	dels := 0
	for end := time.Now().Add(time.Duration(300+tr.rng.IntN(700)) * time.Millisecond); time.Now().Before(end); dels++ {
		if err := rdb.Del(ctx, leaseKey).Err(); err != nil {
			t.Fatalf("del lease: %v", err)
		}
		time.Sleep(time.Duration(1+tr.rng.IntN(10)) * time.Millisecond)
	}
	return fmt.Sprintf("two speed processes: SIGSTOP of the writer (speed #%d, position %s), the other took over and committed to >= %d, SIGCONT (%d stale commits refused so far); then the writer lease deleted %d times",
		zombie+1, zpos, last, strings.Count(z.Output(), "position moved under us"), dels)
}

// injectAllRestart kills every process at once (braid -9, nats-server -9,
// Redis emptied) and starts them again in a random order.
func injectAllRestart(tr *trial) string {
	t := tr.t
	tr.serve.Kill(t)
	for _, p := range tr.speeds {
		p.Kill(t)
	}
	tr.archive.Kill(t)
	tr.nats.Kill()
	tr.redis.Stop()
	down := tr.pause(1000)
	tr.nats.Start(t)
	tr.redis.Restart(t)
	order := []string{"serve", "speed", "archive"}
	tr.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, name := range order {
		switch name {
		case "serve":
			tr.serve = tr.startServe()
		case "speed":
			for i := range tr.speeds {
				tr.speeds[i] = tr.startSpeed()
			}
		case "archive":
			tr.archive = tr.startArchive()
		}
	}
	return fmt.Sprintf("kill -9 of serve, speed, archive and nats-server, Redis emptied; all restarted %v later (braid in order %v)", down, order)
}

// injectSigterm stops each braid process with SIGTERM at random moments of
// the stream (exit code 0 expected) and starts it again.
func injectSigterm(tr *trial) string {
	t := tr.t
	order := []string{"speed", "archive", "serve"}
	tr.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	var did []string
	for i, name := range order {
		if i > 0 {
			tr.prod.waitFor(tr.prod.n.Load() + int64(tr.rng.IntN(4*faultBatch)))
		}
		var p **testenv.Proc
		var restart func() *testenv.Proc
		switch name {
		case "speed":
			p, restart = &tr.speeds[0], tr.startSpeed
		case "archive":
			p, restart = &tr.archive, tr.startArchive
		default:
			p, restart = &tr.serve, tr.startServe
		}
		n := tr.prod.n.Load()
		if err := (*p).Stop(t); err != nil {
			t.Errorf("SIGTERM of braid %s: exit %v, want 0\n%s", name, err, (*p).Output())
		}
		*p = restart()
		did = append(did, fmt.Sprintf("%s at %d events (exit 0)", name, n))
	}
	return "SIGTERM and restart of " + strings.Join(did, ", ")
}

// producer posts known events with ids, retrying every failed POST with
// the same body until it is answered 200.
type producer struct {
	base     string
	n        atomic.Int64 // events accepted (answered 200)
	posts    atomic.Int64
	failures atomic.Int64
	started  time.Time
	done     chan struct{}
	err      error // set before done closes

	mu       sync.Mutex
	accepted []order
}

var faultClient = &http.Client{Timeout: 30 * time.Second}

func (p *producer) run(batches [][]order, pace time.Duration) {
	defer close(p.done)
	p.started = time.Now()
	for _, b := range batches {
		if err := p.post(b); err != nil {
			p.err = err
			return
		}
		time.Sleep(pace)
	}
}

func (p *producer) post(b []order) error {
	body := ndjson(b)
	deadline := time.Now().Add(3 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		resp, err := faultClient.Post(p.base+"/v1/streams/orders/events", "application/x-ndjson", bytes.NewReader(body))
		if err != nil {
			last = err.Error()
		} else {
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				p.posts.Add(1)
				var r ingestResp
				if err := json.Unmarshal(raw, &r); err != nil {
					return fmt.Errorf("ingest answer %q: %v", raw, err)
				}
				if r.Accepted != len(b) || r.Rejected != 0 {
					return fmt.Errorf("ingest of %d valid events: %s", len(b), raw)
				}
				p.mu.Lock()
				p.accepted = append(p.accepted, b...)
				p.mu.Unlock()
				p.n.Add(int64(len(b)))
				return nil
			}
			last = fmt.Sprintf("status %d: %s", resp.StatusCode, bytes.TrimSpace(raw))
		}
		p.failures.Add(1)
		time.Sleep(150 * time.Millisecond)
	}
	return fmt.Errorf("POST of %s..%s not accepted for 3 minutes: %s", b[0].ID, b[len(b)-1].ID, last)
}

// waitFor returns once n events are accepted or the producer is done.
func (p *producer) waitFor(n int64) {
	for p.n.Load() < n {
		select {
		case <-p.done:
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (p *producer) acceptedOrders() []order {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]order(nil), p.accepted...)
}

// checkAnswer polls the merged answer until it equals want exactly and
// returns the row sources seen.
func (tr *trial) checkAnswer(when string, want map[string]*agg) string {
	var sources string
	eventually(tr.t, "exact answer "+when, settleTimeout, func() string {
		url := fmt.Sprintf("%s/v1/views/orders_by_country?from=%s&to=%s", tr.base, tr.from.Format(time.RFC3339), tr.to.Format(time.RFC3339))
		resp, err := faultClient.Get(url)
		if err != nil {
			return err.Error()
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Sprintf("query status %d: %s", resp.StatusCode, raw)
		}
		var q queryResp
		if err := json.Unmarshal(raw, &q); err != nil {
			return fmt.Sprintf("query answer %q: %v", raw, err)
		}
		if msg := compare(q, want, "batch", "batch+speed", "speed"); msg != "" {
			return msg
		}
		count := map[string]int{}
		for _, r := range q.Rows {
			count[fmt.Sprint(r["source"])]++
		}
		sources = fmt.Sprint(count)
		return ""
	})
	return sources
}

// batchRun asks the serve process for a batch run and waits for it.
func (tr *trial) batchRun() map[string]any {
	var run map[string]any
	eventually(tr.t, "batch run", settleTimeout, func() string {
		resp, err := faultClient.Post(tr.base+"/v1/batch/runs?wait=true", "application/json", strings.NewReader(`{}`))
		if err != nil {
			return err.Error()
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Sprintf("status %d: %s", resp.StatusCode, raw)
		}
		run = map[string]any{}
		if err := json.Unmarshal(raw, &run); err != nil {
			return fmt.Sprintf("batch run answer %q: %v", raw, err)
		}
		return ""
	})
	return run
}

// current is the id of the current batch version ("" before the first).
func (tr *trial) current() string {
	views, err := batchviews.OpenDir(filepath.Join(tr.dataDir, "batch"))
	if err != nil {
		tr.t.Fatal(err)
	}
	cur, err := views.Current()
	if err != nil {
		tr.t.Fatal(err)
	}
	if cur == nil {
		return ""
	}
	return cur.ID
}

// runStatus is a batch run's recorded status, read through the serve process.
func (tr *trial) runStatus(id string) string {
	var run struct {
		Status string `json:"status"`
	}
	eventually(tr.t, "batch run record", settleTimeout, func() string {
		resp, err := faultClient.Get(tr.base + "/v1/batch/runs/" + id)
		if err != nil {
			return err.Error()
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Sprintf("status %d: %s", resp.StatusCode, raw)
		}
		if err := json.Unmarshal(raw, &run); err != nil {
			return err.Error()
		}
		return ""
	})
	return run.Status
}

// jsState is the stream's stored message count and last sequence.
func (tr *trial) jsState() (msgs, last uint64) {
	_, js := tr.nats.JetStream(tr.t)
	eventually(tr.t, "JetStream stream info", settleTimeout, func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, tr.ns+"_events_orders")
		if err != nil {
			return err.Error()
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err.Error()
		}
		msgs, last = info.State.Msgs, info.State.LastSeq
		return ""
	})
	return msgs, last
}

// runSummary formats a batch run's cutoff and rows read.
func runSummary(run map[string]any) string {
	cut := "none"
	if m, ok := run["cutoffs"].(map[string]any); ok {
		if c, ok := m["orders_by_country"].(string); ok {
			if t, err := time.Parse(time.RFC3339Nano, c); err == nil {
				cut = t.UTC().Format("15:04:05")
			}
		}
	}
	return fmt.Sprintf("cutoff %s, rows_read %v", cut, run["rows_read"])
}

// waitCovered waits until the lake covers every record in the log up to
// the end of its last arrival's epoch, so a batch run's cutoff passes them
// all.
func (tr *trial) waitCovered() {
	_, js := tr.nats.JetStream(tr.t)
	var lastMs int64
	eventually(tr.t, "JetStream stream info", settleTimeout, func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, tr.ns+"_events_orders")
		if err != nil {
			return err.Error()
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err.Error()
		}
		lastMs = info.State.LastTime.UnixMilli()
		return ""
	})
	need := (lastMs/1000 + 1) * 1000 // epoch: 1s
	lk, err := lake.OpenDir(filepath.Join(tr.dataDir, "lake"))
	if err != nil {
		tr.t.Fatal(err)
	}
	eventually(tr.t, "lake coverage", settleTimeout, func() string {
		cp, err := lk.Checkpoint("orders")
		if err != nil {
			return err.Error()
		}
		if cp.CoveredUntil < need {
			return fmt.Sprintf("lake covered until %d, want %d", cp.CoveredUntil, need)
		}
		return ""
	})
}

// waitArchived waits until the lake's checkpoint reaches the log's end.
func (tr *trial) waitArchived() {
	_, last := tr.jsState()
	lk, err := lake.OpenDir(filepath.Join(tr.dataDir, "lake"))
	if err != nil {
		tr.t.Fatal(err)
	}
	eventually(tr.t, "archive caught up", settleTimeout, func() string {
		cp, err := lk.Checkpoint("orders")
		if err != nil {
			return err.Error()
		}
		if cp.Seq < last {
			return fmt.Sprintf("lake checkpoint at seq %d, log at %d", cp.Seq, last)
		}
		return ""
	})
}

// checkLake checks with DuckDB that the lake holds every accepted event
// exactly once, and that JetStream stored each exactly once.
func (tr *trial) checkLake(accepted []order) (rows int64, jsMsgs uint64) {
	t := tr.t
	tr.waitArchived()
	jsMsgs, last := tr.jsState()
	ids := map[string]bool{}
	for _, o := range accepted {
		ids[o.ID] = true
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	src := lakeSource(t, tr.dataDir, "orders")
	var seqs, distinctIDs, maxSeq int64
	err = db.QueryRow(`SELECT count(*), count(DISTINCT (_seq, _idx)), count(DISTINCT order_id), coalesce(max(_seq), 0) FROM `+src).Scan(&rows, &seqs, &distinctIDs, &maxSeq)
	if err != nil {
		t.Fatal(err)
	}
	// The log: every accepted id in exactly one event of its records.
	_, js := tr.nats.JetStream(t)
	logIDs := map[string]int{}
	logEvents := 0
	for _, rec := range testenv.StoredEvents(t, js, tr.ns+"_events_orders") {
		var o struct {
			ID string `json:"order_id"`
		}
		if err := json.Unmarshal(rec, &o); err != nil {
			t.Fatal(err)
		}
		logIDs[o.ID]++
		logEvents++
	}
	n := int64(len(ids))
	if rows != n || seqs != n || distinctIDs != n || logEvents != int(n) || len(logIDs) != int(n) || uint64(maxSeq) != last {
		t.Fatalf("lake: %d rows, %d distinct (_seq, _idx), %d distinct ids, max _seq %d; JetStream: %d events (%d distinct ids) in %d records, last seq %d; want %d accepted ids everywhere",
			rows, seqs, distinctIDs, maxSeq, logEvents, len(logIDs), jsMsgs, last, n)
	}
	rs, err := db.Query(`SELECT DISTINCT order_id FROM ` + src)
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for rs.Next() {
		var id string
		if err := rs.Scan(&id); err != nil {
			t.Fatal(err)
		}
		if !ids[id] {
			t.Fatalf("lake holds id %q that was never accepted", id)
		}
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	return rows, jsMsgs
}
