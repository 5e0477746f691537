// Package lake is Braid's immutable event archive: Parquet files per stream
// and event date, each holding a contiguous run of log sequences, plus a
// checkpoint per stream written last. A file is part of the lake only when
// its sequence range ends at or before the checkpoint, so a crash between
// writing files and committing the checkpoint leaves nothing visible (and
// Recover removes the leftovers).
//
// Layout:
//
//	<dir>/<stream>/checkpoint.json
//	<dir>/<stream>/date=YYYY-MM-DD/<first:020d>-<last:020d>.parquet
package lake

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/parquet-go/parquet-go"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/fsatomic"
)

// System columns every lake file carries besides the declared fields.
const (
	ColSeq     = "_seq"     // INT64: sequence of the log record holding the event
	ColIndex   = "_idx"     // INT32: the event's index in its log record
	ColArrival = "_arrival" // INT64: unix ms when the log stored the record
	ColTime    = "_time"    // INT64: event time, unix ms
	ColID      = "_id"      // STRING: event id ("" when none)
)

const checkpointName = "checkpoint.json"

// tempPrefix starts the name of every file being written; such files are
// never part of the lake and Recover deletes them.
const tempPrefix = fsatomic.TempPrefix

// writeBatch is the rows handed to the Parquet writer at once.
const writeBatch = 1024

// Lake is the archive on local disk. It is safe for concurrent use; each
// stream must have a single writer (the archiver).
type Lake struct {
	dir string

	mu      sync.Mutex
	layouts map[*logic.Stream]*layout
	records map[string]*schemaRecord // the writer's schema record per stream (schema.go)
}

// Row is one archived record.
type Row struct {
	Seq     uint64 // the log record's sequence
	Index   int    // the event's index in the record
	Arrival int64  // unix ms
	Event   logic.Event
}

// Checkpoint is a stream's committed position in the lake.
type Checkpoint struct {
	Seq          uint64 `json:"seq"`           // every record up to Seq is in the lake
	Arrival      int64  `json:"arrival"`       // arrival (unix ms) of record Seq
	CoveredUntil int64  `json:"covered_until"` // every record with arrival < CoveredUntil is in the lake
}

// File is a committed lake file.
type File struct {
	Path        string
	First, Last uint64
	Date        string
}

// Open opens (creating it if needed) the lake under dir.
func Open(dir string) (*Lake, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("lake: %w", err)
	}
	if err := fsatomic.MkdirAllSync(abs); err != nil {
		return nil, fmt.Errorf("lake: create %s: %w", abs, err)
	}
	return &Lake{dir: abs, layouts: map[*logic.Stream]*layout{}, records: map[string]*schemaRecord{}}, nil
}

// OpenReadOnly returns the lake under dir for reading only (`braid
// check`): it creates nothing, and a missing directory reads as an empty
// lake.
func OpenReadOnly(dir string) (*Lake, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("lake: %w", err)
	}
	return &Lake{dir: abs, layouts: map[*logic.Stream]*layout{}, records: map[string]*schemaRecord{}}, nil
}

// Dir is the lake's root directory.
func (l *Lake) Dir() string { return l.dir }

func (l *Lake) streamDir(stream string) string { return filepath.Join(l.dir, stream) }

// layout is a stream's Parquet schema and the column of every value.
type layout struct {
	schema                                 *parquet.Schema
	fieldCol                               []int // per stream field
	seqCol, idxCol, arrCol, timeCol, idCol int
	ncols                                  int
}

// Schema returns the Parquet schema of a stream's lake files.
func Schema(s *logic.Stream) *parquet.Schema {
	g := parquet.Group{}
	for _, f := range s.Fields {
		var n parquet.Node
		switch f.Type {
		case logic.TypeString:
			n = parquet.String()
		case logic.TypeInt:
			n = parquet.Int(64)
		case logic.TypeFloat:
			n = parquet.Leaf(parquet.DoubleType)
		case logic.TypeBool:
			n = parquet.Leaf(parquet.BooleanType)
		case logic.TypeTime:
			// Not adjusted to UTC: DuckDB reads a plain TIMESTAMP.
			n = parquet.TimestampAdjusted(parquet.Millisecond, false)
		default:
			n = parquet.String()
		}
		g[f.Name] = parquet.Optional(n)
	}
	g[ColSeq] = parquet.Leaf(parquet.Int64Type)
	g[ColIndex] = parquet.Leaf(parquet.Int32Type)
	g[ColArrival] = parquet.Leaf(parquet.Int64Type)
	g[ColTime] = parquet.Leaf(parquet.Int64Type)
	g[ColID] = parquet.String()
	return parquet.NewSchema(s.Name, g)
}

