package lake_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/storage/fsatomic"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/storagetest"
)

// The lake's contract (write, commit, read with DuckDB, recovery, schema
// epochs) is checked by storagetest's suite (conformance_test.go); the
// tests here look at the files on disk.

func TestFilesAndRecoverIgnoreUncommitted(t *testing.T) {
	s := storagetest.LakeStream(t)
	dir := t.TempDir()
	lk, err := lake.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	rows, _ := storagetest.LakeRows(s, 1, 10, base, 0)
	if _, err := lk.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit("orders", lake.Checkpoint{Seq: 10, Arrival: 1, CoveredUntil: 1}); err != nil {
		t.Fatal(err)
	}
	committed, _ := lk.Files("orders")
	// A writer crashed: a file beyond the checkpoint and temp files remain.
	more, _ := storagetest.LakeRows(s, 11, 5, base, 0)
	beyond, err := lk.Write(s, more)
	if err != nil {
		t.Fatal(err)
	}
	dateDir := filepath.Dir(committed[0])
	tmp := filepath.Join(dateDir, fsatomic.TempPrefix+"half-written")
	if err := os.WriteFile(tmp, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	tmpCp := filepath.Join(dir, "orders", fsatomic.TempPrefix+"checkpoint.json-x")
	if err := os.WriteFile(tmpCp, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := lk.Files("orders")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(files) != fmt.Sprint(committed) {
		t.Fatalf("Files = %v, want only committed %v", files, committed)
	}
	if err := lk.Recover("orders"); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(beyond, tmp, tmpCp) {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s survived Recover (%v)", p, err)
		}
	}
	for _, p := range committed {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("committed %s removed: %v", p, err)
		}
	}
	var n int
	if err := storagetest.DuckDB(t).QueryRow("SELECT count(*) FROM " + storagetest.ParquetSource(committed)).Scan(&n); err != nil || n != 10 {
		t.Fatalf("count %d %v", n, err)
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
		lk, err := lake.Open(t.TempDir())
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
	for i := range sized {
		if filepath.Base(filepath.Dir(sized[i]))+filepath.Base(sized[i]) != filepath.Base(filepath.Dir(released[i]))+filepath.Base(released[i]) {
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
