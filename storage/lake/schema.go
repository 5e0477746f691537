package lake

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"

	"github.com/braid-data/braid/logic"
)

// Schema epochs: a stream's manifest lists the field types its files were
// written with, as epochs: from log record From of stream partition Part
// on, the writer wrote the fields Fields. A write whose types differ from
// the last epoch's of its partition records a new epoch, committed with
// the partition's checkpoint that covers its first record (like a file,
// an epoch whose From is beyond its partition's checkpoint is not part of
// the lake). A file's epoch is the one of its partition with the greatest
// From at or before its first record. So knowing what the lake holds costs one manifest per
// stream, however many Parquet files it has. A lake written by an earlier
// version kept the epochs in <stream>/schema.json, or nowhere: then they
// are read from the files' footers once (legacy.go).

// Epoch is a run of a stream partition's files written with one set of
// field types.
type Epoch struct {
	Part   int               `json:"part,omitempty"` // the stream partition
	From   uint64            `json:"from"`           // first log record of the partition written with these types
	Since  time.Time         `json:"since"`          // when the lake began holding them
	Fields map[string]string `json:"fields"`         // field name → type (string, int, float, bool, time)
}

type schemaRecord struct {
	Epochs []Epoch `json:"epochs"`
}

// fieldNames is the record form of a stream's declared field types.
func fieldNames(s *logic.Stream) map[string]string {
	out := make(map[string]string, len(s.Fields))
	for _, f := range s.Fields {
		out[f.Name] = f.Type.String()
	}
	return out
}

// DeclaredTypes returns a stream's declared field types by name.
func DeclaredTypes(s *logic.Stream) map[string]logic.FieldType {
	out := make(map[string]logic.FieldType, len(s.Fields))
	for _, f := range s.Fields {
		out[f.Name] = f.Type
	}
	return out
}

// check refuses an earlier version's schema record with unknown types.
func (rec schemaRecord) check(stream string) error {
	for _, e := range rec.Epochs {
		for name, t := range e.Fields {
			if _, err := logic.ParseFieldType(t); err != nil {
				return fmt.Errorf("lake: schema record %s: field %s: %w", stream, name, err)
			}
		}
	}
	return nil
}

// Epochs returns the field types of a stream's committed files (its
// manifest's epochs): per stream partition oldest first, in the order they
// were committed. It writes nothing.
func (l *Lake) Epochs(stream string) ([]Epoch, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	m, err := l.current(ctx, stream)
	if err != nil {
		return nil, err
	}
	return slices.Clone(m.Epochs), nil
}

// epochOf is the index in epochs of the epoch of a file of stream
// partition part starting at record first (-1: none).
func epochOf(epochs []Epoch, part int, first uint64) int {
	at := -1
	for i, e := range epochs {
		if e.Part == part && e.From <= first && (at < 0 || e.From > epochs[at].From) {
			at = i
		}
	}
	return at
}

// committedEpochs is the epochs of an earlier version's schema record
// (one stream partition) a checkpoint at seq covers.
func committedEpochs(es []Epoch, seq uint64) []Epoch {
	out := es[:0:0]
	for _, e := range es {
		if e.From <= seq {
			out = append(out, e)
		}
	}
	return out
}

// epochsFromFooters reads the field types of each file (ordered by first
// sequence; paths are their local copies) from its Parquet footer and
// makes an epoch of every run of files with the same types; an epoch's
// Since is its first file's modification time.
func epochsFromFooters(files []FileInfo, paths []string) ([]Epoch, error) {
	var out []Epoch
	for i, f := range files {
		fields, err := footerFields(paths[i])
		if err != nil {
			return nil, err
		}
		if n := len(out); n > 0 && maps.Equal(out[n-1].Fields, fields) {
			continue
		}
		st, err := os.Stat(paths[i])
		if err != nil {
			return nil, fmt.Errorf("lake: %w", err)
		}
		out = append(out, Epoch{From: f.First, Since: st.ModTime().UTC(), Fields: fields})
	}
	return out, nil
}