func (l *Lake) layoutOf(s *logic.Stream) (*layout, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lay, ok := l.layouts[s]; ok {
		return lay, nil
	}
	sch := Schema(s)
	lay := &layout{schema: sch, ncols: len(sch.Columns())}
	col := func(name string) (int, error) {
		c, ok := sch.Lookup(name)
		if !ok {
			return 0, fmt.Errorf("lake: column %s missing from schema", name)
		}
		return c.ColumnIndex, nil
	}
	for _, f := range s.Fields {
		c, err := col(f.Name)
		if err != nil {
			return nil, err
		}
		lay.fieldCol = append(lay.fieldCol, c)
	}
	var err error
	if lay.seqCol, err = col(ColSeq); err != nil {
		return nil, err
	}
	if lay.idxCol, err = col(ColIndex); err != nil {
		return nil, err
	}
	if lay.arrCol, err = col(ColArrival); err != nil {
		return nil, err
	}
	if lay.timeCol, err = col(ColTime); err != nil {
		return nil, err
	}
	if lay.idCol, err = col(ColID); err != nil {
		return nil, err
	}
	l.layouts[s] = lay
	return lay, nil
}

// row fills out (reused when it has room) with r's values in column order.
// Strings are passed without copying: the writer copies them into its
// column buffers before the row is reused.
func (lay *layout) row(s *logic.Stream, r *Row, out parquet.Row) parquet.Row {
	if cap(out) < lay.ncols {
		out = make(parquet.Row, lay.ncols)
	}
	out = out[:lay.ncols]
	for i, f := range s.Fields {
		c := lay.fieldCol[i]
		var v logic.Value
		if i < len(r.Event.Values) {
			v = r.Event.Values[i]
		}
		if v.Null() {
			out[c] = parquet.NullValue().Level(0, 0, c)
			continue
		}
		var pv parquet.Value
		switch f.Type {
		case logic.TypeString:
			pv = parquet.ByteArrayValue(stringBytes(v.S))
		case logic.TypeInt, logic.TypeTime:
			pv = parquet.Int64Value(v.I)
		case logic.TypeFloat:
			pv = parquet.DoubleValue(v.Float())
		case logic.TypeBool:
			pv = parquet.BooleanValue(v.I != 0)
		default:
			pv = parquet.ByteArrayValue([]byte(v.String()))
		}
		out[c] = pv.Level(0, 1, c)
	}
	out[lay.seqCol] = parquet.Int64Value(int64(r.Seq)).Level(0, 0, lay.seqCol)
	out[lay.idxCol] = parquet.Int32Value(int32(r.Index)).Level(0, 0, lay.idxCol)
	out[lay.arrCol] = parquet.Int64Value(r.Arrival).Level(0, 0, lay.arrCol)
	out[lay.timeCol] = parquet.Int64Value(r.Event.Time).Level(0, 0, lay.timeCol)
	out[lay.idCol] = parquet.ByteArrayValue(stringBytes(r.Event.ID)).Level(0, 0, lay.idCol)
	return out
}

// stringBytes is s's bytes without a copy; they must not be modified.
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// FileName is the name of a file holding sequences first..last.
func FileName(first, last uint64) string {
	return fmt.Sprintf("%020d-%020d.parquet", first, last)
}

