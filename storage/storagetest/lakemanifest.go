package storagetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/objstore"
)

// lakeFacts is what DuckDB reads from a set of lake files: rows, distinct
// (_seq, _idx), rows per event date.
type lakeFacts struct {
	rows, distinct int64
	perDate        map[string]int64
}

func readLakeFacts(t *testing.T, files []string) lakeFacts {
	t.Helper()
	f := lakeFacts{perDate: map[string]int64{}}
	if len(files) == 0 {
		return f
	}
	db := DuckDB(t)
	src := ParquetSource(files)
	if err := db.QueryRow("SELECT count(*), count(DISTINCT (_seq, _idx)) FROM "+src).Scan(&f.rows, &f.distinct); err != nil {
		t.Fatal(err)
	}
	r, err := db.Query("SELECT strftime(ts, '%Y-%m-%d') AS d, count(*) FROM " + src + " GROUP BY d")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for r.Next() {
		var d string
		var n int64
		if err := r.Scan(&d, &n); err != nil {
			t.Fatal(err)
		}
		f.perDate[d] = n
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	return f
}

// expectedFacts computes the facts of rows with the sequences of exp
// (LakeRows' rows) without the lake.
func expectedFacts(exp map[uint64]LakeWant) lakeFacts {
	f := lakeFacts{perDate: map[string]int64{}}
	for _, w := range exp {
		f.rows++
		f.distinct++
		f.perDate[time.UnixMilli(w.ts).UTC().Format("2006-01-02")]++
	}
	return f
}

func (f lakeFacts) String() string {
	return fmt.Sprintf("%d rows, %d distinct (_seq,_idx), per date %v", f.rows, f.distinct, f.perDate)
}

// writeCommit writes rows first..first+n-1 in one write and commits them.
func writeCommit(t *testing.T, lk Lake, s *logic.Stream, first, n uint64, base int64, salt int, exp map[uint64]LakeWant) {
	t.Helper()
	rows, e := LakeRows(s, first, n, base, salt)
	if _, err := lk.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	commitRows(t, lk, s.Name, rows)
	for k, v := range e {
		exp[k] = v
	}
}

func manifestKeys(m lake.Manifest) []string {
	keys := make([]string, len(m.Files))
	for i, f := range m.Files {
		keys[i] = f.Key
	}
	return keys
}

// lakeManifestMetadata: every file the manifest lists holds what its
// metadata says (DuckDB's reading of the file is the oracle), the
// manifest's checkpoint is the committed one, generations grow, and the
// files of a manifest are the committed files.
func lakeManifestMetadata(t *testing.T, open func() Lake) {
	ctx := context.Background()
	lk := open()
	s := LakeStream(t)
	if m, err := lk.Manifest(ctx, "orders"); err != nil || m.Gen != 0 || len(m.Files) != 0 {
		t.Fatalf("manifest of an empty stream: %+v %v", m, err)
	}
	base := time.Date(2025, 1, 30, 22, 0, 0, 0, time.UTC).UnixMilli()
	exp := map[uint64]LakeWant{}
	var gens []uint64
	for i := uint64(0); i < 3; i++ {
		writeCommit(t, lk, s, 1+i*50, 50, base, 0, exp)
		m, err := open().Manifest(ctx, "orders")
		if err != nil {
			t.Fatal(err)
		}
		gens = append(gens, m.Gen)
	}
	if !(gens[0] >= 1 && gens[1] > gens[0] && gens[2] > gens[1]) {
		t.Fatalf("generations %v: want growing from 1", gens)
	}
	rd := open()
	m, err := rd.Manifest(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := rd.Checkpoint("orders")
	if m.Checkpoint != cp || cp.Seq != 150 {
		t.Fatalf("manifest checkpoint %+v, Checkpoint %+v, want seq 150", m.Checkpoint, cp)
	}
	cfs, err := rd.CommittedFiles("orders")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfs) != len(m.Files) {
		t.Fatalf("%d committed files, manifest lists %d", len(cfs), len(m.Files))
	}
	paths, release, err := rd.Local(ctx, manifestKeys(m))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	db := DuckDB(t)
	var total int64
	for i, f := range m.Files {
		if cfs[i].Key != f.Key || cfs[i].First != f.First || cfs[i].Date != f.Date {
			t.Fatalf("committed file %+v, manifest %+v", cfs[i], f)
		}
		var n, seqLo, seqHi, arrLo, arrHi, tLo, tHi int64
		var dLo, dHi string
		q := `SELECT count(*), min(_seq), max(_seq), min(_arrival), max(_arrival), min(_time), max(_time),
			strftime(min(ts), '%Y-%m-%d'), strftime(max(ts), '%Y-%m-%d') FROM ` + ParquetSource([]string{paths[i]})
		if err := db.QueryRow(q).Scan(&n, &seqLo, &seqHi, &arrLo, &arrHi, &tLo, &tHi, &dLo, &dHi); err != nil {
			t.Fatal(err)
		}
		got := lake.FileInfo{Key: f.Key, Date: dLo, First: uint64(seqLo), Last: uint64(seqHi), Rows: n, Bytes: f.Bytes,
			MinArrival: arrLo, MaxArrival: arrHi, MinTime: tLo, MaxTime: tHi}
		if got != f || dHi != dLo {
			t.Fatalf("manifest says %+v, the file holds %+v (dates %s..%s)", f, got, dLo, dHi)
		}
		if st, err := os.Stat(paths[i]); err != nil || st.Size() != f.Bytes {
			t.Fatalf("file %s: %v bytes (%v), manifest says %d", f.Key, st, err, f.Bytes)
		}
		total += n
	}
	if total != 150 {
		t.Fatalf("manifest files hold %d rows, want 150", total)
	}
	// A partition received events since C iff one of its files has
	// MaxArrival >= C: rows 101..150 arrived last.
	cut := int64(1_700_000_000_101)
	want := map[string]bool{}
	for seq := uint64(101); seq <= 150; seq++ {
		want[time.UnixMilli(exp[seq].ts).UTC().Format("2006-01-02")] = true
	}
	got := map[string]bool{}
	for _, f := range m.Files {
		if f.MaxArrival >= cut {
			got[f.Date] = true
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("partitions with arrivals since %d: %v, want %v", cut, got, want)
	}
	checkLakeRows(t, rd, "orders", exp)
}

// lakeFencing: two writer handles of one stream; the one whose commit is
// built on a generation the other committed first fails with ErrConflict,
// and nothing of its commit is visible; after Recover it writes on.
func lakeFencing(t *testing.T, open func() Lake) {
	ctx := context.Background()
	s := LakeStream(t)
	base := time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	a, b := open(), open()
	exp := map[uint64]LakeWant{}
	writeCommit(t, a, s, 1, 20, base, 0, exp)
	if err := b.Recover("orders"); err != nil { // b reads generation 1
		t.Fatal(err)
	}
	writeCommit(t, a, s, 21, 20, base, 0, exp)
	before, err := open().Manifest(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	// b writes the same records with other values and commits on the
	// generation a already took.
	rows, _ := LakeRows(s, 21, 30, base, 7)
	if _, err := b.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	err = b.Commit("orders", lake.Checkpoint{Seq: 50, Arrival: rows[29].Arrival, CoveredUntil: rows[29].Arrival + 1})
	if !errors.Is(err, lake.ErrConflict) {
		t.Fatalf("commit on a taken generation: %v, want ErrConflict", err)
	}
	rd := open()
	after, err := rd.Manifest(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if after.Gen != before.Gen || after.Checkpoint != before.Checkpoint || fmt.Sprint(manifestKeys(after)) != fmt.Sprint(manifestKeys(before)) {
		t.Fatalf("a refused commit changed the lake: %+v, was %+v", after, before)
	}
	checkLakeRows(t, rd, "orders", exp) // a's values, each once
	// b recovers (reads the stream again) and writes on after a.
	if err := b.Recover("orders"); err != nil {
		t.Fatal(err)
	}
	if cp, _ := b.Checkpoint("orders"); cp.Seq != 40 {
		t.Fatalf("checkpoint after recovery %+v, want seq 40", cp)
	}
	writeCommit(t, b, s, 41, 20, base, 3, exp)
	checkLakeRows(t, open(), "orders", exp)
	// Now a is the stale one.
	rows, _ = LakeRows(s, 41, 5, base, 9)
	if _, err := a.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit("orders", lake.Checkpoint{Seq: 45, Arrival: 1, CoveredUntil: 1}); !errors.Is(err, lake.ErrConflict) {
		t.Fatalf("stale writer's commit: %v, want ErrConflict", err)
	}
	checkLakeRows(t, open(), "orders", exp)
}

// lakeCompact: many small files merged per date; the rows, their
// identities and per-date counts unchanged, the files fewer; a reader
// holding the older manifest reads its files until the grace period ends
// (Sweep with a long grace deletes nothing; a handle with a grace of a
// nanosecond deletes them).
func lakeCompact(t *testing.T, open func(LakeOptions) Lake) {
	ctx := context.Background()
	lk := open(LakeOptions{Grace: time.Hour})
	s := LakeStream(t)
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	exp := map[uint64]LakeWant{}
	for i := uint64(0); i < 30; i++ {
		writeCommit(t, lk, s, 1+i*10, 10, base, 0, exp)
	}
	want := expectedFacts(exp)
	old, err := lk.Manifest(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := lk.Files("orders")
	if got := readLakeFacts(t, files); got.String() != want.String() {
		t.Fatalf("before compaction: %v, want %v", got, want)
	}
	// A reader holds the old manifest's files.
	rd := open(LakeOptions{Grace: time.Hour})
	oldPaths, release, err := rd.Local(ctx, manifestKeys(old))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	st, err := lk.Compact(ctx, s, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m, err := open(LakeOptions{}).Manifest(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	dates := map[string]bool{}
	for _, f := range old.Files {
		dates[f.Date] = true
	}
	if len(m.Files) != len(dates) || st.FilesOut != len(dates) || st.FilesIn != len(old.Files) || st.Partitions != len(dates) || m.Checkpoint != old.Checkpoint {
		t.Fatalf("compaction %+v: %d files of %d dates now (were %d)", st, len(m.Files), len(dates), len(old.Files))
	}
	files, _ = open(LakeOptions{}).Files("orders")
	if got := readLakeFacts(t, files); got.String() != want.String() {
		t.Fatalf("after compaction: %v, want %v", got, want)
	}
	checkLakeRows(t, open(LakeOptions{}), "orders", exp)
	if got := readLakeFacts(t, oldPaths); got.String() != want.String() {
		t.Fatalf("old manifest's files after compaction: %v, want %v", got, want)
	}
	// Nothing to do a second time.
	if st, err := lk.Compact(ctx, s, 0, 1<<20); err != nil || st.FilesOut != 0 {
		t.Fatalf("second compaction %+v %v", st, err)
	}
	// Within the grace period the old files stay; a fresh reader of the
	// old manifest still reads them.
	if n, err := lk.Sweep(ctx, "orders"); err != nil || n != 0 {
		t.Fatalf("sweep within the grace period: %d %v", n, err)
	}
	paths2, release2, err := open(LakeOptions{}).Local(ctx, manifestKeys(old))
	if err != nil {
		t.Fatalf("old files within the grace period: %v", err)
	}
	if got := readLakeFacts(t, paths2); got.String() != want.String() {
		t.Fatalf("old files within the grace period: %v", got)
	}
	release2()
	// Past it (a handle with a grace of 1ns) they are deleted.
	if n, err := open(LakeOptions{Grace: time.Nanosecond}).Sweep(ctx, "orders"); err != nil || n != len(old.Files) {
		t.Fatalf("sweep past the grace period: %d %v, want %d", n, err, len(old.Files))
	}
	for _, k := range manifestKeys(old) {
		if _, _, err := open(LakeOptions{}).Local(ctx, []string{k}); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("swept file %s: %v, want not found", k, err)
		}
	}
	checkLakeRows(t, open(LakeOptions{}), "orders", exp)
	if m2, _ := lk.Manifest(ctx, "orders"); len(m2.Garbage) != 0 {
		t.Fatalf("garbage after the sweep: %v", m2.Garbage)
	}
}

// lakeCompactDuringWrites: the writer writes and commits while the same
// handle compacts, in two goroutines: nothing lost nor doubled.
func lakeCompactDuringWrites(t *testing.T, open func() Lake) {
	ctx := context.Background()
	lk := open()
	s := LakeStream(t)
	base := time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	exp := map[uint64]LakeWant{}
	done := make(chan struct{})
	var compacted lake.CompactStats
	var cerr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			st, err := lk.Compact(ctx, s, 0, 64<<10)
			if err != nil {
				cerr = err
				return
			}
			compacted.FilesIn += st.FilesIn
			compacted.FilesOut += st.FilesOut
		}
	}()
	for i := uint64(0); i < 40; i++ {
		writeCommit(t, lk, s, 1+i*8, 8, base, 0, exp)
	}
	close(done)
	wg.Wait()
	if cerr != nil {
		t.Fatal(cerr)
	}
	st, err := lk.Compact(ctx, s, 0, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	compacted.FilesIn += st.FilesIn
	compacted.FilesOut += st.FilesOut
	if compacted.FilesOut == 0 || compacted.FilesIn <= compacted.FilesOut {
		t.Fatalf("compactions did %+v", compacted)
	}
	rd := open()
	files, _ := rd.Files("orders")
	if got, want := readLakeFacts(t, files), expectedFacts(exp); got.String() != want.String() {
		t.Fatalf("after writes and compactions: %v, want %v", got, want)
	}
	checkLakeRows(t, rd, "orders", exp)
}

// lakeDropBefore: retention removes the partitions dated before a date in
// one commit; the others are untouched.
func lakeDropBefore(t *testing.T, open func() Lake) {
	ctx := context.Background()
	lk := open()
	s := LakeStream(t)
	base := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	exp := map[uint64]LakeWant{}
	writeCommit(t, lk, s, 1, 100, base, 0, exp) // 37 minutes apart: about 3 days
	writeCommit(t, lk, s, 101, 100, base, 0, exp)
	cut := "2025-05-03"
	keep := map[uint64]LakeWant{}
	for seq, w := range exp {
		if time.UnixMilli(w.ts).UTC().Format("2006-01-02") >= cut {
			keep[seq] = w
		}
	}
	if len(keep) == len(exp) || len(keep) == 0 {
		t.Fatalf("the cut %s keeps %d of %d rows: a bad fixture", cut, len(keep), len(exp))
	}
	before, _ := lk.Manifest(ctx, "orders")
	wantGone := 0
	for _, f := range before.Files {
		if f.Date < cut {
			wantGone++
		}
	}
	n, err := lk.DropBefore(ctx, "orders", cut)
	if err != nil || n != wantGone {
		t.Fatalf("DropBefore: %d %v, want %d files", n, err, wantGone)
	}
	rd := open()
	after, _ := rd.Manifest(ctx, "orders")
	if after.Gen != before.Gen+1 || after.Checkpoint != before.Checkpoint || len(after.Garbage) != wantGone {
		t.Fatalf("after DropBefore: gen %d (was %d), %d garbage, checkpoint %+v", after.Gen, before.Gen, len(after.Garbage), after.Checkpoint)
	}
	checkLakeRows(t, rd, "orders", keep)
	if n, err := lk.DropBefore(ctx, "orders", cut); err != nil || n != 0 {
		t.Fatalf("DropBefore again: %d %v", n, err)
	}
	if _, err := lk.DropBefore(ctx, "orders", "May 3"); err == nil {
		t.Fatal("DropBefore of a bad date: no error")
	}
	// Writing goes on.
	writeCommit(t, lk, s, 201, 10, base, 0, keep)
	checkLakeRows(t, open(), "orders", keep)
}