// footerFields reads the declared fields of a lake file and their types
// from its footer.
func footerFields(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("lake: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("lake: %w", err)
	}
	pf, err := parquet.OpenFile(f, st.Size(), parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
	if err != nil {
		return nil, fmt.Errorf("lake: read footer of %s: %w", path, err)
	}
	out := map[string]string{}
	for _, fld := range pf.Schema().Fields() {
		name := fld.Name()
		switch name {
		case ColSeq, ColIndex, ColArrival, ColTime, ColID, ColPart:
			continue
		}
		t, ok := columnType(fld)
		if !ok {
			return nil, fmt.Errorf("lake: %s: column %s has a type Braid does not write (%v)", path, name, fld.Type())
		}
		out[name] = t.String()
	}
	return out, nil
}

// columnType is the field type of a column as Schema writes it.
func columnType(fld parquet.Field) (logic.FieldType, bool) {
	if !fld.Leaf() {
		return logic.TypeNull, false
	}
	t := fld.Type()
	var lt format.LogicalTypeValue
	if l := t.LogicalType(); l != nil {
		lt = l.Value
	}
	switch t.Kind() {
	case parquet.ByteArray:
		if _, ok := lt.(*format.StringType); ok {
			return logic.TypeString, true
		}
	case parquet.Int64:
		switch lt.(type) {
		case nil, *format.IntType:
			return logic.TypeInt, true
		case *format.TimestampType:
			return logic.TypeTime, true
		}
	case parquet.Double:
		return logic.TypeFloat, true
	case parquet.Boolean:
		return logic.TypeBool, true
	}
	return logic.TypeNull, false
}

// noteFields is called before rows of records first..last of stream
// partition part are written with s's field types: on the first write of
// the partition by this Lake it reads the stream again and takes the
// partition's checkpoint as the one its commits build on; it drops the
// pending files of the partition whose records overlap them (left by a
// write that was never committed, and written again now; a pending file of
// other records stays, so writes of disjoint ranges may come in any order)
// and the partition's pending epochs at or beyond first, and, when the
// types differ from the partition's last epoch's, records a pending epoch,
// refusing types the files already in the lake (committed or pending, of
// every partition) cannot be read as.
func (l *Lake) noteFields(ctx context.Context, w *writer, s *logic.Stream, part int, first, last uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.seen[part]; !ok {
		w.cur = nil
	}
	if err := l.load(ctx, s.Name, w); err != nil {
		return err
	}
	if _, ok := w.seen[part]; !ok {
		w.seen[part] = w.cur.Part(part)
	}
	w.epochs = slices.DeleteFunc(w.epochs, func(e Epoch) bool { return e.Part == part && e.From >= first })
	w.pending = slices.DeleteFunc(w.pending, func(f FileInfo) bool { return f.Part == part && f.First <= last && f.Last >= first })
	epochs := append(slices.Clone(w.cur.Epochs), w.epochs...)
	fields := fieldNames(s)
	if i := epochOf(epochs, part, first); i >= 0 && maps.Equal(epochs[i].Fields, fields) {
		return nil
	}
	if len(epochs) > 0 {
		var files []FileInfo
		for _, f := range slices.Concat(l.present(w.cur.Files), w.pending) {
			if f.Part != part || f.First < first {
				files = append(files, f)
			}
		}
		sortFiles(files)
		cs, err := conflicts(l.where(s.Name), s.Name, epochs, files, DeclaredTypes(s))
		if err != nil {
			return err
		}
		if len(cs) > 0 {
			return &SchemaError{Conflicts: cs}
		}
	}
	w.epochs = append(w.epochs, Epoch{Part: part, From: first, Since: time.Now().UTC(), Fields: fields})
	return nil
}

// Conflict is a declared field type that files in the lake cannot be read
// as: they hold the field as Held.
type Conflict struct {
	Stream   string
	Field    string
	Held     logic.FieldType // the type of the field in the files
	Declared logic.FieldType
	Since    time.Time // when the lake began holding it
	Files    int       // files holding it
	// Ranges are the log records of those files (file names start with
	// <first>-<last>, 20 digits each), RangeParts the stream partition of
	// each range (file names of partition p > 0 go on with -p<p>); dates
	// their event dates.
	Ranges              [][2]uint64
	RangeParts          []int
	FirstDate, LastDate string
	Dir                 string // the stream's lake directory (or its prefix in the lake's store)
}

// Problem says what the lake holds and why it cannot be read as declared.
func (c Conflict) Problem() string {
	dates := c.FirstDate
	if c.LastDate != c.FirstDate {
		dates += " to " + c.LastDate
	}
	return fmt.Sprintf("the lake holds %s as %s in %d file(s) written since %s (log records %s, event dates %s), and %s values cannot be read as %s",
		c.Field, c.Held, c.Files, c.Since.UTC().Format(time.RFC3339), c.rangeList(), dates, c.Held, c.Declared)
}

// WaysOut says what can be done instead.
func (c Conflict) WaysOut() string {
	return fmt.Sprintf("keep %s: %s; or send the %s values under a new field name (e.g. %s_%s: %s), keeping or removing %s; "+
		"or remove the %d file(s) holding it (log records %s, under %s): their events leave the batch answers of every view of %s. "+
		`See "Changing a stream's schema" in the README`,
		c.Field, c.Held, c.Declared, c.Field, c.Declared, c.Declared, c.Field, c.Files, c.rangeList(), c.Dir, c.Stream)
}

func (c Conflict) rangeList() string {
	rs := make([]string, len(c.Ranges))
	for i, r := range c.Ranges {
		rs[i] = fmt.Sprintf("%d-%d", r[0], r[1])
		if c.RangeParts[i] != 0 {
			rs[i] += fmt.Sprintf(" of partition %d", c.RangeParts[i])
		}
	}
	return strings.Join(rs, ", ")
}

func (c Conflict) Error() string {
	return fmt.Sprintf("stream %s, field %s: %s (ways out: %s)", c.Stream, c.Field, c.Problem(), c.WaysOut())
}

// SchemaError is the refusal of field types the lake cannot be read as.
type SchemaError struct{ Conflicts []Conflict }

func (e *SchemaError) Error() string {
	parts := make([]string, len(e.Conflicts))
	for i, c := range e.Conflicts {
		parts[i] = c.Error()
	}
	return "the lake cannot be read with the declared field types:\n  " + strings.Join(parts, "\n  ")
}

// CheckFields compares declared field types of a stream with the types
// its committed files hold, and returns a conflict for every field and
// held type that cannot be read as declared (logic.ReadableAs): a field
// the lake does not hold, or one no longer declared, is no conflict. It
// reads the stream's manifest; it writes nothing.
func (l *Lake) CheckFields(stream string, declared map[string]logic.FieldType) ([]Conflict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	m, err := l.current(ctx, stream)
	if err != nil {
		return nil, err
	}
	if !anyConflict(m.Epochs, declared) {
		return nil, nil
	}
	return conflicts(l.where(stream), stream, m.Epochs, l.present(m.Files), declared)
}

func anyConflict(epochs []Epoch, declared map[string]logic.FieldType) bool {
	for _, e := range epochs {
		for name, tn := range e.Fields {
			d, ok := declared[name]
			held, _ := logic.ParseFieldType(tn)
			if ok && !logic.ReadableAs(held, d) {
				return true
			}
		}
	}
	return false
}

// conflicts finds the fields whose types in files (ordered by first
// record, of epochs) cannot be read as declared.
func conflicts(dir, stream string, epochs []Epoch, files []FileInfo, declared map[string]logic.FieldType) ([]Conflict, error) {
	// Files per epoch: the one of its partition with the greatest From at
	// or before its first record.
	perEpoch := make([][]FileInfo, len(epochs))
	for _, f := range files {
		if i := epochOf(epochs, f.Part, f.First); i >= 0 {
			perEpoch[i] = append(perEpoch[i], f)
		}
	}
	type key struct {
		field string
		held  logic.FieldType
	}
	found := map[key]*Conflict{}
	var order []key
	for i, e := range epochs {
		if len(perEpoch[i]) == 0 {
			continue // none of its files is left: the lake no longer holds it
		}
		from, to := perEpoch[i][0].First, perEpoch[i][0].Last
		for _, f := range perEpoch[i] {
			from, to = min(from, f.First), max(to, f.Last)
		}
		for name, tn := range e.Fields {
			d, ok := declared[name]
			if !ok {
				continue
			}
			held, err := logic.ParseFieldType(tn)
			if err != nil {
				return nil, fmt.Errorf("lake: schema record %s: field %s: %w", stream, name, err)
			}
			if logic.ReadableAs(held, d) {
				continue
			}
			k := key{name, held}
			c := found[k]
			if c == nil {
				c = &Conflict{Stream: stream, Field: name, Held: held, Declared: d, Since: e.Since, Dir: dir}
				found[k] = c
				order = append(order, k)
			}
			c.Files += len(perEpoch[i])
			if n := len(c.Ranges); n > 0 && c.RangeParts[n-1] == e.Part && c.Ranges[n-1][1]+1 == from {
				c.Ranges[n-1][1] = to
			} else {
				c.Ranges = append(c.Ranges, [2]uint64{from, to})
				c.RangeParts = append(c.RangeParts, e.Part)
			}
			for _, f := range perEpoch[i] {
				if c.FirstDate == "" || f.Date < c.FirstDate {
					c.FirstDate = f.Date
				}
				if f.Date > c.LastDate {
					c.LastDate = f.Date
				}
			}
		}
	}
	sort.Slice(order, func(i, j int) bool {
		if order[i].field != order[j].field {
			return order[i].field < order[j].field
		}
		return found[order[i]].Ranges[0][0] < found[order[j]].Ranges[0][0]
	})
	out := make([]Conflict, len(order))
	for i, k := range order {
		out[i] = *found[k]
	}
	return out, nil
}
