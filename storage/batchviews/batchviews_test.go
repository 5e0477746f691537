package batchviews_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/objstore"
)

func view(t *testing.T, name string) *logic.View {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "country": logic.TypeString, "amount": logic.TypeFloat}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := logic.NewView(name, logic.ViewDef{Stream: "orders", Window: time.Minute, GroupBy: []string{"country"},
		Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}, {Name: "lo", Expr: "min(amount)"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// oldID is an id of NewID's form made ago.
func oldID(ago time.Duration) string {
	return time.Now().Add(-ago).UTC().Format("20060102T150405.000000Z") + "-0a0b0c"
}

// objects lists the keys under prefix in a store on local files.
func objects(t *testing.T, dir, prefix string) []string {
	t.Helper()
	st, err := objstore.NewFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := st.List(context.Background(), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

// TestGCAndFiles: with keep-versions 2, publishing removes the versions
// beyond the newest two and the parts no kept version references once
// their run is over, keeps a part a newer version reuses, keeps the parts
// of a run in progress (whatever their age) and young parts of runs
// without a record, removes the old ones, keeps the newest pointers only,
// and writes the layout of the package comment. (Publish, current, rows,
// versions and definitions are checked by storagetest's suite,
// conformance_test.go.)
func TestGCAndFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := batchviews.OpenDir(dir, batchviews.WithKeepVersions(2))
	if err != nil {
		t.Fatal(err)
	}
	a, b := view(t, "a"), view(t, "b")
	us := a.GroupKey([]logic.Value{{Kind: logic.TypeString, S: "US"}})
	const day = 24 * 60 * 60 * 1000
	rowsA := []batchviews.Row{{Window: 60000, Group: us, State: logic.State{Num: []float64{1, math.NaN()}}}, {Window: 3*day + 60000, Group: us, State: logic.State{Num: []float64{2, 5}}}}
	v1 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 10_000, Definition: a.Definition()}, "b": {Cutoff: 10_000, Definition: b.Definition()}}}
	if err := st.SaveRun(batchviews.Run{ID: v1.ID, Status: batchviews.StatusSucceeded}); err != nil {
		t.Fatal(err)
	}
	if err := st.Publish(v1, map[string][]batchviews.Row{"a": rowsA, "b": {{Window: 0, Group: us, State: logic.State{Num: []float64{7, 7}}}}}); err != nil {
		t.Fatal(err)
	}
	partA := func(date, run string) string {
		return "parts/a/" + a.Definition() + "/" + date + "/" + run + ".parquet"
	}
	partB1 := "parts/b/" + b.Definition() + "/1970-01-01/" + v1.ID + ".parquet"
	want := []string{partA("1970-01-01", v1.ID), partA("1970-01-04", v1.ID), partB1}
	if got := objects(t, dir, "parts/"); !slices.Equal(got, want) {
		t.Fatalf("parts %v, want %v", got, want)
	}
	if got := objects(t, dir, "current/"); !slices.Equal(got, []string{"current/00000000000000000001"}) {
		t.Fatalf("pointers %v", got)
	}
	// The id of a published version is not published again, and its parts
	// are not written over.
	again := &batchviews.Version{ID: v1.ID, Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 10_000, Definition: a.Definition()}}}
	if err := st.Publish(again, map[string][]batchviews.Row{"a": rowsA[:1]}); err == nil {
		t.Fatal("a version id published twice")
	}
	fresh, err := batchviews.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cur, err := fresh.Current(); err != nil || cur.ID != v1.ID {
		t.Fatalf("current %+v %v", cur, err)
	} else if got, err := fresh.Rows(ctx, cur, a, math.MinInt64, math.MaxInt64); err != nil || len(got) != 2 {
		t.Fatalf("v1's rows of a after a second publish of its id: %d %v", len(got), err)
	}
	cur, _ := st.Current()
	if cur.Gen != 1 || len(cur.Views["a"].Parts) != 2 || cur.Views["a"].Parts[1].Date != "1970-01-04" || cur.Views["a"].Parts[1].Cutoff != 10_000 || cur.Views["a"].Rows != 2 {
		t.Fatalf("v1 %+v", cur)
	}

	// Unpublished parts: of a run in progress (older than the grace
	// period), of a young run without a record, of an old one without a
	// record, of a finished run.
	running, youngRun, oldRun, failed := oldID(3*time.Hour), batchviews.NewID(), oldID(2*time.Hour), batchviews.NewID()
	for _, r := range []batchviews.Run{{ID: running, Status: batchviews.StatusRunning}, {ID: failed, Status: batchviews.StatusFailed}} {
		if err := st.SaveRun(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, run := range []string{running, youngRun, oldRun, failed} {
		if _, err := st.WritePart(ctx, a, "1970-01-02", run, []batchviews.Row{{Window: day, Group: us, State: logic.State{Num: []float64{3, 3}}}}); err != nil {
			t.Fatal(err)
		}
	}

	// v2 refreshes only a; b keeps v1's part.
	v2 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 20_000, Definition: a.Definition()}, "b": cur.Views["b"]}}
	if err := st.Publish(v2, map[string][]batchviews.Row{"a": rowsA[:1]}); err != nil {
		t.Fatal(err)
	}
	// v3 with keep=2: v1 goes, and its parts of a (its run is over), but
	// not its part of b (v2 and v3 reference it).
	cur2, _ := st.Current()
	v3 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 30_000, Definition: a.Definition()}, "b": cur2.Views["b"]}}
	if err := st.Publish(v3, map[string][]batchviews.Row{"a": nil}); err != nil {
		t.Fatal(err)
	}
	ids, _ := st.Versions()
	if len(ids) != 2 || ids[0] != v2.ID || ids[1] != v3.ID {
		t.Fatalf("versions after gc: %v", ids)
	}
	want = []string{partA("1970-01-01", v2.ID), partA("1970-01-02", running), partA("1970-01-02", youngRun), partB1}
	slices.Sort(want)
	if got := objects(t, dir, "parts/"); !slices.Equal(got, want) {
		t.Fatalf("parts after gc\n got %v\nwant %v", got, want)
	}
	if _, err := st.Version(v1.ID); !errors.Is(err, batchviews.ErrMissingMeta) {
		t.Fatalf("v1 metadata: %v", err)
	}
	// Beyond ten pointers, the oldest go; the current one stays.
	var last *batchviews.Version
	for i := range 10 {
		last = &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"b": {Cutoff: int64(40_000 + i), Definition: b.Definition()}}}
		if err := st.Publish(last, nil); err != nil {
			t.Fatal(err)
		}
	}
	ptrs := objects(t, dir, "current/")
	if len(ptrs) != 10 || ptrs[0] != "current/00000000000000000004" || ptrs[9] != "current/00000000000000000013" {
		t.Fatalf("pointers %v", ptrs)
	}
	if cur, err := st.Current(); err != nil || cur.ID != last.ID || cur.Gen != 13 {
		t.Fatalf("current %+v %v, want %s at 13", cur, err, last.ID)
	}
	if objects(t, dir, "CURRENT") != nil || objects(t, dir, "views/") != nil {
		t.Fatal("the earlier layout written")
	}
}

