package lake_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/braid-data/braid/logic"
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

// Schema epochs are per stream partition: a partition written with new
// field types gets an epoch of its own from its first record so written,
// another partition keeps its epoch until it is written with them too; a
// file's epoch is its partition's; compaction merges only files of the
// current types, per partition; a type the files of any partition cannot
// be read as is refused.
func TestSchemaEpochsPerPartition(t *testing.T) {
	ctx := context.Background()
	lk, err := lake.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v1 := storagetest.SchemaStream(t, map[string]logic.FieldType{"temp": logic.TypeInt})
	v2 := storagetest.SchemaStream(t, map[string]logic.FieldType{"temp": logic.TypeFloat})
	write := func(s *logic.Stream, p int, first, n uint64) {
		t.Helper()
		rows := storagetest.SchemaRows(s, first, n)
		for i := range rows {
			rows[i].Part = p
		}
		if _, err := lk.Write(s, rows); err != nil {
			t.Fatal(err)
		}
		last := rows[len(rows)-1]
		if err := lk.CommitPart("iot", p, lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 1}); err != nil {
			t.Fatal(err)
		}
	}
	for i := uint64(0); i < 3; i++ {
		write(v1, 0, 1+i*5, 5)
		write(v1, 1, 1+i*5, 5)
	}
	for i := uint64(0); i < 3; i++ {
		write(v2, 1, 16+i*5, 5)
	}
	es, err := lk.Epochs("iot")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range es {
		got = append(got, fmt.Sprintf("p%d from %d temp %s", e.Part, e.From, e.Fields["temp"]))
	}
	if want := "p0 from 1 temp int, p1 from 1 temp int, p1 from 16 temp float"; strings.Join(got, ", ") != want {
		t.Fatalf("epochs %q, want %s", got, want)
	}
	// Partition 0 holds only int files: nothing of the current types to
	// merge. Partition 1 merges its float files, not its int ones.
	if st, err := lk.Compact(ctx, v2, 0, 1<<20); err != nil || st.FilesIn != 0 {
		t.Fatalf("compaction of partition 0: %+v %v", st, err)
	}
	before, _ := lk.Manifest(ctx, "iot")
	st, err := lk.Compact(ctx, v2, 1, 1<<20)
	if err != nil || st.FilesIn == 0 {
		t.Fatalf("compaction of partition 1: %+v %v", st, err)
	}
	after, _ := lk.Manifest(ctx, "iot")
	intFiles := func(m lake.Manifest) (keys []string) {
		for _, f := range m.Files {
			if f.Part == 1 && f.First < 16 {
				keys = append(keys, f.Key)
			}
		}
		return keys
	}
	if b, a := intFiles(before), intFiles(after); len(b) == 0 || strings.Join(a, ",") != strings.Join(b, ",") {
		t.Fatalf("partition 1's int files %v, were %v: want them kept as they are", a, b)
	}
	ints, floats := 0, 0
	for _, f := range after.Files {
		if f.Part == 1 && f.First >= 16 {
			floats++
		} else {
			ints++
		}
	}
	// temp as string: the int files of both partitions and the float files
	// of partition 1 cannot be read so.
	cs, err := lk.CheckFields("iot", map[string]logic.FieldType{"temp": logic.TypeString})
	if err != nil {
		t.Fatal(err)
	}
	var held []string
	for _, c := range cs {
		held = append(held, fmt.Sprintf("%s %d files %v parts %v", c.Held, c.Files, c.Ranges, c.RangeParts))
	}
	if want := fmt.Sprintf("int %d files [[1 15] [1 15]] parts [0 1], float %d files [[16 30]] parts [1]", ints, floats); strings.Join(held, ", ") != want {
		t.Fatalf("conflicts %q, want %s", held, want)
	}
	// Writing partition 0 as a string is refused, leaving it as it was.
	v3 := storagetest.SchemaStream(t, map[string]logic.FieldType{"temp": logic.TypeString})
	rows := storagetest.SchemaRows(v3, 16, 5)
	var se *lake.SchemaError
	if _, err := lk.Write(v3, rows); !errors.As(err, &se) {
		t.Fatalf("a write of types the lake cannot be read as: %v", err)
	}
}