func parseFileName(name string) (first, last uint64, ok bool) {
	base, found := strings.CutSuffix(name, ".parquet")
	if !found || strings.HasPrefix(name, tempPrefix) {
		return 0, 0, false
	}
	a, b, found := strings.Cut(base, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseUint(a, 10, 64)
	last, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil || first > last {
		return 0, 0, false
	}
	return first, last, true
}

// Write writes rows (a contiguous, ascending sequence range) as immutable
// files, one per event date (UTC). The files are invisible until a
// checkpoint at or beyond their last sequence is committed. It returns the
// paths written. When s's field types differ from those the stream was
// last written with, the schema record gets a new epoch first; types that
// files in the lake cannot be read as are refused (a *SchemaError).
func (l *Lake) Write(s *logic.Stream, rows []Row) ([]string, error) {
	files, _, err := l.WriteSized(s, rows)
	return files, err
}

// WriteSized is Write that also returns the bytes written.
func (l *Lake) WriteSized(s *logic.Stream, rows []Row) (files []string, bytes int64, err error) {
	return l.write(s, rows, false)
}

// WriteReleasing is WriteSized that zeroes each row once the Parquet writer
// holds its values, so the events can be collected while the rest is
// written. rows must not be used afterwards, whatever the result.
func (l *Lake) WriteReleasing(s *logic.Stream, rows []Row) (files []string, bytes int64, err error) {
	return l.write(s, rows, true)
}

func (l *Lake) write(s *logic.Stream, rows []Row, release bool) (files []string, bytes int64, err error) {
	if len(rows) == 0 {
		return nil, 0, nil
	}
	lay, err := l.layoutOf(s)
	if err != nil {
		return nil, 0, err
	}
	if err := l.noteFields(s, rows[0].Seq); err != nil {
		return nil, 0, err
	}
	// Rows by UTC day (unix days; formatted once per file).
	const msPerDay = 24 * 60 * 60 * 1000
	byDay := map[int64][]int{}
	var days []int64
	for i := range rows {
		t := rows[i].Event.Time
		day := t / msPerDay
		if t%msPerDay < 0 {
			day--
		}
		if _, ok := byDay[day]; !ok {
			days = append(days, day)
		}
		byDay[day] = append(byDay[day], i)
	}
	slices.Sort(days)
	for _, day := range days {
		path, n, err := l.writeFile(s, lay, rows, byDay[day], day*msPerDay, release)
		if err != nil {
			return files, bytes, err
		}
		files = append(files, path)
		bytes += n
	}
	return files, bytes, nil
}

// writeFile writes rows[idx] (one date, starting at dayMs) as one file and
// returns its path and size.
func (l *Lake) writeFile(s *logic.Stream, lay *layout, rows []Row, idx []int, dayMs int64, release bool) (string, int64, error) {
	dir := filepath.Join(l.streamDir(s.Name), "date="+time.UnixMilli(dayMs).UTC().Format("2006-01-02"))
	if err := fsatomic.MkdirAllSync(dir); err != nil {
		return "", 0, fmt.Errorf("lake: create %s: %w", dir, err)
	}
	first, last := rows[idx[0]].Seq, rows[idx[0]].Seq
	for _, i := range idx {
		first, last = min(first, rows[i].Seq), max(last, rows[i].Seq)
	}
	name := FileName(first, last)
	n, err := fsatomic.WriteFileAtomic(dir, name, func(w io.Writer) error {
		pw := parquet.NewWriter(w, lay.schema, parquet.Compression(lakeCodec), parquet.CreatedBy("braid", "", ""))
		// One batch of rows, reused: WriteRows copies the values.
		batch := make([]parquet.Row, min(len(idx), writeBatch))
		for start := 0; start < len(idx); start += len(batch) {
			k := min(len(batch), len(idx)-start)
			for j, i := range idx[start : start+k] {
				batch[j] = lay.row(s, &rows[i], batch[j])
			}
			if _, err := pw.WriteRows(batch[:k]); err != nil {
				return err
			}
			if release {
				for _, i := range idx[start : start+k] {
					rows[i] = Row{}
				}
			}
		}
		return pw.Close()
	})
	if err != nil {
		return "", 0, fmt.Errorf("lake: write %s/%s: %w", dir, name, err)
	}
	return filepath.Join(dir, name), n, nil
}

// Commit records a stream's checkpoint. It is written last (temp, fsync,
// rename): files up to cp.Seq become visible at once.
func (l *Lake) Commit(stream string, cp Checkpoint) error {
	dir := l.streamDir(stream)
	if err := fsatomic.MkdirAllSync(dir); err != nil {
		return fmt.Errorf("lake: create %s: %w", dir, err)
	}
	b, err := json.Marshal(cp)
	if err != nil {
		return fmt.Errorf("lake: encode checkpoint: %w", err)
	}
	if _, err := fsatomic.WriteFileAtomic(dir, checkpointName, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}); err != nil {
		return fmt.Errorf("lake: commit %s: %w", stream, err)
	}
	return nil
}

