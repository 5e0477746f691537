package batchviews

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/objstore"
)

// TestEarlierLayout: a store on local files written before parts and
// pointers (views/<view>/<version>.parquet, versions/*.json with file
// entries, CURRENT) opens and answers the same; publishes on top of it
// make generation 1, 2, ..., carry a view's file along, and the clean-up
// removes the earlier versions and the files no kept version refers to.
func TestEarlierLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	v := sketchView(t)
	a, b := v, sketchViewNamed(t, "b")
	idTime := func(ago time.Duration) string { return time.Now().Add(-ago).UTC().Format("20060102T150405.000000Z") }
	l1, l2 := idTime(3*time.Hour)+"-aaaaaa", idTime(2*time.Hour)+"-bbbbbb"
	rowsA1, rowsB, rowsA2 := sketchRows(t, a), sketchRows(t, b), sketchRows(t, a)[:2]
	write := func(rel string, data []byte) {
		t.Helper()
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file := func(rel string, rows []Row) {
		t.Helper()
		data, err := encodeRows(rows)
		if err != nil {
			t.Fatal(err)
		}
		write(rel, data)
	}
	file("views/v/"+l1+".parquet", rowsA1)
	file("views/b/"+l1+".parquet", rowsB)
	file("views/v/"+l2+".parquet", rowsA2)
	entry := func(file string, cutoff int64, rows int, def string) string {
		return fmt.Sprintf(`{"cutoff": %d, "file": %q, "rows": %d, "definition": %q}`, cutoff, file, rows, def)
	}
	write("versions/"+l1+".json", []byte(fmt.Sprintf(`{"id": %q, "created": "2026-12-07T10:00:00Z", "views": {"v": %s, "b": %s}}`,
		l1, entry("views/v/"+l1+".parquet", 1000, len(rowsA1), a.Definition()), entry("views/b/"+l1+".parquet", 1000, len(rowsB), b.Definition()))))
	write("versions/"+l2+".json", []byte(fmt.Sprintf(`{"id": %q, "created": "2026-12-07T11:00:00Z", "views": {"v": %s, "b": %s}}`,
		l2, entry("views/v/"+l2+".parquet", 2000, len(rowsA2), a.Definition()), entry("views/b/"+l1+".parquet", 1000, len(rowsB), b.Definition()))))
	write("CURRENT", []byte(l2+"\n"))
	write("runs/"+l2+".json", []byte(fmt.Sprintf(`{"id": %q, "status": "succeeded", "views": ["v"], "cutoffs": {"v": 2000}, "rows_read": 9, "rows_out": 2, "started": "2026-12-07T11:00:00Z", "version": %q}`, l2, l2)))

	st, err := OpenDir(dir, WithKeepVersions(2))
	if err != nil {
		t.Fatal(err)
	}
	check := func(st *Store, ver *Version, v *logic.View, want []Row) {
		t.Helper()
		got, err := st.Rows(ctx, ver, v, math.MinInt64, math.MaxInt64)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s in %s: %d rows, want %d", v.Name, ver.ID, len(got), len(want))
		}
		for i := range want {
			if got[i].Window != want[i].Window || got[i].Group != want[i].Group || !sameFloats(got[i].State.Num, want[i].State.Num) || got[i].State.HLL[0].Count() != want[i].State.HLL[0].Count() {
				t.Fatalf("%s in %s row %d: %+v, want %+v", v.Name, ver.ID, i, got[i], want[i])
			}
		}
		// A range reads the same as today's layout.
		if got, err := st.Rows(ctx, ver, v, 60_000, 180_000); err != nil || len(got) != 2 || got[0].Window != 60_000 {
			t.Fatalf("%s in %s [1m, 3m): %+v %v", v.Name, ver.ID, got, err)
		}
	}
	cur, err := st.Current()
	if err != nil || cur == nil || cur.ID != l2 || cur.Gen != 0 || cur.Views["v"].Cutoff != 2000 {
		t.Fatalf("current %+v %v", cur, err)
	}
	check(st, cur, b, rowsB)
	if got, err := st.Rows(ctx, cur, a, math.MinInt64, math.MaxInt64); err != nil || len(got) != 2 {
		t.Fatalf("v in %s: %d rows %v", l2, len(got), err)
	}
	old, err := st.Version(l1)
	if err != nil {
		t.Fatal(err)
	}
	check(st, old, a, rowsA1)
	if ids, err := st.Versions(); err != nil || !slices.Equal(ids, []string{l1, l2}) {
		t.Fatalf("versions %v %v", ids, err)
	}
	if c, err := st.Cutoff(a); err != nil || c != 2000 {
		t.Fatalf("cutoff %d %v", c, err)
	}
	if r, ok, err := st.Run(l2); err != nil || !ok || r.Version != l2 || r.Cutoffs["v"] != 2000 {
		t.Fatalf("run %+v %v %v", r, ok, err)
	}
	unlock, err := st.LockRuns()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := st.RecoverInterrupted(); err != nil || n != 0 {
		t.Fatalf("recovered %d %v", n, err)
	}
	unlock()

	views := func() []string {
		t.Helper()
		fs, err := objstore.NewFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := fs.List(ctx, "views/")
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		for _, o := range objs {
			keys = append(keys, o.Key)
		}
		return keys
	}
	// A publish refreshes v; b keeps its file of the earlier layout.
	n1 := &Version{ID: NewID(), Views: map[string]ViewVersion{"v": {Cutoff: 3000, Definition: a.Definition()}, "b": cur.Views["b"]}}
	if err := st.Publish(n1, map[string][]Row{"v": rowsA1}); err != nil {
		t.Fatal(err)
	}
	rd, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	cur, err = rd.Current()
	if err != nil || cur.ID != n1.ID || cur.Gen != 1 || cur.Views["b"].File != "views/b/"+l1+".parquet" || len(cur.Views["v"].Parts) != 1 {
		t.Fatalf("current after a publish %+v %v", cur, err)
	}
	check(rd, cur, a, rowsA1)
	check(rd, cur, b, rowsB)
	// Keep 2: the new version and the newest earlier one (l2) stay; l1
	// and its file of v go.
	if ids, err := rd.Versions(); err != nil || !slices.Equal(ids, []string{l2, n1.ID}) {
		t.Fatalf("versions %v %v", ids, err)
	}
	if got := views(); !slices.Equal(got, []string{"views/b/" + l1 + ".parquet", "views/v/" + l2 + ".parquet"}) {
		t.Fatalf("view files %v", got)
	}
	n2 := &Version{ID: NewID(), Views: map[string]ViewVersion{"v": {Cutoff: 4000, Definition: a.Definition()}, "b": cur.Views["b"]}}
	if err := st.Publish(n2, map[string][]Row{"v": rowsA2}); err != nil {
		t.Fatal(err)
	}
	if ids, err := rd.Versions(); err != nil || !slices.Equal(ids, []string{n1.ID, n2.ID}) {
		t.Fatalf("versions %v %v", ids, err)
	}
	if got := views(); !slices.Equal(got, []string{"views/b/" + l1 + ".parquet"}) {
		t.Fatalf("view files %v", got)
	}
	cur, err = rd.Current()
	if err != nil || cur.ID != n2.ID || cur.Gen != 2 {
		t.Fatalf("current %+v %v", cur, err)
	}
	check(rd, cur, b, rowsB)
}

// sketchViewNamed is sketchView under another name.
func sketchViewNamed(t *testing.T, name string) *logic.View {
	t.Helper()
	v := sketchView(t)
	s := v.Stream
	nv, err := logic.NewView(name, logic.ViewDef{Stream: s.Name, Window: time.Minute, GroupBy: []string{"country"},
		Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}, {Name: "lo", Expr: "min(amount)"}, {Name: "users", Expr: "count_distinct(user)"}, {Name: "p90", Expr: "quantile(amount, 0.9)"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return nv
}
