package storagetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2" // the batch layer reads lake files with DuckDB

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
)

// Lake is the immutable event archive: per stream, files each holding
// rows of log records of one stream partition, and a manifest written last
// that lists them with a checkpoint per stream partition. The archivers
// (one per stream partition at a time, in any processes) write it; batch
// runs and audits read it.
//
// Contract:
//   - Write (and WriteSized, WriteReleasing: the same files, with their
//     bytes; rows zeroed as they are written) stores rows of a contiguous,
//     ascending sequence range of one stream partition as immutable files,
//     one per event date (UTC). A file is invisible to readers until a
//     checkpoint of its partition at or beyond its last sequence is
//     committed.
//   - CommitPart records a stream partition's checkpoint (state and
//     position together: the partition's files up to Seq, the arrival of
//     Seq, the coverage); those files become visible at once.
//     PartCheckpoint returns the last committed one, the zero value for a
//     partition without one, to any handle. Commit, Checkpoint and Recover
//     are CommitPart, PartCheckpoint and RecoverPart of partition 0.
//   - Files / CommittedFiles list the committed files of every partition,
//     ordered by first sequence, as paths DuckDB's read_parquet reads,
//     with each file's partition, range and date; each record (_part,
//     _seq, _idx) appears in exactly one of them.
//   - RecoverPart, called before a partition's writer starts, reads the
//     stream's committed state again and sets aside what a writer of the
//     partition that crashed before committing left (files beyond the
//     checkpoint, their schema epochs), so that a later commit never makes
//     them visible.
//   - Epochs lists the field types of the committed files, per partition
//     oldest first; CheckFields returns the declared types the committed
//     files cannot be read as. A Write whose types the lake cannot be
//     read as is refused with a *lake.SchemaError, leaving the lake as it
//     was.
//   - Manifest returns the stream's committed state at once: generation,
//     checkpoints, files with their metadata (key, date, partition, range,
//     rows, bytes, arrival and event-time bounds), epochs. A commit of a
//     partition whose checkpoint another writer (handle) moved since this
//     one last saw it fails with lake.ErrConflict, and nothing of it is
//     visible; commits of other partitions by other handles in between
//     are no conflict.
//   - Local returns local copies of objects, readable until released.
//   - Compact merges small files of a date and partition into bigger ones
//     in one commit: the rows (with their _part, _seq, _idx) are
//     unchanged, the files fewer; the replaced files stay readable (to a
//     reader holding the older manifest) for the lake's grace period,
//     after which Sweep deletes them. It may run while writers commit the
//     stream.
//   - DropBefore removes the date partitions dated before a date in one
//     commit.
//   - Safe for concurrent use; one writer per stream partition at a time.
//     An error means the operation did not happen (a Write's files may
//     exist, invisible).
type Lake interface {
	Write(s *logic.Stream, rows []lake.Row) ([]string, error)
	WriteSized(s *logic.Stream, rows []lake.Row) (files []string, bytes int64, err error)
	WriteReleasing(s *logic.Stream, rows []lake.Row) (files []string, bytes int64, err error)
	CommitPart(stream string, p int, cp lake.Checkpoint) error
	Commit(stream string, cp lake.Checkpoint) error
	PartCheckpoint(stream string, p int) (lake.Checkpoint, error)
	Checkpoint(stream string) (lake.Checkpoint, error)
	Files(stream string) ([]string, error)
	CommittedFiles(stream string) ([]lake.File, error)
	RecoverPart(stream string, p int) error
	Recover(stream string) error
	Epochs(stream string) ([]lake.Epoch, error)
	CheckFields(stream string, declared map[string]logic.FieldType) ([]lake.Conflict, error)
	Manifest(ctx context.Context, stream string) (lake.Manifest, error)
	Local(ctx context.Context, keys []string) (paths []string, release func(), err error)
	Compact(ctx context.Context, s *logic.Stream, p int, targetBytes int64) (lake.CompactStats, error)
	DropBefore(ctx context.Context, stream, date string) (int, error)
	Sweep(ctx context.Context, stream string) (int, error)
}

// LakeOptions are what a handle of the suite's lake is opened with.
type LakeOptions struct {
	Grace time.Duration // the lake's grace period (0: the default)
}

