package storagetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/lake"
)

// PartSeq is a log record's place: its stream partition and sequence.
type PartSeq struct {
	Part int
	Seq  uint64
}

// LakePartRows is LakeRows of stream partition p: rows first..first+n-1
// with Part p, ids distinct across partitions, and what each should read
// back as.
func LakePartRows(s *logic.Stream, p int, first, n uint64, base int64, salt int) ([]lake.Row, map[PartSeq]LakeWant) {
	rows, e := LakeRows(s, first, n, base, salt)
	id := s.FieldIndex("id")
	exp := make(map[PartSeq]LakeWant, len(e))
	for i := range rows {
		r := &rows[i]
		w := e[r.Seq]
		w.id = fmt.Sprintf("p%d-%s", p, w.id)
		r.Part, r.Event.ID = p, w.id
		r.Event.Values[id] = logic.Value{Kind: logic.TypeString, S: w.id}
		exp[PartSeq{p, r.Seq}] = w
	}
	return rows, exp
}

// CheckLakePartRows reads the stream's committed files with DuckDB and
// checks they hold exactly the expected rows, each once: the rows, the
// distinct (_part, _seq, _idx) and the expected rows are as many, and
// every row has its values (_part read as coalesce(_part, 0)).
func CheckLakePartRows(t *testing.T, lk Lake, stream string, exp map[PartSeq]LakeWant) {
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
	// Files written before stream partitions lack _part: matched by name,
	// NULL where no file has it.
	src := "(SELECT * FROM " + strings.TrimSuffix(ParquetSource(files), ")") + ", union_by_name = true) UNION ALL BY NAME SELECT CAST(NULL AS INTEGER) AS _part WHERE false)"
	var rows, distinct int
	if err := db.QueryRow("SELECT count(*), count(DISTINCT (coalesce(_part, 0), _seq, _idx)) FROM "+src).Scan(&rows, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != len(exp) || distinct != len(exp) {
		t.Fatalf("the lake holds %d rows, %d distinct (_part, _seq, _idx); want %d", rows, distinct, len(exp))
	}
	r, err := db.Query(`SELECT coalesce(_part, 0), _seq, _arrival, _id, epoch_ms(ts), id, country, amount, qty FROM ` + src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	seen := map[PartSeq]bool{}
	for r.Next() {
		var part, seq, arrival, tsms int64
		var id, id2 string
		var country sql.NullString
		var amount sql.NullFloat64
		var qty sql.NullInt64
		if err := r.Scan(&part, &seq, &arrival, &id, &tsms, &id2, &country, &amount, &qty); err != nil {
			t.Fatal(err)
		}
		k := PartSeq{int(part), uint64(seq)}
		w, ok := exp[k]
		if !ok || seen[k] {
			t.Fatalf("row %+v: expected %v, seen before %v", k, ok, seen[k])
		}
		seen[k] = true
		if arrival != 1_700_000_000_000+seq || tsms != w.ts || id != w.id || id2 != w.id {
			t.Fatalf("row %+v: arrival %d ts %d id %q/%q, want %+v", k, arrival, tsms, id, id2, w)
		}
		if country.Valid != (w.country != nil) || (country.Valid && country.String != *w.country) ||
			amount.Valid != (w.amount != nil) || (amount.Valid && math.Abs(amount.Float64-*w.amount) > 0) ||
			qty.Valid != (w.qty != nil) || (qty.Valid && qty.Int64 != *w.qty) {
			t.Fatalf("row %+v: country %+v amount %+v qty %+v, want %+v", k, country, amount, qty, w)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
}

// writeCommitPart writes rows first..first+n-1 of partition p in one write
// and commits them.
func writeCommitPart(lk Lake, s *logic.Stream, p int, first, n uint64, base int64, salt int, exp map[PartSeq]LakeWant) error {
	rows, e := LakePartRows(s, p, first, n, base, salt)
	if _, err := lk.Write(s, rows); err != nil {
		return err
	}
	last := rows[len(rows)-1]
	if err := lk.CommitPart(s.Name, p, lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 1}); err != nil {
		return err
	}
	for k, v := range e {
		exp[k] = v
	}
	return nil
}

// lakePartsConcurrent: two handles (processes) commit different stream
// partitions of one stream at the same time, each partition in a goroutine
// of its own: every commit lands, nothing lost nor doubled, each
// partition's checkpoint its last commit's.
func lakePartsConcurrent(t *testing.T, open func() Lake) {
	ctx := context.Background()
	s := LakeStream(t)
	base := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	handles := []Lake{open(), open()}
	const parts, rounds, per = 4, 12, 9
	exps := make([]map[PartSeq]LakeWant, parts)
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for p := range parts {
		lk := handles[p%2]
		exps[p] = map[PartSeq]LakeWant{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[p] = lk.RecoverPart("orders", p); errs[p] != nil {
				return
			}
			for i := range uint64(rounds) {
				if errs[p] = writeCommitPart(lk, s, p, 1+i*per, per, base, p, exps[p]); errs[p] != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	exp := map[PartSeq]LakeWant{}
	for p := range parts {
		if errs[p] != nil {
			t.Fatalf("partition %d: %v", p, errs[p])
		}
		for k, v := range exps[p] {
			exp[k] = v
		}
	}
	rd := open()
	m, err := rd.Manifest(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	last := uint64(rounds * per)
	for p := range parts {
		cp, err := rd.PartCheckpoint("orders", p)
		if err != nil || cp.Seq != last || m.Part(p) != cp {
			t.Fatalf("partition %d: checkpoint %+v %v, manifest %+v; want seq %d", p, cp, err, m.Part(p), last)
		}
	}
	if got, want := m.CoveredUntil(parts), int64(1_700_000_000_000+last+1); got != want {
		t.Fatalf("coverage of the stream %d, want %d", got, want)
	}
	cfs, err := rd.CommittedFiles("orders")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range cfs {
		if f.Part < 0 || f.Part >= parts {
			t.Fatalf("file %+v of no partition written", f)
		}
	}
	CheckLakePartRows(t, rd, "orders", exp)
}

// lakePartsFencing: a writer committing a stream partition another writer
// moved since it last saw it gets ErrConflict and nothing of its commit is
// visible, while its commits of another partition go on whatever the
// other writer commits; a writer whose uncommitted files another writer's
// RecoverPart set aside cannot commit them.
func lakePartsFencing(t *testing.T, open func() Lake) {
	ctx := context.Background()
	s := LakeStream(t)
	base := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	a, b := open(), open()
	exp := map[PartSeq]LakeWant{}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	conflict := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, lake.ErrConflict) {
			t.Fatalf("%s: %v, want ErrConflict", what, err)
		}
	}
	must(a.RecoverPart("orders", 1))
	must(writeCommitPart(a, s, 1, 1, 20, base, 0, exp))
	// b takes partition 1 and moves it.
	must(b.RecoverPart("orders", 1))
	must(writeCommitPart(b, s, 1, 21, 20, base, 0, exp))
	// a commits partition 0 on top of b's commit: no conflict.
	must(writeCommitPart(a, s, 0, 1, 10, base, 0, exp))
	before, err := open().Manifest(ctx, "orders")
	must(err)
	// a writes partition 1 on from where it was: refused.
	conflict("a stale writer's commit", writeCommitPart(a, s, 1, 21, 10, base, 5, map[PartSeq]LakeWant{}))
	after, err := open().Manifest(ctx, "orders")
	must(err)
	if after.Gen != before.Gen || fmt.Sprint(manifestKeys(after)) != fmt.Sprint(manifestKeys(before)) {
		t.Fatalf("a refused commit changed the lake: gen %d, was %d", after.Gen, before.Gen)
	}
	CheckLakePartRows(t, open(), "orders", exp)
	// b commits partition 1 while a commits partition 0: both land.
	must(writeCommitPart(b, s, 1, 41, 10, base, 0, exp))
	must(writeCommitPart(a, s, 0, 11, 10, base, 0, exp))
	// a takes partition 1 back, from its checkpoint.
	must(a.RecoverPart("orders", 1))
	if cp, err := a.PartCheckpoint("orders", 1); err != nil || cp.Seq != 50 {
		t.Fatalf("partition 1 after b's commits: %+v %v", cp, err)
	}
	must(writeCommitPart(a, s, 1, 51, 10, base, 0, exp))
	conflict("the former owner's commit", writeCommitPart(b, s, 1, 51, 10, base, 3, map[PartSeq]LakeWant{}))
	// b takes it again and writes without committing; a takes it and sets
	// b's files aside; b's commit of them is refused, though partition 1's
	// checkpoint did not move.
	must(b.RecoverPart("orders", 1))
	rows, _ := LakePartRows(s, 1, 61, 10, base, 4)
	if _, err := b.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	must(a.RecoverPart("orders", 1))
	m, err := open().Manifest(ctx, "orders")
	must(err)
	if len(m.Garbage) == 0 {
		t.Fatal("RecoverPart listed no uncommitted file of the partition as garbage")
	}
	conflict("a commit of files set aside", b.CommitPart("orders", 1, lake.Checkpoint{Seq: 70, Arrival: rows[9].Arrival, CoveredUntil: rows[9].Arrival + 1}))
	must(writeCommitPart(a, s, 1, 61, 10, base, 0, exp))
	rd := open()
	for p, want := range []uint64{20, 70} {
		if cp, err := rd.PartCheckpoint("orders", p); err != nil || cp.Seq != want {
			t.Fatalf("partition %d: checkpoint %+v %v, want seq %d", p, cp, err, want)
		}
	}
	CheckLakePartRows(t, rd, "orders", exp)
}

// lakePartsCompact: compaction of a stream partition merges only its
// files (per date), leaving the other partitions' as they are; the rows,
// with their _part, unchanged.
func lakePartsCompact(t *testing.T, open func() Lake) {
	ctx := context.Background()
	s := LakeStream(t)
	base := time.Date(2025, 8, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	lk := open()
	exp := map[PartSeq]LakeWant{}
	for i := range uint64(8) {
		for p := range 2 {
			if err := writeCommitPart(lk, s, p, 1+i*10, 10, base, p, exp); err != nil {
				t.Fatal(err)
			}
		}
	}
	old, err := lk.Manifest(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	st, err := lk.Compact(ctx, s, 1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	m, err := open().Manifest(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	keys := func(m lake.Manifest, p int) []string {
		var out []string
		for _, f := range m.Files {
			if f.Part == p {
				out = append(out, f.Key)
			}
		}
		slices.Sort(out)
		return out
	}
	dates := map[string]int{} // partition 1's files per date
	for _, f := range old.Files {
		if f.Part == 1 {
			dates[f.Date]++
		}
	}
	merged, in := 0, 0 // the dates with files to merge, and their files
	for _, n := range dates {
		if n > 1 {
			merged++
			in += n
		}
	}
	if fmt.Sprint(keys(m, 0)) != fmt.Sprint(keys(old, 0)) {
		t.Fatal("compacting partition 1 changed partition 0's files")
	}
	if n := len(keys(m, 1)); n != len(dates) || st.FilesOut != merged || st.FilesIn != in || merged == 0 {
		t.Fatalf("compaction %+v: partition 1 has %d files of %d dates (had %d: %v)", st, n, len(dates), len(keys(old, 1)), dates)
	}
	CheckLakePartRows(t, open(), "orders", exp)
}
