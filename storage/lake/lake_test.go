package lake_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/fsatomic"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/objcache"
	"github.com/braid-data/braid/storage/objstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// The lake's contract (write, commit, read with DuckDB, recovery, schema
// epochs, manifests, compaction, retention) is checked by storagetest's
// suite (conformance_test.go); the tests here look at the objects.

// A crashed writer's files are never visible; Recover lists them as
// garbage, and Sweep deletes them once the grace period is over.
func TestRecoverListsUncommittedAsGarbage(t *testing.T) {
	ctx := context.Background()
	s := storagetest.LakeStream(t)
	dir := t.TempDir()
	st, err := objstore.NewFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	open := func(grace time.Duration) *lake.Lake {
		lk, err := lake.Open(st, lake.Options{WorkDir: filepath.Join(dir, ".tmp-work"), Grace: grace})
		if err != nil {
			t.Fatal(err)
		}
		return lk
	}
	lk := open(time.Hour)
	base := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	rows, exp := storagetest.LakeRows(s, 1, 10, base, 0)
	if _, err := lk.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit("orders", lake.Checkpoint{Seq: 10, Arrival: 1, CoveredUntil: 1}); err != nil {
		t.Fatal(err)
	}
	committed, _ := lk.Files("orders")
	// A writer crashed: files written, never committed.
	more, _ := storagetest.LakeRows(s, 11, 5, base, 0)
	beyond, err := lk.Write(s, more)
	if err != nil {
		t.Fatal(err)
	}
	lk = open(time.Hour) // the restarted process
	if files, err := lk.Files("orders"); err != nil || strings.Join(files, ",") != strings.Join(committed, ",") {
		t.Fatalf("Files = %v %v, want only committed %v", files, err, committed)
	}
	if err := lk.Recover("orders"); err != nil {
		t.Fatal(err)
	}
	m, err := lk.Manifest(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Garbage) != len(beyond) || m.Checkpoint.Seq != 10 {
		t.Fatalf("after Recover: garbage %v, checkpoint %+v; want the %d uncommitted files", m.Garbage, m.Checkpoint, len(beyond))
	}
	// A second Recover finds nothing new.
	if err := lk.Recover("orders"); err != nil {
		t.Fatal(err)
	}
	if m2, _ := lk.Manifest(ctx, "orders"); m2.Gen != m.Gen {
		t.Fatalf("a second Recover committed generation %d (was %d)", m2.Gen, m.Gen)
	}
	if n, err := lk.Sweep(ctx, "orders"); err != nil || n != 0 {
		t.Fatalf("sweep within the grace period: %d %v", n, err)
	}
	for _, p := range beyond {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s deleted within the grace period: %v", p, err)
		}
	}
	if n, err := open(time.Nanosecond).Sweep(ctx, "orders"); err != nil || n != len(beyond) {
		t.Fatalf("sweep: %d %v, want %d", n, err, len(beyond))
	}
	for _, p := range beyond {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s survived the sweep (%v)", p, err)
		}
	}
	storagetest.CheckLakeRows(t, open(time.Hour), "orders", exp)
	// Nothing but the lake's objects under the store: the work directory
	// is not listed, and holds no leftovers.
	objs, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if !strings.HasPrefix(o.Key, "orders/") {
			t.Fatalf("object %s outside the stream's keys", o.Key)
		}
	}
	// An empty stream has no checkpoint and no files.
	if cp, err := lk.Checkpoint("none"); err != nil || cp != (lake.Checkpoint{}) {
		t.Fatalf("empty checkpoint %+v %v", cp, err)
	}
	if f, err := lk.Files("none"); err != nil || len(f) != 0 {
		t.Fatalf("empty files %v %v", f, err)
	}
	if err := lk.Recover("none"); err != nil {
		t.Fatal(err)
	}
}

