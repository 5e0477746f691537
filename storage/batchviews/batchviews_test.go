package batchviews_test

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
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

// TestGCAndFiles: with keep-versions 2, publishing removes the versions
// beyond the newest two and the files no kept version references, keeps a
// file an older version shares, cleans stray temp files, and writes the
// CURRENT pointer. (Publish, current, rows, versions and definitions are
// checked by storagetest's suite, conformance_test.go.)
func TestGCAndFiles(t *testing.T) {
	dir := t.TempDir()
	st, err := batchviews.Open(dir, batchviews.WithKeepVersions(2))
	if err != nil {
		t.Fatal(err)
	}
	a, b := view(t, "a"), view(t, "b")
	us := a.GroupKey([]logic.Value{{Kind: logic.TypeString, S: "US"}})
	rowsA := []batchviews.Row{{Window: 60000, Group: us, State: logic.State{Num: []float64{1, math.NaN()}}}}
	v1 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 10_000, Definition: a.Definition()}, "b": {Cutoff: 10_000, Definition: b.Definition()}}}
	if err := st.Publish(v1, map[string][]batchviews.Row{"a": rowsA, "b": {{Window: 0, Group: us, State: logic.State{Num: []float64{7, 7}}}}}); err != nil {
		t.Fatal(err)
	}
	cur, _ := st.Current()
	// v2 refreshes only a; b keeps v1's file.
	v2 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 20_000, Definition: a.Definition()}, "b": cur.Views["b"]}}
	if err := st.Publish(v2, map[string][]batchviews.Row{"a": rowsA}); err != nil {
		t.Fatal(err)
	}
	cur2, _ := st.Current()
	if cur2.Views["b"].File != cur.Views["b"].File {
		t.Fatalf("b's file in v2 %s, v1's %s", cur2.Views["b"].File, cur.Views["b"].File)
	}
	// v3 with keep=2: v1 goes, but v1's b file stays (v2 and v3 reference it).
	v3 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 30_000, Definition: a.Definition()}, "b": cur2.Views["b"]}}
	if err := st.Publish(v3, map[string][]batchviews.Row{"a": nil}); err != nil {
		t.Fatal(err)
	}
	ids, _ := st.Versions()
	if len(ids) != 2 || ids[0] != v2.ID || ids[1] != v3.ID {
		t.Fatalf("versions after gc: %v", ids)
	}
	if _, err := os.Stat(filepath.Join(dir, cur.Views["a"].File)); !os.IsNotExist(err) {
		t.Fatalf("v1's a file survived gc: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, cur.Views["b"].File)); err != nil {
		t.Fatalf("shared b file removed: %v", err)
	}
	if _, err := st.Version(v1.ID); !errors.Is(err, batchviews.ErrMissingMeta) {
		t.Fatalf("v1 metadata: %v", err)
	}
	// Stray temp files never become current and are cleaned on publish.
	tmp := filepath.Join(dir, "views", "a", ".tmp-stray")
	if err := os.WriteFile(tmp, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	v4 := &batchviews.Version{ID: batchviews.NewID(), Views: map[string]batchviews.ViewVersion{"a": {Cutoff: 40_000, Definition: a.Definition()}}}
	if err := st.Publish(v4, map[string][]batchviews.Row{"a": rowsA}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatal("temp file survived")
	}
	b4, _ := os.ReadFile(filepath.Join(dir, "CURRENT"))
	if strings.TrimSpace(string(b4)) != v4.ID {
		t.Fatalf("CURRENT %q", b4)
	}
}

// TestKeepRuns: beyond WithKeepRuns records, the oldest go. (Runs, the run
// lock and interrupted runs are checked by storagetest's suite,
// conformance_test.go.)
func TestKeepRuns(t *testing.T) {
	st, err := batchviews.Open(t.TempDir(), batchviews.WithKeepRuns(3))
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
	st, err := batchviews.Open(dir)
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
