package batch

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
)

func stream(t *testing.T, fields map[string]logic.FieldType) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("iot", logic.StreamDef{Time: "ts", Fields: fields}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSourceSQLReadsDeclaredTypes: over files written with temp as int and
// then as float, with a field added, one removed and a field named date
// (the name of the lake's directories), the source relation has exactly
// the declared fields with their declared types, and every value as
// written.
func TestSourceSQLReadsDeclaredTypes(t *testing.T) {
	lk, err := lake.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v1 := stream(t, map[string]logic.FieldType{"ts": logic.TypeTime, "date": logic.TypeString, "temp": logic.TypeInt, "gone": logic.TypeBool})
	v2 := stream(t, map[string]logic.FieldType{"ts": logic.TypeTime, "date": logic.TypeString, "temp": logic.TypeFloat, "site": logic.TypeString, "later": logic.TypeInt})
	now := stream(t, map[string]logic.FieldType{"ts": logic.TypeTime, "date": logic.TypeString, "temp": logic.TypeFloat, "site": logic.TypeString, "later": logic.TypeInt, "never": logic.TypeBool})
	mk := func(s *logic.Stream, seq uint64, vals map[string]logic.Value) lake.Row {
		ev := logic.Event{Time: int64(seq) * 3600_000, Values: make([]logic.Value, len(s.Fields))}
		ev.Values[s.TimeField] = logic.Value{Kind: logic.TypeTime, I: ev.Time}
		for n, v := range vals {
			ev.Values[s.FieldIndex(n)] = v
		}
		return lake.Row{Seq: seq, Event: ev}
	}
	str := func(x string) logic.Value { return logic.Value{Kind: logic.TypeString, S: x} }
	var files []string
	for _, w := range []struct {
		s    *logic.Stream
		rows []lake.Row
	}{
		{v1, []lake.Row{mk(v1, 1, map[string]logic.Value{"date": str("d1"), "temp": {Kind: logic.TypeInt, I: 7}, "gone": {Kind: logic.TypeBool, I: 1}}), mk(v1, 2, nil)}},
		{v2, []lake.Row{mk(v2, 3, map[string]logic.Value{"date": str("d3"), "temp": {Kind: logic.TypeFloat, F: 2.5}, "site": str("north"), "later": {Kind: logic.TypeInt, I: 4}})}},
	} {
		fs, err := lk.Write(w.s, w.rows)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, fs...)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	src := sourceSQL(now, files)
	rs, err := db.Query("DESCRIBE " + src)
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for rs.Next() {
		var name, typ string
		var x1, x2, x3, x4 any
		if err := rs.Scan(&name, &typ, &x1, &x2, &x3, &x4); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, name+" "+typ)
	}
	rs.Close()
	want := "date VARCHAR, later BIGINT, never BOOLEAN, site VARCHAR, temp DOUBLE, ts TIMESTAMP, _seq BIGINT, _idx INTEGER, _arrival BIGINT, _time BIGINT, _id VARCHAR, _part INTEGER"
	if got := strings.Join(cols, ", "); got != want {
		t.Fatalf("columns:\n got %s\nwant %s", got, want)
	}
	// The empty relation has the same columns.
	if rs, err = db.Query("DESCRIBE " + sourceSQL(now, nil)); err != nil {
		t.Fatal(err)
	}
	cols = cols[:0]
	for rs.Next() {
		var name, typ string
		var x1, x2, x3, x4 any
		if err := rs.Scan(&name, &typ, &x1, &x2, &x3, &x4); err != nil {
			t.Fatal(err)
		}
		cols = append(cols, name+" "+typ)
	}
	rs.Close()
	if got := strings.Join(cols, ", "); got != want {
		t.Fatalf("columns without files:\n got %s\nwant %s", got, want)
	}
	rows, err := db.Query("SELECT _seq, date, temp, site, later, never FROM (" + src + ") ORDER BY _seq")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var seq int64
		var date, site sql.NullString
		var temp sql.NullFloat64
		var later sql.NullInt64
		var never sql.NullBool
		if err := rows.Scan(&seq, &date, &temp, &site, &later, &never); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%d %v/%s %v/%v %v/%s %v/%d %v", seq, date.Valid, date.String, temp.Valid, temp.Float64, site.Valid, site.String, later.Valid, later.Int64, never.Valid))
	}
	wantRows := []string{"1 true/d1 true/7 false/ false/0 false", "2 false/ false/0 false/ false/0 false", "3 true/d3 true/2.5 true/north true/4 false"}
	if strings.Join(got, "\n") != strings.Join(wantRows, "\n") {
		t.Fatalf("rows:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantRows, "\n"))
	}
}

// TestSourceSQLPartOfOldFiles: a file written before stream partitions
// (no _part column) reads as partition 0, beside files of partitions 0
// and 2, alone or together.
func TestSourceSQLPartOfOldFiles(t *testing.T) {
	dir := t.TempDir()
	lk, err := lake.OpenDir(filepath.Join(dir, "lake"))
	if err != nil {
		t.Fatal(err)
	}
	s := stream(t, map[string]logic.FieldType{"ts": logic.TypeTime, "temp": logic.TypeInt})
	row := func(p int, seq uint64) lake.Row {
		ev := logic.Event{Time: int64(seq) * 1000, Values: make([]logic.Value, len(s.Fields))}
		ev.Values[s.TimeField] = logic.Value{Kind: logic.TypeTime, I: ev.Time}
		return lake.Row{Part: p, Seq: seq, Event: ev}
	}
	var files []string
	for _, rows := range [][]lake.Row{{row(0, 1), row(0, 2)}, {row(2, 1)}, {row(0, 3)}} {
		fs, err := lk.Write(s, rows)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, fs...)
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The last file as written before stream partitions.
	old := filepath.Join(dir, "old.parquet")
	if _, err := db.Exec(fmt.Sprintf("COPY (SELECT * EXCLUDE (_part) FROM read_parquet(%s)) TO %s (FORMAT parquet)", quoteString(files[2]), quoteString(old))); err != nil {
		t.Fatal(err)
	}
	read := func(files []string) string {
		t.Helper()
		rows, err := db.Query("SELECT _part, _seq FROM (" + sourceSQL(s, files) + ") ORDER BY _part, _seq")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []string
		for rows.Next() {
			var p, seq int64
			if err := rows.Scan(&p, &seq); err != nil {
				t.Fatal(err)
			}
			got = append(got, fmt.Sprintf("%d:%d", p, seq))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return strings.Join(got, " ")
	}
	if got, want := read([]string{files[0], files[1], old}), "0:1 0:2 0:3 2:1"; got != want {
		t.Fatalf("old and new files: %s, want %s", got, want)
	}
	if got, want := read([]string{old}), "0:3"; got != want {
		t.Fatalf("an old file alone: %s, want %s", got, want)
	}
}
