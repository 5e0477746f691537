package serving_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// storeSpeed is serving's view of a real speed store (as cmd/braid wires
// it). gate, when set, runs before every read (with the read's context).
type storeSpeed struct {
	st   *speedstore.Store
	cat  *config.Catalog // the streams' partitions
	mu   sync.Mutex
	gate func(ctx context.Context)
}

func (r *storeSpeed) setGate(g func(ctx context.Context)) {
	r.mu.Lock()
	r.gate = g
	r.mu.Unlock()
}

func (r *storeSpeed) ReadCells(ctx context.Context, v *logic.View, from, to, minEpoch int64, fn func(query.SpeedCell) error) error {
	r.mu.Lock()
	gate := r.gate
	r.mu.Unlock()
	if gate != nil {
		gate(ctx)
	}
	return r.st.ReadEach(ctx, v, from, to, minEpoch, func(c speedstore.Cell) error {
		return fn(query.SpeedCell{Epoch: c.Epoch, Window: c.Window, Group: c.Group, State: c.State})
	})
}

func (r *storeSpeed) StreamStatus(ctx context.Context, stream string) (query.StreamSpeed, error) {
	parts := make([]query.PartSpeed, r.cat.Streams[stream].Partitions)
	for i := range parts {
		p, found, err := r.st.Position(ctx, stream, i)
		if err != nil {
			return query.StreamSpeed{}, err
		}
		if !found {
			continue
		}
		parts[i] = query.PartSpeed{Found: true, Seq: p.Seq, Watermark: p.Watermark, LastArrival: p.LastArrival, Target: p.Target, Views: map[string]query.ViewSpeed{}}
		for k, vp := range p.Views {
			parts[i].Views[k] = query.ViewSpeed{JoinedOK: vp.JoinedOK, Joined: vp.Joined, From: vp.From}
		}
	}
	return query.SpeedOf(parts), nil
}

// wideEnv is a view with one group per key (and a bucket of ten keys)
// whose cells are in a real Redis, served with a budget.
type wideEnv struct {
	t     *testing.T
	st    *speedstore.Store
	s     *logic.Stream
	v     *logic.View
	seq   uint64
	reg   *prometheus.Registry
	srv   *httptest.Server
	speed *storeSpeed
}

const wideBase = int64(1_764_000_000_000) // a minute start

