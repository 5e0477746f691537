package lake_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/storagetest"
)

// writeRows writes and commits records first..first+n-1 of s, one event
// each, every field set, event times two hours apart (several dates).
func writeRows(t *testing.T, lk *lake.Lake, s *logic.Stream, first, n uint64) []string {
	t.Helper()
	rows := storagetest.SchemaRows(s, first, n)
	files, err := lk.Write(s, rows)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit(s.Name, lake.Checkpoint{Seq: first + n - 1, Arrival: rows[n-1].Arrival, CoveredUntil: rows[n-1].Arrival + 1}); err != nil {
		t.Fatal(err)
	}
	return files
}

// TestSchemaCompatibilityRules writes a field of every type into a lake of
// its own and checks every declared type against it: only the same type
// and int read as float are accepted (the rule written out here, not taken
// from logic), and a refusal says what the lake holds.
func TestSchemaCompatibilityRules(t *testing.T) {
	types := []logic.FieldType{logic.TypeString, logic.TypeInt, logic.TypeFloat, logic.TypeBool, logic.TypeTime}
	accepted := map[string]bool{"string→string": true, "int→int": true, "int→float": true, "float→float": true, "bool→bool": true, "time→time": true}
	for _, held := range types {
		lk, err := lake.OpenDir(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		files := writeRows(t, lk, storagetest.SchemaStream(t, map[string]logic.FieldType{"x": held}), 1, 20)
		for _, declared := range types {
			change := held.String() + "→" + declared.String()
			cs, err := lk.CheckFields("iot", map[string]logic.FieldType{"ts": logic.TypeTime, "x": declared, "new": logic.TypeBool})
			if err != nil {
				t.Fatal(err)
			}
			if accepted[change] {
				if len(cs) != 0 {
					t.Errorf("%s refused: %v", change, cs)
				}
				continue
			}
			if len(cs) != 1 {
				t.Fatalf("%s: %d conflicts, want 1: %v", change, len(cs), cs)
			}
			c := cs[0]
			if c.Stream != "iot" || c.Field != "x" || c.Held != held || c.Declared != declared || c.Files != len(files) ||
				len(c.Ranges) != 1 || c.Ranges[0] != [2]uint64{1, 20} || c.FirstDate != "2026-11-01" || c.LastDate != "2026-11-02" {
				t.Errorf("%s: conflict %+v (%d files written)", change, c, len(files))
			}
			msg := c.Error()
			for _, want := range []string{"the lake holds x as " + held.String(), "in 2 file(s)", "log records 1-20", "event dates 2026-11-01 to 2026-11-02",
				"cannot be read as " + declared.String(), "keep x: " + held.String(), "new field name", "remove the 2 file(s)"} {
				if !strings.Contains(msg, want) {
					t.Errorf("%s: message lacks %q: %s", change, want, msg)
				}
			}
		}
		// A removed field is no conflict.
		if cs, err := lk.CheckFields("iot", map[string]logic.FieldType{"ts": logic.TypeTime}); err != nil || len(cs) != 0 {
			t.Errorf("field removed: %v %v", cs, err)
		}
		// The manifest records the types written.
		rec, err := lk.Epochs("iot")
		if err != nil || len(rec) != 1 || rec[0].Fields["x"] != held.String() || rec[0].Fields["ts"] != "time" || len(rec[0].Fields) != 2 {
			t.Fatalf("epochs of %s: %+v %v", held, rec, err)
		}
	}
}

// manifestEpochs is the epochs of the stream's current manifest.
func manifestEpochs(t *testing.T, lk *lake.Lake) (epochs []lake.Epoch, gen uint64) {
	t.Helper()
	m, err := lk.Manifest(context.Background(), "iot")
	if err != nil {
		t.Fatal(err)
	}
	return m.Epochs, m.Gen
}

func epochSummary(es []lake.Epoch) string {
	var parts []string
	for _, e := range es {
		var fs []string
		for _, n := range []string{"device", "site", "temp", "ts"} {
			if ft, ok := e.Fields[n]; ok {
				fs = append(fs, n+":"+ft)
			}
		}
		parts = append(parts, fmt.Sprintf("%d@%s", e.From, strings.Join(fs, ",")))
	}
	return strings.Join(parts, " | ")
}

// TestSchemaRecord follows a stream through compatible changes, a refused
// one, a write never committed, and the removal by hand of the files
// holding an old type.
func TestSchemaRecord(t *testing.T) {
	dir := t.TempDir()
	lk, err := lake.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	v1 := storagetest.SchemaStream(t, map[string]logic.FieldType{"device": logic.TypeString, "temp": logic.TypeInt})
	v2 := storagetest.SchemaStream(t, map[string]logic.FieldType{"device": logic.TypeString, "temp": logic.TypeFloat, "site": logic.TypeString})
	bad := storagetest.SchemaStream(t, map[string]logic.FieldType{"device": logic.TypeInt, "temp": logic.TypeFloat, "site": logic.TypeString})

	old := writeRows(t, lk, v1, 1, 10)
	writeRows(t, lk, v1, 11, 10) // same types: no new epoch
	writeRows(t, lk, v2, 21, 10) // a new field, int → float: a new epoch
	es, gen := manifestEpochs(t, lk)
	if want := "1@device:string,temp:int,ts:time | 21@device:string,site:string,temp:float,ts:time"; epochSummary(es) != want {
		t.Fatalf("epochs %s, want %s", epochSummary(es), want)
	}

	// The writer refuses device: int, and leaves the lake as it was.
	cp, _ := lk.Checkpoint("iot")
	rows := []lake.Row{{Seq: 31, Event: logic.Event{Time: 0, Values: make([]logic.Value, len(bad.Fields))}}}
	var se *lake.SchemaError
	if _, err := lk.Write(bad, rows); !errors.As(err, &se) || len(se.Conflicts) != 1 || se.Conflicts[0].Field != "device" || se.Conflicts[0].Files < 2 {
		t.Fatalf("write with device: int: %v", err)
	}
	if es2, gen2 := manifestEpochs(t, lk); epochSummary(es2) != epochSummary(es) || gen2 != gen {
		t.Fatalf("manifest changed by a refused write: %s (generation %d, was %d)", epochSummary(es2), gen2, gen)
	}
	// temp: int is refused too now: the newer files hold floats.
	cs, err := lk.CheckFields("iot", map[string]logic.FieldType{"ts": logic.TypeTime, "device": logic.TypeString, "temp": logic.TypeInt})
	if err != nil || len(cs) != 1 || cs[0].Held != logic.TypeFloat || cs[0].Ranges[0] != [2]uint64{21, 30} {
		t.Fatalf("temp: int after floats: %+v %v", cs, err)
	}

	// Written and not committed: not part of the lake, for this handle
	// and another; Recover drops it.
	v3 := storagetest.SchemaStream(t, map[string]logic.FieldType{"device": logic.TypeString, "temp": logic.TypeFloat, "site": logic.TypeString, "on": logic.TypeBool})
	rows = nil
	for seq := uint64(31); seq <= 35; seq++ {
		vals := make([]logic.Value, len(v3.Fields))
		vals[v3.TimeField] = logic.Value{Kind: logic.TypeTime, I: 1000}
		rows = append(rows, lake.Row{Seq: seq, Event: logic.Event{Time: 1000, Values: vals}})
	}
	if _, err := lk.Write(v3, rows); err != nil {
		t.Fatal(err)
	}
	ro, err := lake.OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []*lake.Lake{lk, ro} {
		if got, err := h.Epochs("iot"); err != nil || len(got) != 2 {
			t.Fatalf("epochs with an uncommitted one: %d %v", len(got), err)
		}
		if cs, err := h.CheckFields("iot", map[string]logic.FieldType{"on": logic.TypeInt}); err != nil || len(cs) != 0 {
			t.Fatalf("an uncommitted epoch conflicts: %v %v", cs, err)
		}
	}
	if err := lk.Recover("iot"); err != nil {
		t.Fatal(err)
	}
	if err := lk.Commit("iot", lake.Checkpoint{Seq: 35, Arrival: 1, CoveredUntil: 1}); err != nil {
		t.Fatal(err)
	}
	if es, _ := manifestEpochs(t, lk); len(es) != 2 {
		t.Fatalf("after Recover, a commit took the dropped epoch: %s", epochSummary(es))
	}
	if files, _ := lk.CommittedFiles("iot"); files[len(files)-1].Last != 30 {
		t.Fatalf("after Recover, a commit took the dropped files: %+v", files[len(files)-1])
	}
	if err := lk.Commit("iot", cp); err != nil { // back to where it was
		t.Fatal(err)
	}

	// Removing the files that hold temp as float by hand (the way out the
	// refusal names) makes temp: int readable again; the writer's Recover
	// drops them from the manifest; their epoch stays, holding nothing.
	all, _ := lk.CommittedFiles("iot")
	for _, f := range all {
		if f.First >= 21 {
			if err := os.Remove(f.Path); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, h := range []*lake.Lake{lk, ro} {
		if cs, err := h.CheckFields("iot", map[string]logic.FieldType{"temp": logic.TypeInt, "site": logic.TypeInt}); err != nil || len(cs) != 0 {
			t.Fatalf("after removing the float files: %+v %v", cs, err)
		}
	}
	lk2, err := lake.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk2.Recover("iot"); err != nil {
		t.Fatal(err)
	}
	if files, err := lk2.Files("iot"); err != nil || len(files) != len(old)+2 {
		t.Fatalf("files after removing by hand: %v %v, want %d", files, err, len(old)+2)
	}
	writeRows(t, lk2, v1, 31, 5)
	if es, _ := manifestEpochs(t, lk2); len(es) != 3 || es[2].From != 31 || es[2].Fields["temp"] != "int" {
		t.Fatalf("epochs after writing ints again: %s", epochSummary(es))
	}
}

// TestCheckReadsNothingMissing: checking a lake that does not exist finds
// nothing and creates nothing.
func TestCheckReadsNothingMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "lake")
	lk, err := lake.OpenReadOnly(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cs, err := lk.CheckFields("iot", map[string]logic.FieldType{"x": logic.TypeInt}); err != nil || len(cs) != 0 {
		t.Fatalf("%v %v", cs, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the check created %s: %v", dir, err)
	}
}

// Compaction merges only files of the stream's current types: files of an
// older epoch stay as they are, and the epochs and conflicts are the same
// after it.
func TestCompactKeepsEpochs(t *testing.T) {
	ctx := context.Background()
	lk, err := lake.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v1 := storagetest.SchemaStream(t, map[string]logic.FieldType{"device": logic.TypeString, "temp": logic.TypeInt})
	v2 := storagetest.SchemaStream(t, map[string]logic.FieldType{"device": logic.TypeString, "temp": logic.TypeFloat})
	for seq := uint64(1); seq <= 40; seq += 4 { // one or two files a write, of 2026-11-01..04
		writeRows(t, lk, v1, seq, 4)
	}
	for seq := uint64(41); seq <= 80; seq += 4 {
		writeRows(t, lk, v2, seq, 4)
	}
	before, _ := lk.Manifest(ctx, "iot")
	conflictsBefore, _ := lk.CheckFields("iot", map[string]logic.FieldType{"temp": logic.TypeInt})
	st, err := lk.Compact(ctx, v2, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := lk.Manifest(ctx, "iot")
	var v1Before, v1After, v2After int
	for _, f := range before.Files {
		if f.First <= 40 {
			v1Before++
		}
	}
	for _, f := range after.Files {
		switch {
		case f.Last <= 40:
			v1After++
		case f.First > 40:
			v2After++
		default:
			t.Fatalf("a file spans both epochs: %+v", f)
		}
	}
	if st.FilesOut == 0 || v1After != v1Before || v2After != st.FilesOut+(len(before.Files)-v1Before-st.FilesIn) {
		t.Fatalf("compaction %+v: %d files of the old types (were %d), %d of the new", st, v1After, v1Before, v2After)
	}
	if epochSummary(after.Epochs) != epochSummary(before.Epochs) {
		t.Fatalf("epochs changed: %s, were %s", epochSummary(after.Epochs), epochSummary(before.Epochs))
	}
	conflictsAfter, _ := lk.CheckFields("iot", map[string]logic.FieldType{"temp": logic.TypeInt})
	if len(conflictsAfter) != 1 || len(conflictsBefore) != 1 || conflictsAfter[0].Ranges[0] != conflictsBefore[0].Ranges[0] {
		t.Fatalf("conflicts %+v, were %+v", conflictsAfter, conflictsBefore)
	}
	// Every value reads back as written: temp as float.
	files, _ := lk.Files("iot")
	var n int64
	var sum float64
	if err := storagetest.DuckDB(t).QueryRow("SELECT count(*), sum(CAST(temp AS DOUBLE)) FROM "+strings.TrimSuffix(storagetest.ParquetSource(files), ")")+", union_by_name=true)").Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	want := 0.0
	for seq := 1; seq <= 80; seq++ {
		if seq <= 40 {
			want += float64(seq)
		} else {
			want += float64(seq) + 0.5
		}
	}
	if n != 80 || sum != want {
		t.Fatalf("%d rows, sum of temp %v; want 80, %v", n, sum, want)
	}
}
