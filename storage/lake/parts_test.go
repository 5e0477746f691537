package lake_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/storagetest"
)

// dropPartColumn rewrites a lake file as it was written before stream
// partitions: the same rows and columns but ColPart.
func dropPartColumn(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	part, ok := pf.Schema().Lookup(lake.ColPart)
	if !ok {
		t.Fatalf("%s has no %s column", path, lake.ColPart)
	}
	g := parquet.Group{}
	for _, fld := range pf.Schema().Fields() {
		if fld.Name() != lake.ColPart {
			g[fld.Name()] = fld
		}
	}
	sch := parquet.NewSchema(pf.Schema().Name(), g)
	tmp := path + ".old"
	out, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	pw := parquet.NewWriter(out, sch)
	for _, rg := range pf.RowGroups() {
		rr := rg.Rows()
		buf := make([]parquet.Row, 64)
		for {
			n, err := rr.ReadRows(buf)
			for _, r := range buf[:n] {
				var o parquet.Row
				for _, v := range r {
					c := v.Column()
					switch {
					case c == part.ColumnIndex:
						continue
					case c > part.ColumnIndex:
						c--
					}
					o = append(o, v.Level(v.RepetitionLevel(), v.DefinitionLevel(), c))
				}
				if _, err := pw.WriteRows([]parquet.Row{o}); err != nil {
					t.Fatal(err)
				}
			}
			if err != nil {
				break
			}
		}
		rr.Close()
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// hasPart reports whether a lake file has the ColPart column.
func hasPart(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	_, ok := pf.Schema().Lookup(lake.ColPart)
	return ok
}

// A lake written before streams had partitions (manifests without
// partition checkpoints, files without _part) opens and keeps working: its
// rows read as partition 0's, its stream gets more partitions, and
// compaction merges its files with new ones (which then carry _part 0).
func TestPrePartitionLake(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := storagetest.LakeStream(t)
	base := time.Date(2024, 10, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	exp := map[storagetest.PartSeq]storagetest.LakeWant{}
	old, err := lake.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < 3; i++ {
		rows, e := storagetest.LakePartRows(s, 0, 1+i*30, 30, base, 0)
		if _, err := old.Write(s, rows); err != nil {
			t.Fatal(err)
		}
		last := rows[len(rows)-1]
		if err := old.Commit("orders", lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 1}); err != nil {
			t.Fatal(err)
		}
		for k, v := range e {
			exp[k] = v
		}
	}
	files, err := old.Files("orders")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		dropPartColumn(t, f)
	}
	m, err := old.Manifest(ctx, "orders")
	if err != nil || len(m.Parts) != 0 {
		t.Fatalf("the old lake's manifest: %+v %v", m, err)
	}

	lk, err := lake.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	storagetest.CheckLakePartRows(t, lk, "orders", exp)
	// Writing on: partition 0 after its checkpoint, a new partition 1.
	for _, w := range []struct {
		p     int
		first uint64
	}{{0, 91}, {1, 1}, {0, 121}, {1, 31}} {
		if err := lk.RecoverPart("orders", w.p); err != nil {
			t.Fatal(err)
		}
		rows, e := storagetest.LakePartRows(s, w.p, w.first, 30, base, w.p)
		if _, err := lk.Write(s, rows); err != nil {
			t.Fatal(err)
		}
		last := rows[len(rows)-1]
		if err := lk.CommitPart("orders", w.p, lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 1}); err != nil {
			t.Fatal(err)
		}
		for k, v := range e {
			exp[k] = v
		}
	}
	storagetest.CheckLakePartRows(t, lk, "orders", exp)
	for p, want := range []uint64{150, 60} {
		if cp, err := lk.PartCheckpoint("orders", p); err != nil || cp.Seq != want {
			t.Fatalf("partition %d: %+v %v, want seq %d", p, cp, err, want)
		}
	}
	// Old and new files of partition 0 compact together.
	st, err := lk.Compact(ctx, s, 0, 1<<20)
	if err != nil || st.FilesIn == 0 {
		t.Fatalf("compaction %+v %v", st, err)
	}
	rd, err := lake.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	storagetest.CheckLakePartRows(t, rd, "orders", exp)
	cfs, err := rd.CommittedFiles("orders")
	if err != nil {
		t.Fatal(err)
	}
	legacy := 0
	for _, f := range cfs {
		if !hasPart(t, f.Path) {
			legacy++
			if f.Part != 0 {
				t.Fatalf("a file without %s listed in partition %d", lake.ColPart, f.Part)
			}
		}
	}
	if legacy >= len(files) {
		t.Fatalf("%d files without %s after compaction, of %d", legacy, lake.ColPart, len(files))
	}
	if _, err := os.Stat(filepath.Join(dir, "orders", "_manifest")); err != nil {
		t.Fatal(err)
	}
}