func newWideEnv(t *testing.T, cfg config.Config, cache int64) *wideEnv {
	t.Helper()
	r := testenv.StartRedis(t)
	s, err := logic.NewStream("wide", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{
		"ts": logic.TypeTime, "key": logic.TypeString, "bucket": logic.TypeString, "amount": logic.TypeFloat}}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := logic.NewView("wide", logic.ViewDef{Stream: "wide", Window: time.Minute, GroupBy: []string{"key", "bucket"},
		Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}, {Name: "amount", Expr: "sum(amount)"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	e := &wideEnv{t: t, st: speedstore.New(r.Client(t), testenv.Namespace(t)), s: s, v: v, reg: prometheus.NewRegistry()}
	e.speed = &storeSpeed{st: e.st, cat: testCatalog(s, v)}
	views, err := batchviews.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e.commit(0, 0, 0) // the position: the view joins it from the log's start
	srv, err := serving.New(serving.Options{Config: &cfg, Catalog: testCatalog(s, v), Speed: e.speed, SpeedStatus: e.speed, Views: views,
		QueryCacheBytes: cache, LivePoll: 20 * time.Millisecond, Registry: e.reg, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	e.srv = httptest.NewServer(srv.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

// commit folds one event for each key in [first, first+n) into window w
// (minutes after wideBase) and commits it.
func (e *wideEnv) commit(w, first, n int) {
	e.t.Helper()
	d := e.v.NewDelta()
	ts := wideBase + int64(w)*60_000
	for k := first; k < first+n; k++ {
		ev, _, err := e.s.Prepare([]byte(fmt.Sprintf(`{"ts":%d,"key":"k%05d","bucket":"b%d","amount":%d}`, ts, k, k%10, k%7)), 0)
		if err != nil {
			e.t.Fatal(err)
		}
		d.Fold(wideBase, &ev)
	}
	next := e.seq + 1
	if e.seq == 0 && n == 0 {
		next = 0
	}
	if err := e.st.Commit(context.Background(), "wide", 0, e.seq, speedstore.Position{Seq: next, Watermark: wideBase}, 0, []*logic.Delta{d}); err != nil {
		e.t.Fatal(err)
	}
	e.seq = next
}

func (e *wideEnv) url(path string, from, to int, params string) string {
	return fmt.Sprintf("%s/v1/views/wide%s?from=%s&to=%s%s", e.srv.URL, path, logic.FormatTime(wideBase+int64(from)*60_000),
		logic.FormatTime(wideBase+int64(to)*60_000), params)
}

func (e *wideEnv) metric(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return 0
}

type tooLarge struct {
	Error  string `json:"error"`
	Detail string `json:"detail"`
	Limit  string `json:"limit"`
	Max    int64  `json:"max"`
}

// TestQueryBudget: an answer that would read more speed cells than
// http.query_max_cells, or compute more rows than http.query_max_rows,
// answers 422 naming the limit and the ways to narrow it (plain queries in
// every format, with and without the query cache, and live queries); the
// narrowed queries answer.
func TestQueryBudget(t *testing.T) {
	cfg := config.Default()
	cfg.HTTP.QueryMaxCells, cfg.HTTP.QueryMaxRows = 3000, 1500
	for _, cache := range []int64{0, 64 << 20} {
		t.Run(fmt.Sprintf("cache=%d", cache), func(t *testing.T) {
			e := newWideEnv(t, cfg, cache)
			e.commit(0, 0, 2000)
			e.commit(1, 0, 600)
			e.commit(2, 0, 1000) // 3600 cells in all
			over := func(url, limit string, hints ...string) {
				t.Helper()
				code, _, body := get(t, url)
				var te tooLarge
				if err := json.Unmarshal(body, &te); err != nil || code != http.StatusUnprocessableEntity || te.Error != "query too large" || te.Limit != limit {
					t.Fatalf("%s: %d %s, want 422 naming %s", url, code, body, limit)
				}
				for _, h := range append(hints, limit) {
					if !strings.Contains(te.Detail, h) {
						t.Fatalf("%s: %q does not say %q", url, te.Detail, h)
					}
				}
			}
			rows := func(url string) []map[string]any {
				t.Helper()
				code, _, body := get(t, url)
				if code != 200 {
					t.Fatalf("%s: %d %s", url, code, body)
				}
				return decodeAnswer(t, body).Rows
			}
			// Rows: 2600 in windows 0 and 1, one per key.
			for _, f := range []string{"", "&format=csv", "&order=-n&limit=5"} {
				over(e.url("", 0, 2, f), "http.query_max_rows", "group_by", "where=", "step")
			}
			if got := rows(e.url("", 0, 2, "&group_by=bucket")); len(got) != 20 {
				t.Fatalf("group_by=bucket: %d rows, want 20", len(got))
			}
			if got := rows(e.url("", 0, 2, "&where=bucket:b3")); len(got) != 260 {
				t.Fatalf("where=bucket:b3: %d rows, want 260", len(got))
			}
			over(e.url("", 0, 2, "&step=2m"), "http.query_max_rows") // 2000 keys in the two windows
			if got := rows(e.url("", 0, 2, "&step=2m&group_by=bucket")); len(got) != 10 {
				t.Fatalf("step=2m&group_by=bucket: %d rows, want 10", len(got))
			}
			// Cells: 3600 in windows 0 to 2, whatever the rollup.
			over(e.url("", 0, 3, "&group_by="), "http.query_max_cells", "from", "to")
			over(e.url("", 0, 3, "&step=all&group_by=bucket"), "http.query_max_cells")
			got := rows(e.url("", 0, 2, "&group_by="))
			if len(got) != 2 || fmt.Sprint(got[0]["n"]) != "2000" || fmt.Sprint(got[1]["n"]) != "600" {
				t.Fatalf("windows 0 and 1 rolled up: %v", got)
			}
			// Live: the same answer before the stream starts.
			over(e.url("/live", 0, 2, ""), "http.query_max_rows")
			over(e.url("/live", 0, 3, "&group_by="), "http.query_max_cells")
			if n := e.metric("braid_query_computations_total", "result", "too_large"); n < 4 {
				t.Fatalf("braid_query_computations_total{result=too_large} = %v", n)
			}
		})
	}
}

// sse reads a live stream's events.
type sse struct {
	events chan [2]string // name, data
	cancel context.CancelFunc
	status int
}

func openLive(t *testing.T, url string) *sse {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &sse{events: make(chan [2]string, 64), cancel: cancel, status: resp.StatusCode}
	t.Cleanup(cancel)
	go func() {
		defer resp.Body.Close()
		defer close(c.events)
		br := bufio.NewReaderSize(resp.Body, 1<<20)
		name, data := "", ""
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				name = line[7:]
			case strings.HasPrefix(line, "data: "):
				data += line[6:]
			case line == "" && name != "":
				c.events <- [2]string{name, data}
				name, data = "", ""
			}
		}
	}()
	return c
}

func (c *sse) next(t *testing.T) (string, []map[string]any) {
	t.Helper()
	select {
	case ev, ok := <-c.events:
		if !ok {
			t.Fatal("the live stream ended")
		}
		var rows []map[string]any
		if ev[0] != "batch" && ev[0] != "error" {
			if err := json.Unmarshal([]byte(ev[1]), &rows); err != nil {
				t.Fatalf("%s event: %v", ev[0], err)
			}
		}
		return ev[0], rows
	case <-time.After(30 * time.Second):
		t.Fatal("no live event within 30s")
		return "", nil
	}
}

// TestLiveClientsShareComputations: ten live clients of one query are one
// live query, computed once per speed position for all of them; each gets
// the same snapshot and, after a commit that changes one group, that one
// row. A client of another query is another live query.
func TestLiveClientsShareComputations(t *testing.T) {
	e := newWideEnv(t, config.Default(), 64<<20)
	e.commit(0, 0, 3000)
	url := e.url("/live", 0, 2, "")
	var clients []*sse
	for range 10 {
		clients = append(clients, openLive(t, url))
	}
	var first []map[string]any
	for i, c := range clients {
		name, rows := c.next(t)
		if name != "snapshot" || len(rows) != 3000 {
			t.Fatalf("client %d: %s of %d rows, want a snapshot of 3000", i, name, len(rows))
		}
		if i == 0 {
			first = rows
		} else if fmt.Sprint(rows) != fmt.Sprint(first) {
			t.Fatalf("client %d: another snapshot", i)
		}
	}
	if n := e.metric("braid_live_queries"); n != 1 {
		t.Fatalf("braid_live_queries = %v, want 1", n)
	}
	if n := e.metric("braid_query_computations_total", "result", "done"); n != 1 {
		t.Fatalf("%v computations for ten clients at one position, want 1", n)
	}
	e.commit(0, 7, 1) // key k00007 once more
	for i, c := range clients {
		name, rows := c.next(t)
		if name != "rows" || len(rows) != 1 || rows[0]["key"] != "k00007" || fmt.Sprint(rows[0]["n"]) != "2" {
			t.Fatalf("client %d: %s %v, want the one changed row", i, name, rows)
		}
	}
	if n := e.metric("braid_query_computations_total", "result", "done"); n != 2 {
		t.Fatalf("%v computations for ten clients at two positions, want 2", n)
	}
	other := openLive(t, e.url("/live", 0, 2, "&group_by=bucket"))
	if name, rows := other.next(t); name != "snapshot" || len(rows) != 10 {
		t.Fatalf("another query: %s of %d rows", name, len(rows))
	}
	if n := e.metric("braid_live_queries"); n != 2 {
		t.Fatalf("braid_live_queries = %v, want 2", n)
	}
	for _, c := range append(clients, other) {
		c.cancel()
	}
	waitFor(t, "no live query left", func() string {
		if n := e.metric("braid_live_queries"); n != 0 {
			return fmt.Sprintf("braid_live_queries %v", n)
		}
		return ""
	})
}

func waitFor(t *testing.T, what string, f func() string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg := f()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s after 30s", what, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// gated holds every read of speed cells until released, and keeps the
// context of the last one.
type gated struct {
	mu      sync.Mutex
	ctx     context.Context
	started chan struct{}
	release chan struct{}
}

func newGated() *gated { return &gated{started: make(chan struct{}, 16), release: make(chan struct{})} }

func (g *gated) gate(ctx context.Context) {
	g.mu.Lock()
	g.ctx = ctx
	g.mu.Unlock()
	g.started <- struct{}{}
	<-g.release
}

func (g *gated) readCtx() context.Context {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.ctx
}

// TestComputationStopsWhenItsLastClientLeaves: two queries of one answer
// share one computation; the first leaving does not stop it (the second
// gets its answer); when both leave it is cancelled, and its read of
// Redis stops. The same for the clients of a live query.
func TestComputationStopsWhenItsLastClientLeaves(t *testing.T) {
	for _, live := range []bool{false, true} {
		t.Run(fmt.Sprintf("live=%t", live), func(t *testing.T) {
			e := newWideEnv(t, config.Default(), 64<<20)
			e.commit(0, 0, 500)
			path := ""
			if live {
				path = "/live"
			}
			url := e.url(path, 0, 2, "&group_by=bucket")
			ask := func() (context.CancelFunc, chan int) {
				ctx, cancel := context.WithCancel(context.Background())
				status := make(chan int, 1)
				go func() {
					req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						status <- 0
						return
					}
					defer resp.Body.Close()
					if live {
						_, _ = bufio.NewReader(resp.Body).ReadString('\n') // the stream has begun
					} else {
						_, _ = io.ReadAll(resp.Body)
					}
					status <- resp.StatusCode
				}()
				return cancel, status
			}
			left := func(n float64) func() string {
				return func() string {
					route := "/v1/views/{view}"
					if live {
						route += "/live"
					}
					if got := e.metric("braid_http_requests_total", "route", route, "code", "499"); got != n {
						return fmt.Sprintf("%v requests left, want %v", got, n)
					}
					return ""
				}
			}

			// One leaves, the other stays: the computation goes on.
			g := newGated()
			e.speed.setGate(g.gate)
			cancel1, _ := ask()
			<-g.started
			cancel2, status2 := ask()
			waitFor(t, "the second query joins", func() string {
				if n := e.metric("braid_query_shared_total"); n != 1 {
					return fmt.Sprintf("braid_query_shared_total %v", n)
				}
				return ""
			})
			cancel1()
			waitFor(t, "the first query left", left(1))
			if err := g.readCtx().Err(); err != nil {
				t.Fatalf("one of two clients left and the computation was stopped: %v", err)
			}
			close(g.release)
			if code := <-status2; code != 200 {
				t.Fatalf("the query that stayed: %d", code)
			}
			cancel2()
			waitFor(t, "the second query left", func() string {
				if n := e.metric("braid_live_queries"); n != 0 {
					return fmt.Sprintf("braid_live_queries %v", n)
				}
				return ""
			})
			done := e.metric("braid_query_computations_total", "result", "done")

			// Both leave: the computation is cancelled, and so is its read.
			g = newGated()
			e.speed.setGate(g.gate)
			e.commit(0, 0, 1) // a new position: a new computation
			cancel3, _ := ask()
			<-g.started
			cancel4, _ := ask()
			waitFor(t, "the second query joins", func() string {
				if n := e.metric("braid_query_shared_total"); n != 2 {
					return fmt.Sprintf("braid_query_shared_total %v", n)
				}
				return ""
			})
			cancel3()
			waitFor(t, "the first query left", left(2))
			if err := g.readCtx().Err(); err != nil {
				t.Fatalf("one of two clients left and the computation was stopped: %v", err)
			}
			cancel4()
			select {
			case <-g.readCtx().Done():
			case <-time.After(30 * time.Second):
				t.Fatal("both clients left and the computation's read goes on")
			}
			close(g.release)
			waitFor(t, "the computation is cancelled", func() string {
				c := e.metric("braid_query_computations_total", "result", "cancelled")
				r := e.metric("braid_query_computations_running")
				if c != 1 || r != 0 {
					return fmt.Sprintf("cancelled %v, running %v", c, r)
				}
				return ""
			})
			if n := e.metric("braid_query_computations_total", "result", "done"); n != done {
				t.Fatalf("computations done went from %v to %v with nobody waiting", done, n)
			}
		})
	}
}