// WriteReleasing writes the same files as WriteSized (one per UTC date,
// before 1970 too) and leaves every row zeroed.
func TestWriteReleasingMatchesWriteSized(t *testing.T) {
	s := storagetest.LakeStream(t)
	base := time.Date(1969, 12, 31, 20, 0, 0, 0, time.UTC).UnixMilli()
	write := func(release bool) (files []string, rows []lake.Row) {
		lk, err := lake.OpenDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		rows, _ = storagetest.LakeRows(s, 1, 3000, base, 0)
		if release {
			files, _, err = lk.WriteReleasing(s, rows)
		} else {
			files, _, err = lk.WriteSized(s, rows)
		}
		if err != nil {
			t.Fatal(err)
		}
		return files, rows
	}
	sized, _ := write(false)
	released, rows := write(true)
	if len(sized) < 3 || len(released) != len(sized) {
		t.Fatalf("files %v and %v: want the same, one per date", sized, released)
	}
	if !strings.Contains(sized[0], "date=1969-12-31") {
		t.Fatalf("first file %s: want date=1969-12-31", sized[0])
	}
	// <first>-<last> (41 characters) and the date are the same; the token differs.
	name := func(p string) string { return filepath.Base(filepath.Dir(p)) + "/" + filepath.Base(p)[:41] }
	for i := range sized {
		if name(sized[i]) != name(released[i]) {
			t.Fatalf("file %d: %s vs %s", i, sized[i], released[i])
		}
		a, err := os.ReadFile(sized[i])
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(released[i])
		if err != nil {
			t.Fatal(err)
		}
		if string(a) != string(b) {
			t.Fatalf("file %d differs between WriteSized and WriteReleasing", i)
		}
	}
	for i, r := range rows {
		if r.Seq != 0 || r.Event.Values != nil || r.Event.ID != "" {
			t.Fatalf("row %d not released: %+v", i, r)
		}
	}
}

