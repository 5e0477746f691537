package serving_test

import (
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/tests/testenv"
)

// TestAssembledAnswersMatchWholeComputation: JSON answers assembled from
// the cached rows of final and open windows are byte for byte the answers
// computed whole, over rounds in which the speed layer commits new events (only into
// windows that are not final, as the speed layer does) and the watermark
// moves and a batch run publishes a new version, for random ranges, steps, dimension subsets and filters of a
// tumbling and a hopping view; and the cached rows are used.
func TestAssembledAnswersMatchWholeComputation(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 17))
	s := testenv.OrdersStream(t)
	tum := testView(t, s, "tum", time.Minute, 0)
	hop := testView(t, s, "hop", time.Minute, 20*time.Second)
	views := []*logic.View{tum, hop}
	lateness := s.AllowedLateness.Milliseconds()

	base := int64(1_764_000_000_000)
	cutoff := base + 20_000
	evs := testenv.RandomOrderEvents(r, 600, base, 30*minute, []int64{base, base + 10_000, base + 20_000, base + 30_000})
	st, err := batchviews.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sp := &fakeSpeed{cells: map[string][]query.SpeedCell{}, wm: base + 12*minute, seq: 1, joined: views}
	ver := &batchviews.Version{Views: map[string]batchviews.ViewVersion{}}
	rows := map[string][]batchviews.Row{}
	lev := prepare(t, s, evs)
	for _, v := range views {
		b, c := split(v, evs, lev, cutoff)
		rows[v.Name] = b
		ver.Views[v.Name] = batchviews.ViewVersion{Cutoff: cutoff, Definition: v.Definition()}
		sp.cells[v.Name] = c
	}
	if err := st.Publish(ver, rows); err != nil {
		t.Fatal(err)
	}
	all := append([]testenv.OrderEvent{}, evs...)
	serve := func(cache int64, reg *prometheus.Registry) *httptest.Server {
		srv, err := serving.New(serving.Options{Catalog: testCatalog(s, views...), Speed: sp, SpeedStatus: sp, Views: st,
			QueryCacheBytes: cache, Registry: reg, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		h := httptest.NewServer(srv.Handler())
		t.Cleanup(h.Close)
		return h
	}
	reg := prometheus.NewRegistry()
	cached, whole := serve(64<<20, reg), serve(0, prometheus.NewRegistry())

	groupBys := []string{"", "&group_by=country", "&group_by=device,country", "&group_by="}
	wheres := []string{"", "&where=device:web", "&where=country:DE,country:null"}
	steps := map[string][]string{tum.Name: {"", "&step=1m", "&step=2m", "&step=5m"}, hop.Name: {"", "&step=20s", "&step=2m", "&step=3m"}}
	fixed := func(v *logic.View, to int64) string { // a dashboard's query, asked every round
		return fmt.Sprintf("/v1/views/%s?from=%s&to=%s", v.Name, url.QueryEscape(logic.FormatTime(base)), url.QueryEscape(logic.FormatTime(to)))
	}
	var compared int
	for round := 0; round < 12; round++ {
		if round > 0 {
			// A commit: new events in a new epoch, none behind the
			// watermark (the speed layer skips those), then the watermark
			// moves on by up to two minutes.
			wmAt := sp.wm - lateness
			epoch := base + int64(30_000+10_000*round)
			var fresh []testenv.OrderEvent
			for _, e := range testenv.RandomOrderEvents(r, 40, wmAt-20_000, 3*minute, []int64{epoch}) {
				if e.TS >= wmAt {
					fresh = append(fresh, e)
				}
			}
			flev := prepare(t, s, fresh)
			all = append(all, fresh...)
			sp.mu.Lock()
			for _, v := range views {
				_, c := split(v, fresh, flev, 0)
				sp.cells[v.Name] = append(sp.cells[v.Name], c...)
			}
			sp.wm += r.Int64N(2 * minute)
			sp.seq++
			sp.mu.Unlock()
		}
		if round == 6 {
			// A batch run takes in the first three commits: a new version,
			// a later cutoff; what was frozen for the old one is not used.
			cutoff = base + 60_000
			ver := &batchviews.Version{Views: map[string]batchviews.ViewVersion{}}
			rows := map[string][]batchviews.Row{}
			alev := prepare(t, s, all)
			for _, v := range views {
				rows[v.Name], _ = split(v, all, alev, cutoff)
				ver.Views[v.Name] = batchviews.ViewVersion{Cutoff: cutoff, Definition: v.Definition()}
			}
			if err := st.Publish(ver, rows); err != nil {
				t.Fatal(err)
			}
		}
		var paths []string
		for _, v := range views {
			// ... and as it slides (the same open windows, at one position)
			paths = append(paths, fixed(v, base+40*minute), fixed(v, base+41*minute), fixed(v, base+40*minute+r.Int64N(minute)))
			for range 6 {
				from := base - 2*minute + r.Int64N(20*minute)
				to := from + 1 + r.Int64N(30*minute)
				if r.IntN(3) == 0 {
					from = from / minute * minute
				}
				p := fmt.Sprintf("/v1/views/%s?from=%s&to=%s%s%s%s", v.Name, url.QueryEscape(logic.FormatTime(from)), url.QueryEscape(logic.FormatTime(to)),
					steps[v.Name][r.IntN(len(steps[v.Name]))], groupBys[r.IntN(len(groupBys))], wheres[r.IntN(len(wheres))])
				paths = append(paths, p)
			}
		}
		for _, p := range paths {
			for range 2 { // the second time from the answer cache
				c1, _, got := get(t, cached.URL+p)
				c2, _, want := get(t, whole.URL+p)
				if c1 != 200 || c2 != 200 {
					t.Fatalf("round %d %s: %d / %d %s", round, p, c1, c2, got)
				}
				if string(got) != string(want) {
					t.Fatalf("round %d %s:\nassembled %s\nwhole     %s", round, p, firstDiff(got, want), firstDiff(want, got))
				}
				compared++
			}
		}
	}
	reused := testenv.CounterValue(t, reg, "braid_query_buckets_total", map[string]string{"result": "reused"})
	computed := testenv.CounterValue(t, reg, "braid_query_buckets_total", map[string]string{"result": "computed"})
	if reused == 0 || computed == 0 {
		t.Fatalf("buckets reused %v, computed %v: the assembled path was not taken", reused, computed)
	}
	t.Logf("%d answers equal; buckets reused %v times, computed %v", compared, reused, computed)
}

// firstDiff shows a's text around its first difference from b.
func firstDiff(a, b []byte) string {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	lo, hi := max(0, i-120), min(len(a), i+200)
	return fmt.Sprintf("(byte %d of %d) …%s…", i, len(a), strings.TrimSpace(string(a[lo:hi])))
}

// TestNewVersionLoadedBeforeAnyQuery: a published batch version's view
// files are loaded in the background (no query waits for them), and the
// previous version's rows are let go.
func TestNewVersionLoadedBeforeAnyQuery(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 9))
	s := testenv.OrdersStream(t)
	v := testView(t, s, "v", time.Minute, 0)
	base := int64(1_764_000_000_000)
	st, err := batchviews.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	publish := func(n int) int64 {
		evs := testenv.RandomOrderEvents(r, n, base, 30*minute, []int64{base})
		rows, _ := split(v, evs, prepare(t, s, evs), base+10_000)
		if err := st.Publish(&batchviews.Version{Views: map[string]batchviews.ViewVersion{v.Name: {Cutoff: base + 10_000, Definition: v.Definition()}}}, map[string][]batchviews.Row{v.Name: rows}); err != nil {
			t.Fatal(err)
		}
		return int64(len(rows))
	}
	first := publish(300)
	reg := prometheus.NewRegistry()
	srv, err := serving.New(serving.Options{Catalog: testCatalog(s, v), Views: st, LivePoll: 10 * time.Millisecond, Registry: reg, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	waitLoaded := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for st.LoadedRows() != want {
			if time.Now().After(deadline) {
				t.Fatalf("rows loaded %d, want %d", st.LoadedRows(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitLoaded(first)
	second := publish(40)
	if second == first {
		t.Fatal("the test wants versions of different sizes")
	}
	waitLoaded(second)
	if got := gaugeValue(t, reg, "braid_batch_view_rows_loaded"); got != float64(second) {
		t.Fatalf("braid_batch_view_rows_loaded %v, want %d", got, second)
	}
}

func gaugeValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