// NewLake makes a fresh, empty lake and returns a function that opens a
// handle on it (again: a call after a simulated crash is a restarted
// process; every handle has its own local work directory and cache).
type NewLake func(t *testing.T) (open func(LakeOptions) Lake)

// RunLake runs the lake suite.
func RunLake(t *testing.T, newLake NewLake) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, func() Lake)
	}{
		{"WriteCommitRead", lakeWriteCommitRead},
		{"FilesVisibleOnlyAfterCommit", lakeVisibleAfterCommit},
		{"RecoverAfterCrash", lakeRecover},
		{"SchemaRecord", lakeSchema},
		{"ManifestMetadata", lakeManifestMetadata},
		{"CommitFencing", lakeFencing},
		{"CompactDuringWrites", lakeCompactDuringWrites},
		{"DropBefore", lakeDropBefore},
		{"PartitionsCommittedConcurrently", lakePartsConcurrent},
		{"PartitionFencing", lakePartsFencing},
		{"PartitionCompaction", lakePartsCompact},
	} {
		t.Run(c.name, func(t *testing.T) {
			open := newLake(t)
			c.fn(t, func() Lake { return open(LakeOptions{}) })
		})
	}
	t.Run("Compact", func(t *testing.T) { lakeCompact(t, newLake(t)) })
}