// writeOldLayout writes stream s's rows as the earlier version laid a lake
// out: date=D/<first>-<last>.parquet per write and date (the same Parquet
// files: written here by a lake and renamed), checkpoint.json at the last
// committed record, and schema.json when record is set. Rows beyond
// committed are written and not committed (a crashed writer).
func writeOldLayout(t *testing.T, dir string, s *logic.Stream, writes [][]lake.Row, committed uint64, record bool) {
	t.Helper()
	tmp, err := lake.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var cp lake.Checkpoint
	for _, rows := range writes {
		paths, err := tmp.Write(s, rows)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range paths {
			base := filepath.Base(p)
			first, last := base[:20], base[21:41]
			to := filepath.Join(dir, s.Name, filepath.Base(filepath.Dir(p)), first+"-"+last+".parquet")
			if err := fsatomic.MkdirAllSync(filepath.Dir(to)); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(p, to); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range rows {
			if r.Seq <= committed {
				cp = lake.Checkpoint{Seq: r.Seq, Arrival: r.Arrival, CoveredUntil: r.Arrival + 1}
			}
		}
	}
	put := func(name string, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, s.Name, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	put("checkpoint.json", cp)
	if record {
		fields := map[string]string{}
		for _, f := range s.Fields {
			fields[f.Name] = f.Type.String()
		}
		put("schema.json", map[string]any{"epochs": []lake.Epoch{{From: 1, Since: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), Fields: fields}}})
	}
	// A temp file of the crashed writer.
	if err := os.WriteFile(filepath.Join(dir, s.Name, fsatomic.TempPrefix+"checkpoint.json-x"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A lake the earlier version wrote (no manifests) reads as it is, to a
// read-only handle (which writes nothing) and a writer; the writer turns
// it into manifest generation 1 at Recover, with each file's metadata read
// from the file, and writes, compacts and reads on.
func TestMigrateOldLayout(t *testing.T) {
	ctx := context.Background()
	for _, record := range []bool{true, false} {
		dir := t.TempDir()
		s := storagetest.LakeStream(t)
		base := time.Date(2024, 6, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
		rows, exp := storagetest.LakeRows(s, 1, 130, base, 0)
		writeOldLayout(t, dir, s, [][]lake.Row{rows[:60], rows[60:100], rows[100:]}, 100, record)
		for seq := uint64(101); seq <= 130; seq++ {
			delete(exp, seq)
		}
		// Read only: the committed rows, their epochs; nothing written.
		ro, err := lake.OpenReadOnly(dir)
		if err != nil {
			t.Fatal(err)
		}
		if cp, err := ro.Checkpoint("orders"); err != nil || cp.Seq != 100 {
			t.Fatalf("record %v: checkpoint %+v %v", record, cp, err)
		}
		storagetest.CheckLakeRows(t, ro, "orders", exp)
		es, err := ro.Epochs("orders")
		if err != nil || len(es) != 1 || es[0].From != 1 || es[0].Fields["amount"] != "float" || len(es[0].Fields) != len(s.Fields) {
			t.Fatalf("record %v: epochs %+v %v", record, es, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "orders", "_manifest")); !os.IsNotExist(err) {
			t.Fatalf("a reader wrote a manifest (%v)", err)
		}
		old, err := ro.Manifest(ctx, "orders")
		if err != nil || old.Gen != 0 {
			t.Fatalf("record %v: manifest %+v %v", record, old.Gen, err)
		}
		// The metadata read from the files is what DuckDB reads in them.
		db := storagetest.DuckDB(t)
		for _, f := range old.Files {
			var n, lo, hi, tlo, thi int64
			q := "SELECT count(*), min(_arrival), max(_arrival), min(_time), max(_time) FROM " + storagetest.ParquetSource([]string{filepath.Join(dir, f.Key)})
			if err := db.QueryRow(q).Scan(&n, &lo, &hi, &tlo, &thi); err != nil {
				t.Fatal(err)
			}
			if f.Rows != n || f.MinArrival != lo || f.MaxArrival != hi || f.MinTime != tlo || f.MaxTime != thi || f.Last > 100 {
				t.Fatalf("record %v: file %+v holds %d rows, arrivals %d..%d, times %d..%d", record, f, n, lo, hi, tlo, thi)
			}
		}
		// The writer: Recover makes generation 1 of the old state, then
		// lists the uncommitted files (101..130) as garbage.
		lk, err := lake.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := lk.Recover("orders"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(filepath.Join(dir, "orders", "_manifest", "00000000000000000001.json")); err != nil {
			t.Fatalf("record %v: no manifest 1: %v", record, err)
		}
		m, err := lk.Manifest(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		if m.Gen != 2 || m.Checkpoint != old.Checkpoint || len(m.Files) != len(old.Files) || len(m.Garbage) == 0 {
			t.Fatalf("record %v: after Recover gen %d, %d files (were %d), garbage %v", record, m.Gen, len(m.Files), len(old.Files), m.Garbage)
		}
		for _, g := range m.Garbage {
			if name := g.Key[strings.LastIndexByte(g.Key, '/')+1:]; name[:20] < "00000000000000000101" {
				t.Fatalf("record %v: committed file %s listed as garbage", record, g.Key)
			}
		}
		// Writing on, with the same records again (other values).
		again, exp2 := storagetest.LakeRows(s, 101, 40, base, 5)
		if _, err := lk.Write(s, again); err != nil {
			t.Fatal(err)
		}
		if err := lk.Commit("orders", lake.Checkpoint{Seq: 140, Arrival: again[39].Arrival, CoveredUntil: again[39].Arrival + 1}); err != nil {
			t.Fatal(err)
		}
		for k, v := range exp2 {
			exp[k] = v
		}
		storagetest.CheckLakeRows(t, lk, "orders", exp)
		// Old and new files compact together.
		if st, err := lk.Compact(ctx, s, 0, 1<<20); err != nil || st.FilesIn < 4 {
			t.Fatalf("record %v: compaction %+v %v", record, st, err)
		}
		lk2, err := lake.OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		storagetest.CheckLakeRows(t, lk2, "orders", exp)
		if es, err := lk2.Epochs("orders"); err != nil || len(es) != 1 {
			t.Fatalf("record %v: epochs after writing on %+v %v", record, es, err)
		}
	}
}

// A stream keeps its newest manifests only, and the current one is the
// newest.
func TestOldManifestsDeleted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	lk, err := lake.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	s := storagetest.LakeStream(t)
	base := time.Date(2024, 8, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for i := uint64(0); i < 25; i++ {
		rows, _ := storagetest.LakeRows(s, 1+i*2, 2, base, 0)
		if _, err := lk.Write(s, rows); err != nil {
			t.Fatal(err)
		}
		if err := lk.Commit("orders", lake.Checkpoint{Seq: 2 + i*2, Arrival: 1, CoveredUntil: 1}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := lk.Manifest(ctx, "orders")
	if err != nil || m.Gen != 25 || m.Checkpoint.Seq != 50 {
		t.Fatalf("manifest %d at %+v, %v; want generation 25 at 50", m.Gen, m.Checkpoint, err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "orders", "_manifest"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 10 || ents[0].Name() != "00000000000000000016.json" || ents[9].Name() != "00000000000000000025.json" {
		names := []string{}
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("manifests kept: %v; want 16..25", names)
	}
}

// On a remote store, the copies Files returns stay while the stream's
// reader uses them, even beyond the cache's bound; the next call releases
// them.
func TestFilesPinnedOnRemoteStore(t *testing.T) {
	s3 := testenv.StartS3(t)
	st := s3.Store(t, "pins")
	work := t.TempDir()
	cache, err := objcache.New(st, filepath.Join(work, "cache"), 1, nil) // a bound of one byte
	if err != nil {
		t.Fatal(err)
	}
	lk, err := lake.Open(st, lake.Options{WorkDir: work, Cache: cache})
	if err != nil {
		t.Fatal(err)
	}
	s := storagetest.LakeStream(t)
	base := time.Date(2024, 9, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	exp := map[uint64]storagetest.LakeWant{}
	for i := uint64(0); i < 3; i++ {
		rows, e := storagetest.LakeRows(s, 1+i*100, 100, base, 0)
		if _, err := lk.Write(s, rows); err != nil {
			t.Fatal(err)
		}
		last := rows[len(rows)-1]
		if err := lk.Commit("orders", lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 1}); err != nil {
			t.Fatal(err)
		}
		for k, v := range e {
			exp[k] = v
		}
	}
	files, err := lk.Files("orders")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("a copy Files returned is gone: %v", err)
		}
	}
	storagetest.CheckLakeRows(t, lk, "orders", exp) // calls Files again: the same copies
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("a copy Files returned again is gone: %v", err)
		}
	}
	if cache.Bytes() == 0 {
		t.Fatal("nothing in the cache")
	}
}

// Writes of disjoint record ranges may come in any order (and at once)
// before the commit that makes them visible; a range written again
// replaces what overlaps it (a write that was never committed, repeated).
func TestWritesInAnyOrder(t *testing.T) {
	s := storagetest.LakeStream(t)
	lk, err := lake.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 3, 1, 22, 0, 0, 0, time.UTC).UnixMilli()
	exp := map[uint64]storagetest.LakeWant{}
	write := func(first, n uint64) {
		t.Helper()
		rows, want := storagetest.LakeRows(s, first, n, base, 0)
		if _, err := lk.Write(s, rows); err != nil {
			t.Fatal(err)
		}
		for k, v := range want {
			exp[k] = v
		}
	}
	write(21, 10) // after the records below
	write(1, 20)
	write(31, 10)
	write(31, 10) // written again: replaces the first write of 31..40
	if err := lk.Commit("orders", lake.Checkpoint{Seq: 40, Arrival: 1, CoveredUntil: 1}); err != nil {
		t.Fatal(err)
	}
	storagetest.CheckLakeRows(t, lk, "orders", exp)
}