// Checkpoint returns a stream's checkpoint; the zero value when none.
func (l *Lake) Checkpoint(stream string) (Checkpoint, error) {
	var cp Checkpoint
	b, err := os.ReadFile(filepath.Join(l.streamDir(stream), checkpointName))
	if errors.Is(err, fs.ErrNotExist) {
		return cp, nil
	}
	if err != nil {
		return cp, fmt.Errorf("lake: read checkpoint %s: %w", stream, err)
	}
	if err := json.Unmarshal(b, &cp); err != nil {
		return cp, fmt.Errorf("lake: decode checkpoint %s: %w", stream, err)
	}
	return cp, nil
}

// Files returns the paths of a stream's committed files (range end <=
// checkpoint), ordered by first sequence.
func (l *Lake) Files(stream string) ([]string, error) {
	fs, err := l.CommittedFiles(stream)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.Path
	}
	return out, nil
}

// CommittedFiles is Files with each file's range and date.
func (l *Lake) CommittedFiles(stream string) ([]File, error) {
	cp, err := l.Checkpoint(stream)
	if err != nil {
		return nil, err
	}
	all, err := l.scan(stream)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, f := range all {
		if f.Path != "" && f.Last <= cp.Seq && f.First > 0 {
			out = append(out, f)
		}
	}
	return out, nil
}

// scan lists every lake file of a stream (committed or not); temp files
// come back with First == 0.
func (l *Lake) scan(stream string) ([]File, error) {
	root := l.streamDir(stream)
	dirs, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("lake: list %s: %w", stream, err)
	}
	var out []File
	for _, d := range dirs {
		date, ok := strings.CutPrefix(d.Name(), "date=")
		if !d.IsDir() || !ok {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(root, d.Name()))
		if err != nil {
			return nil, fmt.Errorf("lake: list %s: %w", d.Name(), err)
		}
		for _, e := range ents {
			p := filepath.Join(root, d.Name(), e.Name())
			if strings.HasPrefix(e.Name(), tempPrefix) {
				out = append(out, File{Path: p, Date: date})
				continue
			}
			first, last, ok := parseFileName(e.Name())
			if !ok {
				continue
			}
			out = append(out, File{Path: p, First: first, Last: last, Date: date})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].First != out[j].First {
			return out[i].First < out[j].First
		}
		return out[i].Path < out[j].Path
	})
	return out, nil
}

// Recover deletes a stream's temp files and files beyond its checkpoint
// (written by a writer that crashed before committing), and brings the
// stream's schema record in line with the checkpoint (see schema.go). Call
// it before a stream's writer starts.
func (l *Lake) Recover(stream string) error {
	cp, err := l.Checkpoint(stream)
	if err != nil {
		return err
	}
	all, err := l.scan(stream)
	if err != nil {
		return err
	}
	dirs := map[string]bool{}
	for _, f := range all {
		if f.First > 0 && f.Last <= cp.Seq {
			continue
		}
		if err := os.Remove(f.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("lake: recover %s: %w", stream, err)
		}
		dirs[filepath.Dir(f.Path)] = true
	}
	// Temp checkpoints.
	if ents, err := os.ReadDir(l.streamDir(stream)); err == nil {
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tempPrefix) {
				if err := os.Remove(filepath.Join(l.streamDir(stream), e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("lake: recover %s: %w", stream, err)
				}
				dirs[l.streamDir(stream)] = true
			}
		}
	}
	for d := range dirs {
		if err := fsatomic.SyncDir(d); err != nil {
			return fmt.Errorf("lake: recover %s: %w", stream, err)
		}
	}
	return l.recoverRecord(stream, cp.Seq)
}