// TestKeepRuns: beyond WithKeepRuns records, the oldest go. (Runs, the run
// lock and interrupted runs are checked by storagetest's suite,
// conformance_test.go.)
func TestKeepRuns(t *testing.T) {
	st, err := batchviews.OpenDir(t.TempDir(), batchviews.WithKeepRuns(3))
	if err != nil {
		t.Fatal(err)
	}
	base := time.Now().UTC()
	var ids []string
	for i := 0; i < 5; i++ {
		id := batchviews.NewID()
		ids = append(ids, id)
		r := batchviews.Run{ID: id, Status: batchviews.StatusSucceeded, Views: []string{"a"}, Started: base.Add(time.Duration(i) * time.Second)}
		if err := st.SaveRun(r); err != nil {
			t.Fatal(err)
		}
	}
	runs, err := st.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 3 || runs[0].ID != ids[4] || runs[2].ID != ids[2] {
		t.Fatalf("runs %+v", runs)
	}
	for _, id := range ids[:2] {
		if _, ok, _ := st.Run(id); ok {
			t.Fatalf("old run %s not pruned", id)
		}
	}
}

// TestRunRecordTimes: a run record gives its cutoffs in RFC 3339 (UTC,
// null for none) like every time in Braid's answers, and a record written
// before, with cutoffs in unix ms, still reads.
func TestRunRecordTimes(t *testing.T) {
	dir := t.TempDir()
	st, err := batchviews.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	cut := time.Date(2026, 12, 7, 13, 40, 50, 0, time.UTC)
	r := batchviews.Run{ID: batchviews.NewID(), Status: batchviews.StatusSucceeded, Started: cut, Cutoffs: batchviews.Cutoffs{"a": cut.UnixMilli(), "b": 0}}
	if err := st.SaveRun(r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "runs", r.ID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var asJSON struct {
		Cutoffs map[string]*string `json:"cutoffs"`
	}
	if err := json.Unmarshal(b, &asJSON); err != nil {
		t.Fatal(err)
	}
	if a := asJSON.Cutoffs["a"]; a == nil || *a != "2026-12-07T13:40:50Z" || asJSON.Cutoffs["b"] != nil {
		t.Fatalf("cutoffs in JSON: %s", b)
	}
	if back, ok, err := st.Run(r.ID); err != nil || !ok || back.Cutoffs["a"] != cut.UnixMilli() || back.Cutoffs["b"] != 0 {
		t.Fatalf("read back: %+v %v %v", back, ok, err)
	}

	// A record of an earlier version: cutoffs in unix ms.
	old := `{"id": "20261207T134054.880110Z-3bc559", "status": "partial", "views": ["a", "b"],
 "cutoffs": {"a": 1796650856000, "b": 0}, "failed_views": {"c": "boom"}, "rows_read": 2000, "rows_out": 96,
 "started": "2026-12-07T13:40:54.88011Z", "finished": "2026-12-07T13:40:57.0472Z", "duration_ms": 2167}`
	if err := os.WriteFile(filepath.Join(dir, "runs", "20261207T134054.880110Z-3bc559.json"), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	back, ok, err := st.Run("20261207T134054.880110Z-3bc559")
	if err != nil || !ok || back.Cutoffs["a"] != 1796650856000 || back.Cutoffs["b"] != 0 || back.RowsRead != 2000 || back.FailedViews["c"] != "boom" {
		t.Fatalf("old record: %+v %v %v", back, ok, err)
	}
	out, err := json.Marshal(back)
	if err != nil || !strings.Contains(string(out), `"cutoffs":{"a":"2026-12-07T13:40:56Z","b":null}`) {
		t.Fatalf("old record answered as %s (%v)", out, err)
	}
	if err := json.Unmarshal([]byte(`{"id":"x","cutoffs":{"a":"yesterday"}}`), &back); err == nil {
		t.Fatal("a cutoff that is no time read without an error")
	}
}

// failingStore fails every List while fail is set.
type failingStore struct {
	objstore.Store
	fail atomic.Bool
}

func (f *failingStore) List(ctx context.Context, prefix string) ([]objstore.Object, error) {
	if f.fail.Load() {
		return nil, errors.New("store unreachable")
	}
	return f.Store.List(ctx, prefix)
}

// TestCurrentWhileTheStoreFails: a handle that has read a version keeps
// answering it while the store cannot be read (and sees the next one when
// it can); one that has not fails, and so does a publish.
func TestCurrentWhileTheStoreFails(t *testing.T) {
	files, err := objstore.NewFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	obj := &failingStore{Store: files}
	st, err := batchviews.Open(obj)
	if err != nil {
		t.Fatal(err)
	}
	a := view(t, "a")
	publish := func(st *batchviews.Store) (*batchviews.Version, error) {
		ver := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 1, Definition: a.Definition()}}}
		return ver, st.Publish(ver, map[string][]batchviews.Row{"a": nil})
	}
	v1, err := publish(st)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := batchviews.Open(obj, batchviews.WithPointerTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	if cur, err := rd.Current(); err != nil || cur.ID != v1.ID {
		t.Fatalf("current %+v %v", cur, err)
	}
	obj.fail.Store(true)
	if cur, err := rd.Current(); err != nil || cur.ID != v1.ID {
		t.Fatalf("current while the store fails: %+v %v, want %s", cur, err, v1.ID)
	}
	other, err := batchviews.Open(obj)
	if err != nil {
		t.Fatal(err)
	}
	if cur, err := other.Current(); err == nil {
		t.Fatalf("a handle that never read the store answered %+v", cur)
	}
	if _, err := publish(st); err == nil {
		t.Fatal("published while the store fails")
	}
	obj.fail.Store(false)
	v2, err := publish(st)
	if err != nil {
		t.Fatal(err)
	}
	if cur, err := rd.Current(); err != nil || cur.ID != v2.ID {
		t.Fatalf("current after the store is back: %+v %v, want %s", cur, err, v2.ID)
	}
}
