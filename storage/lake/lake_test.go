package lake_test

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
)

func testStream(t *testing.T) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{
		Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"amount": logic.TypeFloat, "qty": logic.TypeInt, "paid": logic.TypeBool, "shipped": logic.TypeTime},
	}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type want struct {
	id      string
	ts      int64
	country *string
	amount  *float64
	qty     *int64
	paid    *bool
	shipped *int64
}

func mkRows(s *logic.Stream, first, n uint64, base int64) ([]lake.Row, map[uint64]want) {
	rows := make([]lake.Row, 0, n)
	exp := map[uint64]want{}
	for i := uint64(0); i < n; i++ {
		seq := first + i
		// Spread over two UTC days so Write makes one file per date.
		ts := base + int64(seq)*37*60*1000
		w := want{id: fmt.Sprintf("e%d", seq), ts: ts}
		vals := make([]logic.Value, len(s.Fields))
		set := func(name string, v logic.Value) { vals[s.FieldIndex(name)] = v }
		set("ts", logic.Value{Kind: logic.TypeTime, I: ts})
		set("id", logic.Value{Kind: logic.TypeString, S: w.id})
		if seq%5 != 0 {
			c := []string{"US", "FR", "Zoë \"q\""}[seq%3]
			w.country = &c
			set("country", logic.Value{Kind: logic.TypeString, S: c})
		}
		if seq%7 != 0 {
			a := float64(seq)*1.25 - 3
			w.amount = &a
			set("amount", logic.Value{Kind: logic.TypeFloat, F: a})
		}
		if seq%4 != 0 {
			q := int64(seq%11) - 5
			w.qty = &q
			set("qty", logic.Value{Kind: logic.TypeInt, I: q})
		}
		if seq%3 != 0 {
			p := seq%2 == 0
			w.paid = &p
			v := logic.Value{Kind: logic.TypeBool}
			if p {
				v.I = 1
			}
			set("paid", v)
		}
		if seq%2 == 0 {
			sh := ts + 3600_000
			w.shipped = &sh
			set("shipped", logic.Value{Kind: logic.TypeTime, I: sh})
		}
		rows = append(rows, lake.Row{Seq: seq, Arrival: 1_700_000_000_000 + int64(seq), Event: logic.Event{ID: w.id, Time: ts, Values: vals}})
		exp[seq] = w
	}
	return rows, exp
}

func duck(t *testing.T) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func source(files []string) string {
	q := make([]string, len(files))
	for i, f := range files {
		q[i] = "'" + strings.ReplaceAll(f, "'", "''") + "'"
	}
	return "read_parquet([" + strings.Join(q, ",") + "])"
}

// The lake's contract (write, commit, read with DuckDB, recovery, schema
// epochs) is checked by storagetest's suite (conformance_test.go); the
// tests here look at the files on disk.

func TestFilesAndRecoverIgnoreUncommitted(t *testing.T) {
	s := testStream(t)
	dir := t.TempDir()
	lk, err := lake.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	rows, _ := mkRows(s, 1, 10, base)
	if _, err := lk.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit("orders", lake.Checkpoint{Seq: 10, Arrival: 1, CoveredUntil: 1}); err != nil {
		t.Fatal(err)
	}
	committed, _ := lk.Files("orders")
	// A writer crashed: a file beyond the checkpoint and temp files remain.
	more, _ := mkRows(s, 11, 5, base)
	beyond, err := lk.Write(s, more)
	if err != nil {
		t.Fatal(err)
	}
	dateDir := filepath.Dir(committed[0])
	tmp := filepath.Join(dateDir, lake.TempPrefix+"half-written")
	if err := os.WriteFile(tmp, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	tmpCp := filepath.Join(dir, "orders", lake.TempPrefix+"checkpoint.json-x")
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
	if err := duck(t).QueryRow("SELECT count(*) FROM " + source(committed)).Scan(&n); err != nil || n != 10 {
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
	s := testStream(t)
	base := time.Date(1969, 12, 31, 20, 0, 0, 0, time.UTC).UnixMilli()
	write := func(release bool) (files []string, rows []lake.Row) {
		lk, err := lake.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		rows, _ = mkRows(s, 1, 3000, base)
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
