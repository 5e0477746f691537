package tests

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// The view-edit test restarts `braid up` over one data_dir, one NATS and
// (in one mode) one Redis with its views edited in between, and checks every
// answer on the way against a computation from the events the test sent:
// an answer with 200 is never wrong (every event acknowledged before the
// start is in it; the events sent since are in it or not, per row, wholly);
// a view that cannot answer says 503 "view rebuilding" with its progress;
// and in the end every view answers exactly.

func veCatalog() testenv.Catalog {
	orders := testenv.Orders().Without("order_id", "items").With("id: string", "device: string", "qty: int")
	orders.ID = "id"
	return testenv.Catalog{
		Epoch:   "1s",
		Batch:   "every: 0, settle_timeout: 5m",
		Archive: "max_rows: 1000, max_delay: 200ms",
		Speed:   "batch_size: 200, max_wait: 25ms",
		Streams: []testenv.Stream{orders},
	}
}

// veMeasure is a measure as the test declares it.
type veMeasure struct {
	name, kind, field string // kind: count, sum, avg, min, max, count_distinct, quantile
	q                 float64
}

func (m veMeasure) expr() string {
	switch m.kind {
	case "count":
		return "count()"
	case "quantile":
		return fmt.Sprintf("quantile(%s, %g)", m.field, m.q)
	}
	return m.kind + "(" + m.field + ")"
}

func (m veMeasure) sketch() bool { return m.kind == "count_distinct" || m.kind == "quantile" }

// veView is a view as the test declares it.
type veView struct {
	name     string
	window   time.Duration
	groupBy  []string
	positive bool // where "amount > 0"
	measures []veMeasure
}

func (v veView) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "  %s:\n    stream: orders\n    window: %s\n", v.name, veDuration(v.window))
	if len(v.groupBy) > 0 {
		fmt.Fprintf(&b, "    group_by: [%s]\n", strings.Join(v.groupBy, ", "))
	}
	if v.positive {
		b.WriteString("    where: \"amount > 0\"\n")
	}
	b.WriteString("    measures:\n")
	for _, m := range v.measures {
		fmt.Fprintf(&b, "      %s: %s\n", m.name, m.expr())
	}
	return b.String()
}

func (v veView) sketches() bool {
	return slices.ContainsFunc(v.measures, veMeasure.sketch)
}