// LakeStream is the lake suite's stream "orders": ts, id and a nullable
// field of every type (country, amount, qty, paid, shipped).
func LakeStream(t testing.TB) *logic.Stream {
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

// LakeWant is what a row of LakeRows should read back as (nil: null).
type LakeWant struct {
	id      string
	ts      int64
	country *string
	amount  *float64
	qty     *int64
	paid    *bool
	shipped *int64
}

// LakeRows makes rows first..first+n-1 of LakeStream, 37 minutes of event
// time apart from base (so over several UTC dates), salt varying the
// values, with what each should read back as.
func LakeRows(s *logic.Stream, first, n uint64, base int64, salt int) ([]lake.Row, map[uint64]LakeWant) {
	rows := make([]lake.Row, 0, n)
	exp := map[uint64]LakeWant{}
	for i := uint64(0); i < n; i++ {
		seq := first + i
		ts := base + int64(seq)*37*60*1000
		w := LakeWant{id: fmt.Sprintf("e%d-%d", seq, salt), ts: ts}
		vals := make([]logic.Value, len(s.Fields))
		set := func(name string, v logic.Value) { vals[s.FieldIndex(name)] = v }
		set("ts", logic.Value{Kind: logic.TypeTime, I: ts})
		set("id", logic.Value{Kind: logic.TypeString, S: w.id})
		if seq%5 != 0 {
			c := []string{"US", "FR", "Zoë \"q\""}[(int(seq)+salt)%3]
			w.country = &c
			set("country", logic.Value{Kind: logic.TypeString, S: c})
		}
		if seq%7 != 0 {
			a := float64(seq)*1.25 - 3 + float64(salt)
			w.amount = &a
			set("amount", logic.Value{Kind: logic.TypeFloat, F: a})
		}
		if seq%4 != 0 {
			q := int64(seq%11) - 5 + int64(salt)
			w.qty = &q
			set("qty", logic.Value{Kind: logic.TypeInt, I: q})
		}
		if seq%3 != 0 {
			p := (int(seq)+salt)%2 == 0
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

// DuckDB opens an in-memory DuckDB, closed when the test ends.
func DuckDB(t testing.TB) *sql.DB {
	t.Helper()
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// ParquetSource is a DuckDB table expression reading the Parquet files.
func ParquetSource(files []string) string {
	q := make([]string, len(files))
	for i, f := range files {
		q[i] = "'" + strings.ReplaceAll(f, "'", "''") + "'"
	}
	return "read_parquet([" + strings.Join(q, ",") + "])"
}

// checkLakeRows reads the stream's committed files with DuckDB and checks
// they hold exactly the expected rows, each once.
func checkLakeRows(t *testing.T, lk Lake, stream string, exp map[uint64]LakeWant) {
	t.Helper()
	files, err := lk.Files(stream)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		if len(exp) != 0 {
			t.Fatalf("no committed files, want %d rows", len(exp))
		}
		return
	}
	db := DuckDB(t)
	r, err := db.Query(`SELECT _seq, _arrival, _time, _id, epoch_ms(ts), id, country, amount, qty, paid, epoch_ms(shipped) FROM ` + ParquetSource(files))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	seen := map[uint64]bool{}
	for r.Next() {
		var seq, arrival, tms, tsms int64
		var id, id2 string
		var country sql.NullString
		var amount sql.NullFloat64
		var qty, shipped sql.NullInt64
		var paid sql.NullBool
		if err := r.Scan(&seq, &arrival, &tms, &id, &tsms, &id2, &country, &amount, &qty, &paid, &shipped); err != nil {
			t.Fatal(err)
		}
		w, ok := exp[uint64(seq)]
		if !ok {
			t.Fatalf("unexpected seq %d", seq)
		}
		if seen[uint64(seq)] {
			t.Fatalf("seq %d read twice", seq)
		}
		seen[uint64(seq)] = true
		if arrival != 1_700_000_000_000+seq || tms != w.ts || tsms != w.ts || id != w.id || id2 != w.id {
			t.Fatalf("seq %d: arrival %d time %d ts %d id %q/%q, want %+v", seq, arrival, tms, tsms, id, id2, w)
		}
		if country.Valid != (w.country != nil) || (country.Valid && country.String != *w.country) {
			t.Fatalf("seq %d country %+v want %v", seq, country, w.country)
		}
		if amount.Valid != (w.amount != nil) || (amount.Valid && math.Abs(amount.Float64-*w.amount) > 0) {
			t.Fatalf("seq %d amount %+v want %v", seq, amount, w.amount)
		}
		if qty.Valid != (w.qty != nil) || (qty.Valid && qty.Int64 != *w.qty) {
			t.Fatalf("seq %d qty %+v want %v", seq, qty, w.qty)
		}
		if paid.Valid != (w.paid != nil) || (paid.Valid && paid.Bool != *w.paid) {
			t.Fatalf("seq %d paid %+v want %v", seq, paid, w.paid)
		}
		if shipped.Valid != (w.shipped != nil) || (shipped.Valid && shipped.Int64 != *w.shipped) {
			t.Fatalf("seq %d shipped %+v want %v", seq, shipped, w.shipped)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(exp) {
		t.Fatalf("read %d rows, want %d", len(seen), len(exp))
	}
}

func commitRows(t *testing.T, lk Lake, stream string, rows []lake.Row) lake.Checkpoint {
	t.Helper()
	last := rows[len(rows)-1]
	cp := lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 1}
	if err := lk.Commit(stream, cp); err != nil {
		t.Fatal(err)
	}
	return cp
}

func lakeWriteCommitRead(t *testing.T, open func() Lake) {
	lk := open()
	s := LakeStream(t)
	base := time.Date(2024, 3, 1, 20, 0, 0, 0, time.UTC).UnixMilli()
	rows, exp := LakeRows(s, 1, 300, base, 0)
	// Three writes, one per write method, over several dates each.
	var written []string
	for i, part := range [][]lake.Row{rows[:100], rows[100:200], rows[200:]} {
		var files []string
		var n int64
		var err error
		switch i {
		case 0:
			files, err = lk.Write(s, part)
		case 1:
			files, n, err = lk.WriteSized(s, part)
		case 2:
			files, n, err = lk.WriteReleasing(s, part)
			for j, r := range part {
				if r.Seq != 0 || r.Event.Values != nil || r.Event.ID != "" {
					t.Fatalf("row %d not released: %+v", j, r)
				}
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(files) < 2 || (i > 0 && n <= 0) {
			t.Fatalf("write %d: files %v (%d bytes), want one per event date (>= 2)", i, files, n)
		}
		written = append(written, files...)
	}
	if cp, err := lk.Checkpoint("orders"); err != nil || cp != (lake.Checkpoint{}) {
		t.Fatalf("checkpoint before any commit: %+v %v", cp, err)
	}
	if got, err := lk.Files("orders"); err != nil || len(got) != 0 {
		t.Fatalf("uncommitted files visible: %v %v", got, err)
	}
	want := lake.Checkpoint{Seq: 300, Arrival: 1_700_000_000_300, CoveredUntil: 1_700_000_000_301}
	if err := lk.Commit("orders", want); err != nil {
		t.Fatal(err)
	}
	// Another handle (a reader process) sees the checkpoint and the files.
	rd := open()
	if cp, err := rd.Checkpoint("orders"); err != nil || cp != want {
		t.Fatalf("checkpoint %+v %v, want %+v", cp, err, want)
	}
	checkLakeRows(t, rd, "orders", exp)
	// CommittedFiles: ordered by first record, disjoint ranges covering
	// 1..300, each file's rows in its range and on its date.
	cfs, err := rd.CommittedFiles("orders")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfs) != len(written) {
		t.Fatalf("%d committed files, %d written", len(cfs), len(written))
	}
	db := DuckDB(t)
	covered := 0
	for i, f := range cfs {
		if i > 0 && f.First <= cfs[i-1].First {
			t.Fatalf("files not ordered by first record: %+v then %+v", cfs[i-1], f)
		}
		var lo, hi, n int64
		var dlo, dhi string
		q := "SELECT min(_seq), max(_seq), count(*), strftime(min(ts), '%Y-%m-%d'), strftime(max(ts), '%Y-%m-%d') FROM " + ParquetSource([]string{f.Path})
		if err := db.QueryRow(q).Scan(&lo, &hi, &n, &dlo, &dhi); err != nil {
			t.Fatal(err)
		}
		if uint64(lo) < f.First || uint64(hi) > f.Last || dlo != f.Date || dhi != f.Date {
			t.Fatalf("file %+v holds records %d..%d of dates %s..%s", f, lo, hi, dlo, dhi)
		}
		covered += int(n)
	}
	if covered != 300 {
		t.Fatalf("committed files hold %d rows, want 300", covered)
	}
	// Streams are apart: another has no checkpoint and no files.
	if cp, err := rd.Checkpoint("none"); err != nil || cp != (lake.Checkpoint{}) {
		t.Fatalf("empty checkpoint %+v %v", cp, err)
	}
	if f, err := rd.Files("none"); err != nil || len(f) != 0 {
		t.Fatalf("empty files %v %v", f, err)
	}
}

func lakeVisibleAfterCommit(t *testing.T, open func() Lake) {
	lk := open()
	s := LakeStream(t)
	base := time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	rows, exp := LakeRows(s, 1, 60, base, 0)
	if _, err := lk.Write(s, rows[:20]); err != nil {
		t.Fatal(err)
	}
	commitRows(t, lk, "orders", rows[:20])
	if _, err := lk.Write(s, rows[20:40]); err != nil {
		t.Fatal(err)
	}
	firstPart := map[uint64]LakeWant{}
	for seq := uint64(1); seq <= 20; seq++ {
		firstPart[seq] = exp[seq]
	}
	checkLakeRows(t, lk, "orders", firstPart)
	checkLakeRows(t, open(), "orders", firstPart)
	if _, err := lk.Write(s, rows[40:]); err != nil {
		t.Fatal(err)
	}
	// A checkpoint in the middle of the written files shows only the files
	// it covers whole: here those of 21..40.
	cp := commitRows(t, lk, "orders", rows[:40])
	for seq := uint64(1); seq <= 40; seq++ {
		firstPart[seq] = exp[seq]
	}
	checkLakeRows(t, lk, "orders", firstPart)
	if got, _ := open().Checkpoint("orders"); got != cp {
		t.Fatalf("checkpoint %+v, want %+v", got, cp)
	}
	commitRows(t, lk, "orders", rows)
	checkLakeRows(t, lk, "orders", exp)
}

// lakeRecover: a writer crashes after writing files it never committed;
// the restarted writer recovers, writes the same records again (other
// values) and commits further. The crashed files never become visible.
func lakeRecover(t *testing.T, open func() Lake) {
	lk := open()
	s := LakeStream(t)
	base := time.Date(2024, 7, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	rows, exp := LakeRows(s, 1, 10, base, 0)
	if _, err := lk.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	cp := commitRows(t, lk, "orders", rows)
	lost, _ := LakeRows(s, 11, 20, base, 1) // records 11..30
	if _, err := lk.Write(s, lost); err != nil {
		t.Fatal(err)
	}
	// Crash; a new process opens the lake and recovers the stream.
	lk = open()
	if err := lk.Recover("orders"); err != nil {
		t.Fatal(err)
	}
	if got, err := lk.Checkpoint("orders"); err != nil || got != cp {
		t.Fatalf("checkpoint after recovery %+v %v, want %+v", got, err, cp)
	}
	checkLakeRows(t, lk, "orders", exp)
	again, exp2 := LakeRows(s, 11, 10, base, 2) // records 11..20, other values
	if _, err := lk.Write(s, again); err != nil {
		t.Fatal(err)
	}
	commitRows(t, lk, "orders", again)
	more, exp3 := LakeRows(s, 21, 20, base, 3) // records 21..40
	if _, err := lk.Write(s, more); err != nil {
		t.Fatal(err)
	}
	commitRows(t, lk, "orders", more)
	for seq, w := range exp2 {
		exp[seq] = w
	}
	for seq, w := range exp3 {
		exp[seq] = w
	}
	// Had the crashed files (11..30) survived, the checkpoint at 40 would
	// show records 11..30 twice.
	checkLakeRows(t, lk, "orders", exp)
	if err := lk.Recover("none"); err != nil {
		t.Fatalf("recover a stream never written: %v", err)
	}
}

// epochFields is the record form of field types (lake.Epoch.Fields).
func epochFields(s *logic.Stream) map[string]string {
	out := map[string]string{}
	for _, f := range s.Fields {
		out[f.Name] = f.Type.String()
	}
	return out
}

// SchemaStream is a stream "iot" with the given field types besides ts
// (time).
func SchemaStream(t testing.TB, fields map[string]logic.FieldType) *logic.Stream {
	t.Helper()
	def := map[string]logic.FieldType{"ts": logic.TypeTime}
	for n, ft := range fields {
		def[n] = ft
	}
	s, err := logic.NewStream("iot", logic.StreamDef{Time: "ts", Fields: def}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// SchemaRows makes rows first..first+n-1 of s, one event each, every
// field set, event times two hours apart from 2026-11-01 (several dates).
func SchemaRows(s *logic.Stream, first, n uint64) []lake.Row {
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	rows := make([]lake.Row, 0, n)
	for seq := first; seq < first+n; seq++ {
		ts := base + int64(seq)*2*3600*1000
		vals := make([]logic.Value, len(s.Fields))
		for i, f := range s.Fields {
			switch f.Type {
			case logic.TypeString:
				vals[i] = logic.Value{Kind: f.Type, S: fmt.Sprint("v", seq)}
			case logic.TypeFloat:
				vals[i] = logic.Value{Kind: f.Type, F: float64(seq) + 0.5}
			case logic.TypeBool:
				vals[i] = logic.Value{Kind: f.Type, I: int64(seq % 2)}
			default:
				vals[i] = logic.Value{Kind: f.Type, I: int64(seq)}
			}
		}
		vals[s.TimeField] = logic.Value{Kind: logic.TypeTime, I: ts}
		rows = append(rows, lake.Row{Seq: seq, Arrival: 1_700_000_000_000 + int64(seq), Event: logic.Event{Time: ts, Values: vals}})
	}
	return rows
}

func checkEpochs(t *testing.T, lk Lake, want []lake.Epoch) {
	t.Helper()
	got, err := lk.Epochs("iot")
	if err != nil {
		t.Fatal(err)
	}
	sum := func(es []lake.Epoch) string {
		var b strings.Builder
		for _, e := range es {
			names := make([]string, 0, len(e.Fields))
			for n, ty := range e.Fields {
				names = append(names, n+":"+ty)
			}
			slices.Sort(names)
			fmt.Fprintf(&b, "%d@%s | ", e.From, strings.Join(names, ","))
		}
		return b.String()
	}
	if sum(got) != sum(want) {
		t.Fatalf("epochs %s, want %s", sum(got), sum(want))
	}
}

// lakeSchema follows a stream's field types: compatible changes start an
// epoch once committed, an uncommitted one is no part of the lake (and
// Recover drops it), an incompatible write is refused.
func lakeSchema(t *testing.T, open func() Lake) {
	lk := open()
	v1 := SchemaStream(t, map[string]logic.FieldType{"device": logic.TypeString, "temp": logic.TypeInt})
	v2 := SchemaStream(t, map[string]logic.FieldType{"device": logic.TypeString, "temp": logic.TypeFloat, "site": logic.TypeString})
	v3 := SchemaStream(t, map[string]logic.FieldType{"device": logic.TypeString, "temp": logic.TypeFloat, "site": logic.TypeString, "on": logic.TypeBool})
	bad := SchemaStream(t, map[string]logic.FieldType{"device": logic.TypeInt, "temp": logic.TypeFloat, "site": logic.TypeString})
	checkEpochs(t, lk, nil)
	write := func(s *logic.Stream, first, n uint64, commit bool) {
		t.Helper()
		rows := SchemaRows(s, first, n)
		if _, err := lk.Write(s, rows); err != nil {
			t.Fatal(err)
		}
		if commit {
			commitRows(t, lk, "iot", rows)
		}
	}
	write(v1, 1, 10, true)
	write(v1, 11, 10, true) // same types: no new epoch
	checkEpochs(t, lk, []lake.Epoch{{From: 1, Fields: epochFields(v1)}})
	write(v2, 21, 10, false) // a new field, int -> float: an epoch, not yet committed
	checkEpochs(t, lk, []lake.Epoch{{From: 1, Fields: epochFields(v1)}})
	commitRows(t, lk, "iot", SchemaRows(v2, 21, 10))
	want := []lake.Epoch{{From: 1, Fields: epochFields(v1)}, {From: 21, Fields: epochFields(v2)}}
	checkEpochs(t, lk, want)
	checkEpochs(t, open(), want)

	// device: int cannot be read from strings: declared, it conflicts;
	// written, it is refused and leaves the lake as it was.
	cs, err := lk.CheckFields("iot", lake.DeclaredTypes(bad))
	if err != nil || len(cs) != 1 || cs[0].Field != "device" || cs[0].Held != logic.TypeString || cs[0].Declared != logic.TypeInt {
		t.Fatalf("device: int: %+v %v", cs, err)
	}
	cp, _ := lk.Checkpoint("iot")
	var se *lake.SchemaError
	if _, err := lk.Write(bad, SchemaRows(bad, 31, 1)); !errors.As(err, &se) || len(se.Conflicts) != 1 || se.Conflicts[0].Field != "device" {
		t.Fatalf("write with device: int: %v", err)
	}
	checkEpochs(t, lk, want)
	if got, _ := lk.Checkpoint("iot"); got != cp {
		t.Fatalf("checkpoint moved by a refused write: %+v", got)
	}
	// temp: int is refused now too (the newer files hold floats); the
	// types written conflict with nothing.
	if cs, err := lk.CheckFields("iot", lake.DeclaredTypes(v1)); err != nil || len(cs) != 1 || cs[0].Field != "temp" || cs[0].Held != logic.TypeFloat {
		t.Fatalf("temp: int after floats: %+v %v", cs, err)
	}
	if cs, err := lk.CheckFields("iot", lake.DeclaredTypes(v2)); err != nil || len(cs) != 0 {
		t.Fatalf("the types written: %+v %v", cs, err)
	}

	// Written and not committed: not part of the lake; after a crash
	// Recover drops it, and writing v2 again starts no epoch.
	write(v3, 31, 5, false)
	checkEpochs(t, lk, want)
	if cs, err := lk.CheckFields("iot", map[string]logic.FieldType{"on": logic.TypeInt}); err != nil || len(cs) != 0 {
		t.Fatalf("an uncommitted epoch conflicts: %v %v", cs, err)
	}
	lk = open()
	if err := lk.Recover("iot"); err != nil {
		t.Fatal(err)
	}
	write(v2, 31, 5, true)
	checkEpochs(t, lk, want)
}

// CheckLakeRows reads the stream's committed files with DuckDB and checks
// they hold exactly the rows of exp (LakeRows' expectations), each once.
func CheckLakeRows(t *testing.T, lk Lake, stream string, exp map[uint64]LakeWant) {
	t.Helper()
	checkLakeRows(t, lk, stream, exp)
}