func veDuration(d time.Duration) string {
	if d%time.Hour == 0 {
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return fmt.Sprintf("%dm", d/time.Minute)
}

// veEvent is an order as the test sends it.
type veEvent struct {
	ts      time.Time
	id      string
	country string
	device  string
	amount  float64
	qty     int64
	email   string
	post    int // the POST that carried it
}

func (e veEvent) dim(name string) string {
	switch name {
	case "country":
		return e.country
	case "device":
		return e.device
	}
	panic("unknown dimension " + name)
}

func (e veEvent) num(field string) float64 {
	switch field {
	case "amount":
		return e.amount
	case "qty":
		return float64(e.qty)
	}
	panic("unknown field " + field)
}

// vePost is one ingest request: its events arrived in the log between
// sent and acked.
type vePost struct {
	events      []veEvent
	sent, acked time.Time
}

// vePhase is one start of braid up: its views, how each view's definition
// compares with the previous phase's ("same", "changed", "new"), and the
// events sent once it serves.
type vePhase struct {
	name      string
	views     []veView
	defs      map[string]string
	lock      bool // hold the batch run lock at start: the changed view cannot be whole until it is released
	newEvents int
}

// veSeq is one run of phases over one data_dir.
type veSeq struct {
	t        *testing.T
	own      bool // Redis started by braid up itself
	st       *testenv.Stack
	ext      *testenv.Redis // the Redis that outlives braid (nil when own)
	cfgPath  string
	head     string // the configuration up to the views
	base     string
	ns       string
	dataDir  string
	rng      *rand.Rand
	t0       time.Time // the first hour of ordinary event times
	posts    []*vePost
	required []int // posts every answer must count
	optional []int // posts an answer may count or not, per row
	proc     *testenv.Proc
	defs     map[string]string   // each view's definition in the running phase
	history  map[string][]string // definitions per view and phase, in phase order
	client   *http.Client
}

var (
	veCountryValues = []string{"DE", "FR", "US", "JP"}
	veDeviceValues  = []string{"ios", "android", "web"}
)

// events makes n orders with event times in [from, from+span).
func (s *veSeq) events(n int, from time.Time, span time.Duration) []veEvent {
	out := make([]veEvent, n)
	for i := range out {
		amount := float64(100+s.rng.IntN(49900)) / 100
		if s.rng.IntN(12) == 0 {
			amount = -amount // a refund: the views with `where: amount > 0` leave it out
		}
		out[i] = veEvent{
			ts:      from.Add(time.Duration(s.rng.Int64N(int64(span)))).Truncate(time.Millisecond),
			id:      fmt.Sprintf("%s-%d", s.ns, s.rng.Uint64()),
			country: veCountryValues[s.rng.IntN(len(veCountryValues))],
			device:  veDeviceValues[s.rng.IntN(len(veDeviceValues))],
			amount:  amount,
			qty:     int64(1 + s.rng.IntN(5)),
			email:   fmt.Sprintf("buyer%d@example.com", s.rng.IntN(60)),
		}
	}
	return out
}

// post sends events in one request; they become optional (an answer may
// count them or not until they are required).
func (s *veSeq) post(evs []veEvent) int {
	s.t.Helper()
	p := &vePost{}
	idx := len(s.posts)
	var b bytes.Buffer
	for i := range evs {
		evs[i].post = idx
		j, _ := json.Marshal(map[string]any{"ts": evs[i].ts.UTC().Format(time.RFC3339Nano), "id": evs[i].id, "country": evs[i].country,
			"device": evs[i].device, "amount": evs[i].amount, "qty": evs[i].qty, "email": evs[i].email})
		b.Write(j)
		b.WriteByte('\n')
	}
	p.events = evs
	p.sent = time.Now()
	var r ingestResp
	if code := httpJSON(s.t, "POST", s.base+"/v1/streams/orders/events", "application/x-ndjson", b.Bytes(), &r); code != 200 || r.Accepted != len(evs) || r.Rejected != 0 {
		s.t.Fatalf("ingest: status %d, %+v", code, r)
	}
	p.acked = time.Now()
	s.posts = append(s.posts, p)
	s.optional = append(s.optional, idx)
	return idx
}

// settle makes every optional post required.
func (s *veSeq) settle() {
	s.required = append(s.required, s.optional...)
	s.optional = nil
}

// writeViews writes the configuration with the phase's views.
func (s *veSeq) writeViews(views []veView) {
	var b strings.Builder
	b.WriteString(s.head)
	b.WriteString("views:\n")
	for _, v := range views {
		b.WriteString(v.yaml())
	}
	writeFile(s.t, s.cfgPath, b.String())
}

// expRow is the expected content of one answer row: the events it counts.
type expRow struct {
	events []veEvent
}

// expRows groups the events of the given posts the way view v does.
func (s *veSeq) expRows(v veView, posts []int) map[string]*expRow {
	out := map[string]*expRow{}
	for _, pi := range posts {
		for _, e := range s.posts[pi].events {
			if v.positive && !(e.amount > 0) {
				continue
			}
			w := e.ts.UTC().Truncate(v.window)
			dims := make([]string, len(v.groupBy))
			for i, g := range v.groupBy {
				dims[i] = e.dim(g)
			}
			k := w.Format(time.RFC3339Nano) + "|" + strings.Join(dims, "|")
			r := out[k]
			if r == nil {
				r = &expRow{}
				out[k] = r
			}
			r.events = append(r.events, e)
		}
	}
	return out
}

// veValue is a measure computed from events: its exact value, and for
// a sketch how far an estimate may be from it.
func veValue(m veMeasure, evs []veEvent) (want, bound float64) {
	switch m.kind {
	case "count":
		return float64(len(evs)), 0
	case "sum", "avg":
		var sum float64
		for _, e := range evs {
			sum += e.num(m.field)
		}
		if m.kind == "avg" {
			return sum / float64(len(evs)), 0
		}
		return sum, 0
	case "min", "max":
		x := evs[0].num(m.field)
		for _, e := range evs[1:] {
			if m.kind == "min" {
				x = math.Min(x, e.num(m.field))
			} else {
				x = math.Max(x, e.num(m.field))
			}
		}
		return x, 0
	case "count_distinct":
		seen := map[string]bool{}
		for _, e := range evs {
			seen[e.email] = true
		}
		n := float64(len(seen))
		return n, 0.0243*n + 2 // the stated bound: 3 standard errors of 0.81%, plus 2
	case "quantile":
		xs := make([]float64, len(evs))
		for i, e := range evs {
			xs[i] = e.num(m.field)
		}
		slices.Sort(xs)
		r := m.q * float64(len(xs)-1)
		lo, hi := int(math.Floor(r)), int(math.Ceil(r))
		q := xs[lo] + (r-float64(lo))*(xs[hi]-xs[lo])
		return q, 0.01*math.Max(math.Abs(xs[lo]), math.Abs(xs[hi]))*(1+1e-9) + 1e-9 // within 1% of max(|v_lo|, |v_hi|)
	}
	panic("unknown measure kind " + m.kind)
}

func near(got, want, tol float64) bool {
	return math.Abs(got-want) <= tol+1e-9*math.Max(1, math.Abs(want))
}

// sides tells, for the events of a row, how many arrived before the batch
// cutoff, after it, and how many may lie on either side (their request was
// in flight across it), from the times of their requests.
func (s *veSeq) sides(evs []veEvent, cutoff time.Time) (batch, speed, either int) {
	for _, e := range evs {
		p := s.posts[e.post]
		switch {
		case cutoff.IsZero() || !p.sent.Before(cutoff):
			speed++
		case p.acked.Before(cutoff):
			batch++
		default:
			either++
		}
	}
	return
}

// checkRow compares an answer row with the expected one: every measure,
// exact, and the source (from when its events arrived relative to the
// cutoff).
func (s *veSeq) checkRow(v veView, row map[string]any, exp *expRow, cutoff time.Time) string {
	src, _ := row["source"].(string)
	exact, ok := row["exact"].(bool)
	if !ok {
		return fmt.Sprintf("exact = %v", row["exact"])
	}
	for _, m := range v.measures {
		want, bound := veValue(m, exp.events)
		got, ok := row[m.name].(float64)
		if !ok {
			return fmt.Sprintf("%s = %v (%T), want %v", m.name, row[m.name], row[m.name], want)
		}
		tol := 0.0
		if m.sketch() && !exact {
			tol = bound
		}
		if !near(got, want, tol) {
			return fmt.Sprintf("%s (%s) = %v, want %v (within %v; exact %v, source %s)", m.name, m.expr(), got, want, tol, exact, src)
		}
	}
	if !v.sketches() && !exact {
		return "exact is false in a view of additive measures"
	}
	if src == "batch" && !exact {
		return "exact is false in a row the batch layer answers alone"
	}
	nb, ns, ne := s.sides(exp.events, cutoff)
	canBatch, canSpeed := nb+ne > 0, ns+ne > 0
	okSrc := map[string]bool{
		"batch":       canBatch && ns == 0,
		"speed":       canSpeed && nb == 0,
		"batch+speed": canBatch && canSpeed && nb+ns+ne >= 2,
	}[src]
	if !okSrc {
		return fmt.Sprintf("source %q, but %d of its events arrived before the cutoff %s, %d after, %d around it", src, nb, cutoff.Format(time.RFC3339), ns, ne)
	}
	return ""
}

// veSubsets lists every subset of xs (xs is small).
func veSubsets(xs []int) [][]int {
	out := [][]int{nil}
	for _, x := range xs {
		for _, s := range out[:len(out):len(out)] {
			out = append(out, append(slices.Clip(s), x))
		}
	}
	return out
}

// checkRows checks an answer's rows: each row must be what the required
// posts and some of the optional ones give (the same optional events are
// in a row wholly or not at all), and no row of the required posts may be
// missing. complete is true when the answer counts every post.
func (s *veSeq) checkRows(v veView, rows []map[string]any, cutoff time.Time) (complete bool, problem string) {
	combos := veSubsets(s.optional)
	exps := make([]map[string]*expRow, len(combos))
	for i, c := range combos {
		exps[i] = s.expRows(v, append(slices.Clip(s.required), c...))
	}
	all := exps[len(exps)-1]
	complete = len(rows) == len(all)
	seen := map[string]bool{}
	for _, row := range rows {
		dims := make([]string, len(v.groupBy))
		for i, g := range v.groupBy {
			d, _ := row[g].(string)
			dims[i] = d
		}
		k := fmt.Sprint(row["window_start"]) + "|" + strings.Join(dims, "|")
		if seen[k] {
			return false, "row " + k + " twice"
		}
		seen[k] = true
		var why string
		matched := false
		for i := len(exps) - 1; i >= 0 && !matched; i-- {
			exp := exps[i][k]
			if exp == nil {
				continue
			}
			msg := s.checkRow(v, row, exp, cutoff)
			if msg == "" {
				matched = true
				if i != len(exps)-1 {
					complete = false
				}
			} else if why == "" {
				why = msg
			}
		}
		if !matched {
			if why == "" {
				why = "no such row in the events sent"
			}
			return false, fmt.Sprintf("row %s: %s: %v", k, why, row)
		}
	}
	for k := range exps[0] {
		if !seen[k] {
			return false, fmt.Sprintf("row %s is missing (%d events acknowledged before it count there)", k, len(exps[0][k].events))
		}
	}
	return complete, ""
}

// queryURL asks for a view over the whole range: from the late events'
// hour to past the last window.
func (s *veSeq) queryURL(v veView, format string) string {
	q := url.Values{}
	q.Set("from", s.t0.Add(-6*time.Hour).Format(time.RFC3339))
	q.Set("to", s.t0.Add(4*time.Hour).Format(time.RFC3339))
	if format != "" {
		q.Set("format", format)
	}
	return s.base + "/v1/views/" + v.name + "?" + q.Encode()
}

type veResp struct {
	code   int
	header http.Header
	body   []byte
	err    error
}

func (s *veSeq) get(u string) veResp {
	resp, err := s.client.Get(u)
	if err != nil {
		return veResp{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return veResp{code: resp.StatusCode, header: resp.Header, body: b, err: err}
}

// viewAnswer is what one query of a view gave.
type viewAnswer struct {
	up         bool // the server answered
	ok         bool // 200
	complete   bool // 200 with every post counted
	rebuilding bool // 503 view rebuilding
}

// queryView asks a view for the whole range and checks the answer; any
// wrong answer fails the test.
func (s *veSeq) queryView(v veView) viewAnswer {
	s.t.Helper()
	r := s.get(s.queryURL(v, ""))
	if r.err != nil {
		return viewAnswer{}
	}
	switch r.code {
	case 200:
		var a struct {
			View        string           `json:"view"`
			Definition  string           `json:"definition"`
			BatchCutoff *string          `json:"batch_cutoff"`
			Rows        []map[string]any `json:"rows"`
		}
		if err := json.Unmarshal(r.body, &a); err != nil {
			s.t.Fatalf("%s: %v: %s", v.name, err, r.body)
		}
		def := s.defs[v.name]
		if a.View != v.name || a.Definition != def || r.header.Get("Braid-View-Definition") != def {
			s.t.Fatalf("%s: answer of view %q, definition %q, header %q; want definition %q", v.name, a.View, a.Definition, r.header.Get("Braid-View-Definition"), def)
		}
		var cutoff time.Time
		if a.BatchCutoff != nil {
			var err error
			if cutoff, err = time.Parse(time.RFC3339Nano, *a.BatchCutoff); err != nil {
				s.t.Fatalf("%s: batch_cutoff %q: %v", v.name, *a.BatchCutoff, err)
			}
		}
		complete, problem := s.checkRows(v, a.Rows, cutoff)
		if problem != "" {
			s.t.Fatalf("%s answered 200 wrongly (definition %s, batch_cutoff %v): %s", v.name, def, cutoff, problem)
		}
		return viewAnswer{up: true, ok: true, complete: complete}
	case 503:
		var e struct {
			Error    string   `json:"error"`
			Progress *float64 `json:"progress"`
		}
		if err := json.Unmarshal(r.body, &e); err != nil || e.Error != "view rebuilding" || e.Progress == nil || *e.Progress < 0 || *e.Progress > 1 || r.header.Get("Retry-After") == "" {
			s.t.Fatalf("%s: 503 %s (Retry-After %q), want view rebuilding with progress in 0..1", v.name, r.body, r.header.Get("Retry-After"))
		}
		return viewAnswer{up: true, rebuilding: true}
	}
	s.t.Fatalf("%s: status %d: %s", v.name, r.code, r.body)
	return viewAnswer{}
}

// viewsInfo reads GET /v1/views: each view's definition and measure names.
func (s *veSeq) viewsInfo() (map[string]string, map[string][]string) {
	s.t.Helper()
	var vs struct {
		Views []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
			Measures   []struct {
				Name string `json:"name"`
			} `json:"measures"`
		} `json:"views"`
	}
	if code := httpJSON(s.t, "GET", s.base+"/v1/views", "", nil, &vs); code != 200 {
		s.t.Fatalf("GET /v1/views: %d", code)
	}
	defs, measures := map[string]string{}, map[string][]string{}
	for _, v := range vs.Views {
		defs[v.Name] = v.Definition
		for _, m := range v.Measures {
			measures[v.Name] = append(measures[v.Name], m.Name)
		}
	}
	return defs, measures
}

var hexDef = regexp.MustCompile(`^[0-9a-f]{16}$`)

// checkDefinitions checks GET /v1/views against the phase: the views and
// their measures in declared order, and each definition the same as in the
// previous phase, changed, or new, as the edit should make it.
func (s *veSeq) checkDefinitions(ph vePhase, prev map[string]string) {
	s.t.Helper()
	defs, measures := s.viewsInfo()
	if len(defs) != len(ph.views) {
		s.t.Fatalf("%s: GET /v1/views lists %v, want %d views", ph.name, defs, len(ph.views))
	}
	for _, v := range ph.views {
		def := defs[v.name]
		var names []string
		for _, m := range v.measures {
			names = append(names, m.name)
		}
		if !hexDef.MatchString(def) || !slices.Equal(measures[v.name], names) {
			s.t.Fatalf("%s: view %s: definition %q, measures %v; want 16 hex digits and %v", ph.name, v.name, def, measures[v.name], names)
		}
		old, had := prev[v.name]
		switch want := ph.defs[v.name]; {
		case want == "same" && def != old, want == "changed" && (!had || def == old), want == "new" && had:
			s.t.Fatalf("%s: view %s has definition %s, before %s (%v); want it %s", ph.name, v.name, def, old, had, want)
		case want == "":
			s.t.Fatalf("%s: no expectation for the definition of %s", ph.name, v.name)
		}
		s.history[v.name] = append(s.history[v.name], def)
	}
	s.defs = defs
}

// viewStatus reads the views part of GET /v1/status.
func (s *veSeq) viewStatus() map[string]struct {
	State      string   `json:"state"`
	Progress   *float64 `json:"progress"`
	Definition string   `json:"definition"`
} {
	var st struct {
		Views map[string]struct {
			State      string   `json:"state"`
			Progress   *float64 `json:"progress"`
			Definition string   `json:"definition"`
		} `json:"views"`
	}
	r := s.get(s.base + "/v1/status")
	if r.err != nil {
		return nil
	}
	if r.code != 200 || json.Unmarshal(r.body, &st) != nil {
		s.t.Fatalf("GET /v1/status: %d %s", r.code, r.body)
	}
	return st.Views
}

// runLock takes the batch layer's run lock as another process's run would.
func (s *veSeq) runLock() (unlock func()) {
	s.t.Helper()
	f, err := os.OpenFile(filepath.Join(s.dataDir, "batch", "RUNLOCK"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		s.t.Fatalf("batch run lock: %v", err)
	}
	return func() { f.Close() }
}

var redisURLLine = regexp.MustCompile(`msg="started redis-server" url=(redis://\S+)`)

// redis connects to the Redis the running braid uses.
func (s *veSeq) redis() *redis.Client {
	s.t.Helper()
	if !s.own {
		return s.ext.Client(s.t)
	}
	m := redisURLLine.FindAllStringSubmatch(s.proc.Output(), -1)
	if len(m) != 1 {
		s.t.Fatalf("braid up started %d redis-servers, want 1", len(m))
	}
	opt, err := redis.ParseURL(m[0][1])
	if err != nil {
		s.t.Fatal(err)
	}
	c := redis.NewClient(opt)
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// stateLeft lists the speed state in Redis of a state key prefix
// ("{view}@" or "{view}@{definition}"): its keys and its fields in the
// stream's position.
func (s *veSeq) stateLeft(rdb *redis.Client, prefix string) []string {
	ctx := context.Background()
	var keys []string
	it := rdb.Scan(ctx, 0, s.ns+":v:"+speedstore.Tag("orders", 0)+":"+prefix+"*", 1000).Iterator()
	for it.Next(ctx) {
		keys = append(keys, it.Val())
	}
	if err := it.Err(); err != nil {
		s.t.Fatal(err)
	}
	fields, err := rdb.HKeys(ctx, s.ns+":pos:"+speedstore.Tag("orders", 0)).Result()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, f := range fields {
		if _, k, ok := strings.Cut(f, ":"); ok && strings.HasPrefix(k, prefix) {
			keys = append(keys, "pos field "+f)
		}
	}
	return keys
}

// batchRun runs a batch over every view and waits for it.
func (s *veSeq) batchRun() {
	s.t.Helper()
	var run batchRun
	if code := httpJSON(s.t, "POST", s.base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 || run.Status != "succeeded" || run.covers() != "true" {
		s.t.Fatalf("batch run: status %d, %+v (covers_request %s)", code, run, run.covers())
	}
}

// allBatch checks that every row of every view is answered by the batch
// layer alone, exactly (sketch measures included).
func (s *veSeq) allBatch(views []veView) {
	s.t.Helper()
	for _, v := range views {
		if a := s.queryView(v); !a.complete {
			s.t.Fatalf("%s: not whole after a batch run", v.name)
		}
		var a queryResp
		if code := httpJSON(s.t, "GET", s.queryURL(v, ""), "", nil, &a); code != 200 {
			s.t.Fatalf("%s: status %d after a batch run", v.name, code)
		}
		for _, row := range a.Rows {
			if row["source"] != "batch" || row["exact"] != true {
				s.t.Fatalf("%s after a batch run that covers every event: row %v", v.name, row)
			}
		}
	}
}

// checkFormats checks the CSV and Arrow answers of a view once it is
// whole: the definition header, the CSV columns in declared order and its
// rows (against the same computation), the Arrow schema's definition.
func (s *veSeq) checkFormats(v veView) {
	s.t.Helper()
	def := s.defs[v.name]
	r := s.get(s.queryURL(v, "csv"))
	if r.err != nil || r.code != 200 || r.header.Get("Braid-View-Definition") != def {
		s.t.Fatalf("%s as CSV: %v %d, definition header %q, want %q", v.name, r.err, r.code, r.header.Get("Braid-View-Definition"), def)
	}
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || len(recs) == 0 {
		s.t.Fatalf("%s as CSV: %v: %s", v.name, err, r.body)
	}
	head := append([]string{"window_start"}, v.groupBy...)
	for _, m := range v.measures {
		head = append(head, m.name)
	}
	head = append(head, "source", "exact", "final")
	if !slices.Equal(recs[0], head) {
		s.t.Fatalf("%s as CSV: header %v, want %v", v.name, recs[0], head)
	}
	var rows []map[string]any
	for _, rec := range recs[1:] {
		row := map[string]any{}
		for i, col := range head {
			switch {
			case i <= len(v.groupBy) || col == "source":
				row[col] = rec[i]
			case col == "exact" || col == "final":
				row[col] = rec[i] == "true"
			default:
				x, err := strconv.ParseFloat(rec[i], 64)
				if err != nil {
					s.t.Fatalf("%s as CSV: %s = %q", v.name, col, rec[i])
				}
				row[col] = x
			}
		}
		rows = append(rows, row)
	}
	if complete, problem := s.checkRowsValues(v, rows); problem != "" || !complete {
		s.t.Fatalf("%s as CSV: complete %v: %s", v.name, complete, problem)
	}
	r = s.get(s.queryURL(v, "arrow"))
	if r.err != nil || r.code != 200 || r.header.Get("Braid-View-Definition") != def {
		s.t.Fatalf("%s as Arrow: %v %d, definition header %q, want %q", v.name, r.err, r.code, r.header.Get("Braid-View-Definition"), def)
	}
	rd, err := ipc.NewReader(bytes.NewReader(r.body))
	if err != nil {
		s.t.Fatalf("%s as Arrow: %v", v.name, err)
	}
	defer rd.Release()
	md := rd.Schema().Metadata()
	if i := md.FindKey("definition"); i < 0 || md.Values()[i] != def {
		s.t.Fatalf("%s as Arrow: schema metadata %v, want definition %s", v.name, md, def)
	}
	n := 0
	for rd.Next() {
		n += int(rd.RecordBatch().NumRows())
	}
	if n != len(rows) {
		s.t.Fatalf("%s as Arrow: %d rows, CSV has %d", v.name, n, len(rows))
	}
	// Live: the first event is a snapshot of every row.
	ch, cancel := openSSE(s.t, strings.Replace(s.queryURL(v, ""), "/v1/views/"+v.name+"?", "/v1/views/"+v.name+"/live?", 1), "")
	defer cancel()
	select {
	case ev := <-ch:
		var live []map[string]any
		if ev.Event != "snapshot" || json.Unmarshal([]byte(ev.Data), &live) != nil {
			s.t.Fatalf("%s live: first event %s %.200s, want a snapshot", v.name, ev.Event, ev.Data)
		}
		if complete, problem := s.checkRowsValues(v, live); problem != "" || !complete {
			s.t.Fatalf("%s live snapshot: complete %v: %s", v.name, complete, problem)
		}
	case <-time.After(60 * time.Second):
		s.t.Fatalf("%s live: no snapshot within 60s", v.name)
	}
}

// liveRebuilding checks that the live push of a view that cannot be whole
// yet answers 503 view rebuilding.
func (s *veSeq) liveRebuilding(v veView) {
	s.t.Helper()
	u := strings.Replace(s.queryURL(v, ""), "/v1/views/"+v.name+"?", "/v1/views/"+v.name+"/live?", 1)
	resp, err := s.client.Get(u)
	if err != nil {
		s.t.Fatalf("live push of %s: %v", v.name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 503 {
		s.t.Fatalf("live push of %s while it rebuilds: %d, want 503 view rebuilding", v.name, resp.StatusCode)
	}
	b, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(b), `"view rebuilding"`) {
		s.t.Fatalf("live push of %s while it rebuilds: 503 %s, want view rebuilding", v.name, b)
	}
}

// checkRowsValues checks that rows count every post, without the source
// check (for answers that carry no cutoff).
func (s *veSeq) checkRowsValues(v veView, rows []map[string]any) (bool, string) {
	all := s.expRows(v, append(slices.Clip(s.required), s.optional...))
	if len(rows) != len(all) {
		return false, fmt.Sprintf("%d rows, want %d", len(rows), len(all))
	}
	for _, row := range rows {
		dims := make([]string, len(v.groupBy))
		for i, g := range v.groupBy {
			dims[i], _ = row[g].(string)
		}
		k := fmt.Sprint(row["window_start"]) + "|" + strings.Join(dims, "|")
		exp := all[k]
		if exp == nil {
			return false, "unexpected row " + k
		}
		exact, _ := row["exact"].(bool)
		for _, m := range v.measures {
			want, bound := veValue(m, exp.events)
			tol := 0.0
			if m.sketch() && !exact {
				tol = bound
			}
			if got, ok := row[m.name].(float64); !ok || !near(got, want, tol) {
				return false, fmt.Sprintf("row %s: %s = %v, want %v", k, m.name, row[m.name], want)
			}
		}
	}
	return true, ""
}

// runPhase starts braid up with the phase's views and polls every view and
// /v1/status, checking each answer, until every view answers 200 with every
// event sent; then it checks the definitions, the formats and what is left
// of old state in Redis, and stops braid.
func (s *veSeq) runPhase(ph vePhase, prevViews []veView, before func()) {
	t := s.t
	t.Helper()
	prev := s.defs
	s.writeViews(ph.views)
	var unlock func()
	if ph.lock {
		unlock = s.runLock()
	}
	started := time.Now()
	s.proc = s.st.Spawn("up")
	var (
		up                 bool
		seenRebuilding     = map[string]bool{} // a 503 view rebuilding
		statusRebuilding   = map[string]bool{}
		answeredWhileOther = map[string]bool{} // a 200 while another view was rebuilding
		polls              int
	)
	deadline := time.Now().Add(90 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the views are not whole after 90s (up %v, rebuilding seen %v)", ph.name, up, seenRebuilding)
		}
		if !up {
			if r := s.get(s.base + "/v1/views"); r.err != nil {
				if syscall.Kill(s.proc.Cmd.Process.Pid, 0) != nil {
					t.Fatalf("%s: braid up exited", ph.name)
				}
				time.Sleep(20 * time.Millisecond)
				continue
			}
			// Serving: learn the definitions, then send the phase's events
			// while the edited views rebuild.
			up = true
			s.checkDefinitions(ph, prev)
			if before != nil {
				before()
			}
			if ph.newEvents > 0 {
				for range 2 {
					s.post(s.events(ph.newEvents/2, s.t0, 2*time.Hour))
				}
			}
		}
		answers := map[string]viewAnswer{}
		for _, v := range ph.views {
			answers[v.name] = s.queryView(v)
		}
		polls++
		st := s.viewStatus()
		for _, v := range ph.views {
			vs, ok := st[v.name]
			if !ok || vs.Definition != s.defs[v.name] || vs.Progress == nil || *vs.Progress < 0 || *vs.Progress > 1 ||
				(vs.State != "ready" && vs.State != "rebuilding") || (vs.State == "ready" && *vs.Progress != 1) {
				t.Fatalf("%s: /v1/status of %s: %+v (progress %v), definition want %s", ph.name, v.name, vs, vs.Progress, s.defs[v.name])
			}
			if vs.State == "rebuilding" {
				statusRebuilding[v.name] = true
			}
			if answers[v.name].rebuilding {
				seenRebuilding[v.name] = true
			}
		}
		for name, a := range answers {
			if !a.ok {
				continue
			}
			for other, b := range answers {
				if other != name && b.rebuilding {
					answeredWhileOther[name] = true
				}
			}
		}
		if unlock != nil {
			// Held: the changed views cannot have batch rows of their
			// definition, so they must be rebuilding, the others answering.
			done := true
			for _, v := range ph.views {
				switch ph.defs[v.name] {
				case "changed", "new":
					done = done && seenRebuilding[v.name] && statusRebuilding[v.name]
				default:
					done = done && answers[v.name].ok
				}
			}
			if r := s.get(s.base + "/readyz"); r.err != nil || r.code != 200 {
				t.Fatalf("%s: /readyz %d %v while a view rebuilds, want 200", ph.name, r.code, r.err)
			}
			for _, v := range ph.views {
				if d := ph.defs[v.name]; d == "changed" || d == "new" {
					s.liveRebuilding(v)
				}
			}
			if done {
				unlock()
				unlock = nil
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		whole := true
		for _, a := range answers {
			whole = whole && a.complete
		}
		if whole {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(started)
	s.settle()
	// Ready now, everywhere.
	st := s.viewStatus()
	if len(st) != len(ph.views) {
		t.Fatalf("%s: /v1/status lists views %v, want %d", ph.name, st, len(ph.views))
	}
	for name, vs := range st {
		if vs.State != "ready" {
			t.Fatalf("%s: view %s answers whole but /v1/status says %+v", ph.name, name, vs)
		}
	}
	for _, v := range ph.views {
		s.checkFormats(v)
	}
	// The state of removed views and of old definitions leaves Redis.
	rdb := s.redis()
	var gone []string
	for _, v := range prevViews {
		switch {
		case !slices.ContainsFunc(ph.views, func(w veView) bool { return w.name == v.name }):
			gone = append(gone, v.name+"@")
		case ph.defs[v.name] == "changed":
			gone = append(gone, v.name+"@"+prev[v.name])
		}
	}
	for _, g := range gone {
		eventually(t, ph.name+": speed state of "+g+" deleted", 30*time.Second, func() string {
			if left := s.stateLeft(rdb, g); len(left) > 0 {
				return fmt.Sprintf("%d left: %v", len(left), left[:min(len(left), 5)])
			}
			return ""
		})
	}
	for _, v := range ph.views {
		if left := s.stateLeft(rdb, v.name+"@"+s.defs[v.name]); len(left) == 0 {
			t.Fatalf("%s: no speed state of %s@%s in Redis", ph.name, v.name, s.defs[v.name])
		}
	}
	t.Logf("%s: whole after %v, %d polls; 503 view rebuilding seen for %v, status rebuilding for %v, 200 beside a rebuilding view for %v",
		ph.name, took.Round(time.Millisecond), polls, veKeys(seenRebuilding), veKeys(statusRebuilding), veKeys(answeredWhileOther))
	for _, v := range ph.views {
		if ph.lock && (ph.defs[v.name] == "changed" || ph.defs[v.name] == "new") && !answeredWhileOther[veOther(ph.views, v.name)] {
			t.Fatalf("%s: no view answered while %s was rebuilding", ph.name, v.name)
		}
	}
}

func veOther(views []veView, name string) string {
	for _, v := range views {
		if v.name != name {
			return v.name
		}
	}
	return ""
}

func veKeys(m map[string]bool) []string {
	var out []string
	for k, ok := range m {
		if ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func (s *veSeq) stop(name string) {
	s.t.Helper()
	if err := s.proc.Stop(s.t); err != nil {
		s.t.Fatalf("%s: SIGTERM: braid exited with %v", name, err)
	}
}

// The views of each phase.
var (
	veCount  = veMeasure{name: "n", kind: "count"}
	veTotal  = veMeasure{name: "total", kind: "sum", field: "amount"}
	veAvg    = veMeasure{name: "avg_amount", kind: "avg", field: "amount"}
	veHiMax  = veMeasure{name: "hi", kind: "max", field: "amount"}
	veLoMin  = veMeasure{name: "lo", kind: "min", field: "amount"}
	veHiMin  = veMeasure{name: "hi", kind: "min", field: "amount"}
	veLoMax  = veMeasure{name: "lo", kind: "max", field: "amount"}
	veQtyTot = veMeasure{name: "total", kind: "sum", field: "qty"}
	veTopQty = veMeasure{name: "top_qty", kind: "max", field: "qty"}

	veBuyers = veView{name: "buyers", window: time.Hour, measures: []veMeasure{
		veCount, {name: "buyers", kind: "count_distinct", field: "email"}, {name: "median", kind: "quantile", field: "amount", q: 0.5}}}
	veDevices = veView{name: "devices", window: 30 * time.Minute, groupBy: []string{"device"}, measures: []veMeasure{
		veCount, {name: "spend", kind: "sum", field: "amount"}, {name: "units", kind: "sum", field: "qty"},
		{name: "people", kind: "count_distinct", field: "email"}, {name: "p90", kind: "quantile", field: "amount", q: 0.9}}}
)

func veStats(window time.Duration, groupBy []string, ms ...veMeasure) veView {
	return veView{name: "stats", window: window, groupBy: groupBy, positive: true, measures: ms}
}

func vePhases() []vePhase {
	country := []string{"country"}
	return []vePhase{
		{name: "start", views: []veView{veStats(time.Minute, country, veCount, veTotal, veAvg, veHiMax, veLoMin), veBuyers},
			defs: map[string]string{"stats": "new", "buyers": "new"}},
		{name: "edit 1: max and min swap places", views: []veView{veStats(time.Minute, country, veCount, veTotal, veAvg, veLoMin, veHiMax), veBuyers},
			defs: map[string]string{"stats": "same", "buyers": "same"}, newEvents: 30},
		{name: "edit 2: hi and lo swap expressions", views: []veView{veStats(time.Minute, country, veCount, veTotal, veAvg, veHiMin, veLoMax), veBuyers},
			defs: map[string]string{"stats": "same", "buyers": "same"}, newEvents: 30},
		{name: "edit 3: total sums qty", views: []veView{veStats(time.Minute, country, veCount, veQtyTot, veAvg, veHiMin, veLoMax), veBuyers},
			defs: map[string]string{"stats": "changed", "buyers": "same"}, newEvents: 30, lock: true},
		{name: "edit 4: 5-minute windows", views: []veView{veStats(5*time.Minute, country, veCount, veQtyTot, veAvg, veHiMin, veLoMax), veBuyers},
			defs: map[string]string{"stats": "changed", "buyers": "same"}, newEvents: 30},
		{name: "edit 5: a measure more, grouped by country and device", views: []veView{veStats(5*time.Minute, []string{"country", "device"}, veCount, veQtyTot, veAvg, veHiMin, veLoMax, veTopQty), veBuyers},
			defs: map[string]string{"stats": "changed", "buyers": "same"}, newEvents: 30, lock: true},
		{name: "edit 6: buyers removed, devices added", views: []veView{veStats(5*time.Minute, []string{"country", "device"}, veCount, veQtyTot, veAvg, veHiMin, veLoMax, veTopQty), veDevices},
			defs: map[string]string{"stats": "same", "devices": "new"}, newEvents: 30, lock: true},
		{name: "edit 7: stats back to edit 3", views: []veView{veStats(time.Minute, country, veCount, veQtyTot, veAvg, veHiMin, veLoMax), veDevices},
			defs: map[string]string{"stats": "changed", "devices": "same"}, newEvents: 30},
	}
}

// TestViewEdits: views edited between restarts of braid up — measures
// reordered, expressions swapped between names, a measure's expression
// changed, the window changed, a measure added and the grouping changed, a
// view removed and another added — with the speed state in a Redis that
// outlives braid, and in the redis-server braid up starts itself (which
// loses it at every restart). Every answer on the way is checked against a
// computation from the events sent: a view answers 200 with the meaning of
// today's configuration and every event acknowledged before, or 503 view
// rebuilding; /v1/views and /v1/status show the definitions and states;
// the state of removed views and old definitions leaves Redis.
func TestViewEdits(t *testing.T) {
	nats := testenv.StartNATS(t)
	history := map[string]map[string][]string{}
	t.Run("modes", func(t *testing.T) {
		for _, own := range []bool{false, true} {
			name := "outliving-redis"
			if own {
				name = "own-redis"
			}
			h := map[string][]string{}
			history[name] = h
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				runViewEdits(t, nats, own, h)
			})
		}
	})
	if t.Failed() {
		return
	}
	// The definitions depend on the views alone, not on where their state lives.
	a, b := history["outliving-redis"], history["own-redis"]
	for _, v := range []string{"stats", "buyers", "devices"} {
		if !slices.Equal(a[v], b[v]) || len(a[v]) == 0 {
			t.Errorf("definitions of %s: %v with a Redis of its own, %v with braid's", v, a[v], b[v])
		}
	}
}

func runViewEdits(t *testing.T, nats *testenv.NATS, own bool, history map[string][]string) {
	s := &veSeq{t: t, own: own, history: history, client: &http.Client{Timeout: 30 * time.Second}}
	opts := []testenv.Option{testenv.SharedNATS(nats)}
	if own {
		opts = append(opts, testenv.WithoutRedis())
	}
	phases := vePhases()
	st := testenv.NewStack(t, veCatalog().YAML(), opts...)
	s.st, s.ext, s.cfgPath, s.base, s.dataDir, s.ns = st, st.Redis, st.Config, st.Base, st.DataDir, st.Namespace
	cfg, err := os.ReadFile(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s.head = string(cfg)
	seed := uint64(time.Now().UnixNano())
	if env := os.Getenv("BRAID_VIEWEDIT_SEED"); env != "" {
		var err error
		if seed, err = strconv.ParseUint(env, 10, 64); err != nil {
			t.Fatalf("BRAID_VIEWEDIT_SEED: %v", err)
		}
	}
	t.Logf("seed %d (BRAID_VIEWEDIT_SEED replays it)", seed)
	s.rng = rand.New(rand.NewPCG(seed, 7))
	s.t0 = time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)

	// Start: 300 orders over two hours and, after them, 12 from four to five
	// hours before (too late for the speed layer: the first batch run counts
	// them).
	start := phases[0]
	var late int
	s.runPhase(start, nil, func() {
		s.post(s.events(150, s.t0, 2*time.Hour))
		s.post(s.events(150, s.t0, 2*time.Hour))
		late = s.post(s.events(12, s.t0.Add(-5*time.Hour), time.Hour))
		s.optional = slices.DeleteFunc(s.optional, func(p int) bool { return p == late }) // counted by no answer until a batch run
	})
	s.batchRun()
	s.required = append(s.required, late)
	s.allBatch(start.views)
	// More orders after the batch run: the answers merge both layers.
	s.post(s.events(100, s.t0, 2*time.Hour))
	eventually(t, "the orders after the batch run", 60*time.Second, func() string {
		for _, v := range start.views {
			if a := s.queryView(v); !a.complete {
				return v.name + " does not count them yet"
			}
		}
		return ""
	})
	s.settle()
	s.stop(start.name)

	for i, ph := range phases[1:] {
		s.runPhase(ph, phases[i].views, nil)
		if i < len(phases)-2 {
			s.stop(ph.name)
		}
	}
	// A view edited back has the definition it had: its state was deleted
	// meanwhile, and it was rebuilt like any other.
	if h := s.history["stats"]; h[7] != h[3] {
		t.Fatalf("stats back to the views of edit 3 has definition %s, then it had %s", h[7], h[3])
	}
	// A batch run over everything: every view exact from the batch layer.
	last := phases[len(phases)-1]
	s.batchRun()
	s.allBatch(last.views)
	s.stop(last.name)
}
