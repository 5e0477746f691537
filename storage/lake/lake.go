// Package lake is Braid's immutable event archive on an object store
// (objstore.Store: local files or S3): Parquet objects per stream, event
// date ("date partition") and log partition ("stream partition"), each
// holding rows of log records of one stream partition, and per stream a
// chain of manifests. A manifest holds everything about the stream's state:
// a checkpoint per stream partition, the schema epochs, the committed files
// with their metadata, and the files removed but not yet deleted. A commit
// writes the data objects first and the next manifest last, with
// PutIfAbsent; readers read the highest manifest, so they never see a
// half-done commit. Objects not listed in the current manifest are not
// part of the lake.
//
// Several writers (archivers sharing a stream's partitions, each with a
// Lake of its own) commit to one manifest chain. A commit of stream
// partition p is fenced by p's checkpoint: it is refused (ErrConflict,
// nothing of it visible) when p's checkpoint is no longer the one this
// writer last saw (another writer took p and moved it), or when files it
// would add were listed as garbage (another writer took p and set them
// aside); a generation taken by a commit of other partitions, or by
// compaction, retention or sweeps, is no conflict: the commit is built
// again on the newer manifest.
//
// Keys (in the lake's store):
//
//	<stream>/_manifest/<gen:020d>.json
//	<stream>/date=YYYY-MM-DD/<first:020d>-<last:020d>[-p<p>]-<token>.parquet      written by the archiver
//	<stream>/date=YYYY-MM-DD/<first:020d>-<last:020d>[-p<p>]-c<gen>-<token>.parquet written by compaction
//
// (-p<p> names stream partition p > 0; first and last are sequences of
// that partition's log.)
//
// A lake written by an earlier version (checkpoint.json and schema.json per
// stream, files <first>-<last>.parquet, no manifest) is read as it is, and
// its writer turns it into manifest generation 1 at first use (legacy.go).
package lake

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/parquet-go/parquet-go"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/fsatomic"
	"github.com/braid-data/braid/storage/objcache"
	"github.com/braid-data/braid/storage/objstore"
)

// System columns every lake file carries besides the declared fields.
const (
	ColSeq     = "_seq"     // INT64: sequence of the log record holding the event
	ColIndex   = "_idx"     // INT32: the event's index in its log record
	ColArrival = "_arrival" // INT64: unix ms when the log stored the record
	ColTime    = "_time"    // INT64: event time, unix ms
	ColID      = "_id"      // STRING: event id ("" when none)
	// ColPart is the stream partition of the log holding the record.
	// Files written before streams had partitions lack it: SQL reads it
	// as coalesce(_part, 0).
	ColPart = "_part" // INT32
)

// tempPrefix starts the names of local files being written.
const tempPrefix = fsatomic.TempPrefix

// writeBatch is the rows handed to the Parquet writer at once.
const writeBatch = 1024

// opTimeout bounds the store operations of the methods without a context
// (the archiver's and the runner's); fileTimeout those that may download
// a stream's files.
const (
	opTimeout   = 2 * time.Minute
	fileTimeout = 30 * time.Minute
)

// Lake is the archive on an object store. It is safe for concurrent use;
// each stream partition must have a single writer at a time (the archiver
// holding it); the writers of a stream's partitions, its compaction,
// retention and sweeps may run in any processes (see the package comment
// for how their commits meet). Within a Lake, a stream's manifest updates
// are serialized.
type Lake struct {
	st       objstore.Store
	work     string // local scratch directory for files being written
	cache    *objcache.Cache
	grace    time.Duration
	log      *slog.Logger
	readOnly bool

	mu       sync.Mutex
	layouts  map[*logic.Stream]*layout
	writers  map[string]*writer   // per stream (manifest.go)
	seen     map[string]*Manifest // the last manifest read per stream
	legacy   map[string]*Manifest // the manifest an old-layout stream reads as, by checkpoint
	inflight map[string]bool      // keys of objects being written and not yet committed (compaction)
	filePins map[string]func()    // per stream, releases the copies the last Files call returned
}

// Options configure a Lake.
type Options struct {
	// WorkDir is a local scratch directory for files being written (and
	// the cache, when Cache is nil). Required, except read-only.
	WorkDir string
	// Cache holds local copies of the lake's objects for DuckDB (nil: one
	// under WorkDir/cache bounded by defaults.CacheBytes; on a store with
	// local files nothing is copied).
	Cache *objcache.Cache
	// Grace is how long files removed by compaction or retention stay in
	// the store (readers holding an older manifest still read them) before
	// Sweep deletes them (0: defaults.LakeGrace).
	Grace time.Duration
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
	// ReadOnly: the Lake creates and writes nothing; writes are refused.
	ReadOnly bool
}

// Row is one archived record.
type Row struct {
	Part    int    // the stream partition of the log holding the record
	Seq     uint64 // the log record's sequence in its partition
	Index   int    // the event's index in the record
	Arrival int64  // unix ms
	Event   logic.Event
}

// Checkpoint is a stream partition's committed position in the lake.
type Checkpoint struct {
	Seq          uint64 `json:"seq"`           // every record of the partition up to Seq is in the lake
	Arrival      int64  `json:"arrival"`       // arrival (unix ms) of record Seq
	CoveredUntil int64  `json:"covered_until"` // every record of the partition with arrival < CoveredUntil is in the lake
}

// File is a committed lake file: Path is a local copy DuckDB reads (see
// Files for how long it stays), Key its object.
type File struct {
	Path        string
	Key         string
	Part        int // stream partition
	First, Last uint64
	Date        string
}

// Open opens the lake on st (rooted at the lake's prefix).
func Open(st objstore.Store, opts Options) (*Lake, error) {
	l := &Lake{
		st: st, work: opts.WorkDir, cache: opts.Cache, grace: opts.Grace, log: opts.Logger, readOnly: opts.ReadOnly,
		layouts: map[*logic.Stream]*layout{}, writers: map[string]*writer{}, seen: map[string]*Manifest{},
		legacy: map[string]*Manifest{}, inflight: map[string]bool{}, filePins: map[string]func(){},
	}
	if l.grace <= 0 {
		l.grace = defaults.LakeGrace
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	_, local := st.(objstore.Local)
	if l.work == "" && !opts.ReadOnly {
		return nil, errors.New("lake: no work directory")
	}
	if l.work != "" && !opts.ReadOnly {
		abs, err := filepath.Abs(l.work)
		if err != nil {
			return nil, fmt.Errorf("lake: %w", err)
		}
		l.work = abs
		if err := fsatomic.MkdirAllSync(l.work); err != nil {
			return nil, fmt.Errorf("lake: create %s: %w", l.work, err)
		}
		clearWork(l.work)
	}
	if l.cache == nil && (local || !opts.ReadOnly) { // read-only on a remote store: no copies unless given a cache
		c, err := objcache.New(st, filepath.Join(l.work, "cache"), defaults.CacheBytes, nil)
		if err != nil {
			return nil, fmt.Errorf("lake: %w", err)
		}
		l.cache = c
	}
	return l, nil
}

// staleWork is the age of a file in the work directory after which it is
// taken as left by a process that died while writing it (another process
// sharing the directory may be writing younger ones).
const staleWork = time.Hour

// clearWork deletes the files processes that died left being written.
func clearWork(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), tempPrefix) || e.IsDir() {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleWork {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// workDirName is where OpenDir writes files before moving them into the
// lake: inside the lake's directory, under a name no key can have, so the
// store never lists it.
const workDirName = tempPrefix + "work"

// OpenDir opens (creating it if needed) the lake on local files under dir,
// with its work directory inside it (dir/.tmp-work, which the store never
// lists) and no copies (DuckDB reads the files in place).
func OpenDir(dir string) (*Lake, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("lake: %w", err)
	}
	st, err := objstore.NewFiles(abs)
	if err != nil {
		return nil, fmt.Errorf("lake: %w", err)
	}
	return Open(st, Options{WorkDir: filepath.Join(abs, workDirName)})
}

// OpenReadOnly returns the lake on local files under dir for reading only
// (`braid check`): it creates nothing, and a missing directory reads as an
// empty lake.
func OpenReadOnly(dir string) (*Lake, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("lake: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return Open(emptyStore{}, Options{ReadOnly: true})
		}
		return nil, fmt.Errorf("lake: %w", err)
	}
	st, err := objstore.NewFiles(abs)
	if err != nil {
		return nil, fmt.Errorf("lake: %w", err)
	}
	return Open(st, Options{ReadOnly: true})
}

// Store is the lake's object store.
func (l *Lake) Store() objstore.Store { return l.st }

// where names a stream's place for messages: its directory on local
// files, else its prefix in the store.
func (l *Lake) where(stream string) string {
	if f, ok := l.st.(*objstore.Files); ok {
		return filepath.Join(f.Root(), stream)
	}
	return stream + "/ in the lake's object store"
}

// layout is a stream's Parquet schema and the column of every value.
type layout struct {
	schema                                 *parquet.Schema
	fieldCol                               []int // per stream field
	seqCol, idxCol, arrCol, timeCol, idCol int
	partCol                                int // -1: the schema has no ColPart (files written before stream partitions)
	ncols                                  int
	// legacy is the layout of the same fields without ColPart (nil in a
	// legacy layout): files written before stream partitions, which
	// compaction rewrites with ColPart 0.
	legacy *layout
}

// Schema returns the Parquet schema of a stream's lake files.
func Schema(s *logic.Stream) *parquet.Schema { return schemaOf(s, true) }

// schemaOf is Schema, with ColPart or (part false) as files were written
// before stream partitions.
func schemaOf(s *logic.Stream, part bool) *parquet.Schema {
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
	if part {
		g[ColPart] = parquet.Leaf(parquet.Int32Type)
	}
	return parquet.NewSchema(s.Name, g)
}

func (l *Lake) layoutOf(s *logic.Stream) (*layout, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if lay, ok := l.layouts[s]; ok {
		return lay, nil
	}
	lay, err := newLayout(s, Schema(s))
	if err != nil {
		return nil, err
	}
	if lay.legacy, err = newLayout(s, schemaOf(s, false)); err != nil {
		return nil, err
	}
	l.layouts[s] = lay
	return lay, nil
}

// newLayout is the layout of s's values in sch (Schema's, or schemaOf's
// without ColPart).
func newLayout(s *logic.Stream, sch *parquet.Schema) (*layout, error) {
	lay := &layout{schema: sch, ncols: len(sch.Columns()), partCol: -1}
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
	if c, ok := sch.Lookup(ColPart); ok {
		lay.partCol = c.ColumnIndex
	}
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
	if lay.partCol >= 0 {
		out[lay.partCol] = parquet.Int32Value(int32(r.Part)).Level(0, 0, lay.partCol)
	}
	return out
}

// stringBytes is s's bytes without a copy; they must not be modified.
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// FileName is the name an earlier version gave a file holding sequences
// first..last (a lake written by it keeps its files).
func FileName(first, last uint64) string {
	return fmt.Sprintf("%020d-%020d.parquet", first, last)
}

// parseFileName reads the sequences of a file name: an earlier version's
// <first>-<last>.parquet (legacy true) or this version's
// <first>-<last>-<suffix>.parquet (see partOfKey for the stream partition).
func parseFileName(name string) (first, last uint64, legacy, ok bool) {
	base, found := strings.CutSuffix(name, ".parquet")
	if !found || strings.HasPrefix(name, tempPrefix) {
		return 0, 0, false, false
	}
	parts := strings.SplitN(base, "-", 3)
	if len(parts) < 2 {
		return 0, 0, false, false
	}
	first, err1 := strconv.ParseUint(parts[0], 10, 64)
	last, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil || first > last {
		return 0, 0, false, false
	}
	return first, last, len(parts) == 2, true
}

// dataKey is the key of a new file of a stream's date partition holding
// records first..last of stream partition part; tag is "" for the
// archiver's files, "c<gen>" for compaction's. A random token keeps the
// keys of two writers apart (a fenced-out writer never replaces an object
// another committed).
func dataKey(stream, date string, part int, first, last uint64, tag string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	tok := hex.EncodeToString(b[:])
	if tag != "" {
		tok = tag + "-" + tok
	}
	if part != 0 {
		tok = "p" + strconv.Itoa(part) + "-" + tok
	}
	return fmt.Sprintf("%s/date=%s/%020d-%020d-%s.parquet", stream, date, first, last, tok)
}

// partOfKey is the stream partition of a data key: p when its name's
// suffix starts with p<p>-, else 0 (partition 0's files and every file
// written before stream partitions).
func partOfKey(key string) int {
	name := key[strings.LastIndexByte(key, '/')+1:]
	parts := strings.SplitN(strings.TrimSuffix(name, ".parquet"), "-", 4)
	if len(parts) < 4 || !strings.HasPrefix(parts[2], "p") {
		return 0
	}
	p, err := strconv.Atoi(parts[2][1:])
	if err != nil || p < 0 {
		return 0
	}
	return p
}

// dateOfKey is the date partition of a data key ("" if it is none).
func dateOfKey(key string) string {
	parts := strings.Split(key, "/")
	if len(parts) != 3 {
		return ""
	}
	d, _ := strings.CutPrefix(parts[1], "date=")
	return d
}

// Write writes rows (a contiguous, ascending sequence range of one stream
// partition, Row.Part) as immutable objects, one per event date (UTC).
// They are invisible until a checkpoint of their partition at or beyond
// their last sequence is committed (by this Lake: the writer keeps them
// pending in memory). It returns the local paths of the objects when the
// store has them (local files), else their keys. When s's field types
// differ from those the partition was last written with, the commit that
// covers the rows records a new schema epoch; types that files in the
// lake cannot be read as are refused (a *SchemaError). Pending files of
// the partition the range overlaps (an earlier write of the same records,
// never committed) are dropped.
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

const msPerDay = 24 * 60 * 60 * 1000

// dateOf is the UTC date of unix ms t.
func dateOf(t int64) string {
	day := t / msPerDay
	if t%msPerDay < 0 {
		day--
	}
	return time.UnixMilli(day * msPerDay).UTC().Format("2006-01-02")
}

func (l *Lake) write(s *logic.Stream, rows []Row, release bool) (files []string, bytes int64, err error) {
	if len(rows) == 0 {
		return nil, 0, nil
	}
	if l.readOnly {
		return nil, 0, errors.New("lake: read-only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), fileTimeout)
	defer cancel()
	lay, err := l.layoutOf(s)
	if err != nil {
		return nil, 0, err
	}
	part := rows[0].Part
	for i := range rows {
		if rows[i].Part != part {
			return nil, 0, fmt.Errorf("lake: write %s: rows of stream partitions %d and %d in one write", s.Name, part, rows[i].Part)
		}
	}
	w := l.writerOf(s.Name)
	if err := l.noteFields(ctx, w, s, part, rows[0].Seq, rows[len(rows)-1].Seq); err != nil {
		return nil, 0, err
	}
	// Rows by UTC day (unix days; formatted once per file).
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
	local, _ := l.st.(objstore.Local)
	for _, day := range days {
		fi, err := l.writeFile(ctx, s, lay, rows, byDay[day], day*msPerDay, release)
		if err != nil {
			return files, bytes, err
		}
		w.mu.Lock()
		w.pending = append(w.pending, fi)
		w.mu.Unlock()
		name := fi.Key
		if local != nil {
			if name, err = local.LocalPath(fi.Key); err != nil {
				return files, bytes, fmt.Errorf("lake: %w", err)
			}
		}
		files = append(files, name)
		bytes += fi.Bytes
	}
	return files, bytes, nil
}

// writeFile writes rows[idx] (one date, starting at dayMs) as one object
// and returns what the manifest will say of it.
func (l *Lake) writeFile(ctx context.Context, s *logic.Stream, lay *layout, rows []Row, idx []int, dayMs int64, release bool) (FileInfo, error) {
	r0 := &rows[idx[0]]
	fi := FileInfo{Date: dateOf(dayMs), Part: r0.Part, First: r0.Seq, Last: r0.Seq, Rows: int64(len(idx)),
		MinArrival: r0.Arrival, MaxArrival: r0.Arrival, MinTime: r0.Event.Time, MaxTime: r0.Event.Time}
	for _, i := range idx {
		r := &rows[i]
		fi.First, fi.Last = min(fi.First, r.Seq), max(fi.Last, r.Seq)
		fi.MinArrival, fi.MaxArrival = min(fi.MinArrival, r.Arrival), max(fi.MaxArrival, r.Arrival)
		fi.MinTime, fi.MaxTime = min(fi.MinTime, r.Event.Time), max(fi.MaxTime, r.Event.Time)
	}
	fi.Key = dataKey(s.Name, fi.Date, fi.Part, fi.First, fi.Last, "")
	n, err := l.putParquet(ctx, fi.Key, lay, func(pw *parquet.Writer) error {
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
		return nil
	})
	if err != nil {
		return FileInfo{}, err
	}
	fi.Bytes = n
	return fi, nil
}

// putParquet writes a Parquet file of lay's schema to a local temp file
// (fill writes the rows), then stores it under key; it returns its size.
func (l *Lake) putParquet(ctx context.Context, key string, lay *layout, fill func(pw *parquet.Writer) error) (int64, error) {
	f, err := os.CreateTemp(l.work, tempPrefix+"lake-*.parquet")
	if err != nil {
		return 0, fmt.Errorf("lake: write %s: %w", key, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // moved into place, or left by an error
	pw := parquet.NewWriter(f, lay.schema, parquet.Compression(lakeCodec), parquet.CreatedBy("braid", "", ""))
	err = fill(pw)
	if err == nil {
		err = pw.Close()
	}
	var size int64
	if err == nil {
		var st os.FileInfo
		if st, err = f.Stat(); err == nil {
			size = st.Size()
		}
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("lake: write %s: %w", key, err)
	}
	if err := objstore.PutFile(ctx, l.st, key, tmp); err != nil {
		return 0, fmt.Errorf("lake: store %s: %w", key, err)
	}
	return size, nil
}

// commitRetries bounds how often a commit is built again on a newer
// manifest when other commits took the generation it was built on.
const commitRetries = 100

// CommitPart records the checkpoint of stream partition p: it writes the
// stream's next manifest, with the files of p this Lake wrote that end at
// or before cp.Seq (and their schema epochs). Nothing changes when there
// is nothing new. ErrConflict (wrapped) when p's checkpoint is no longer
// the one this Lake last saw (read by RecoverPart, or its first write or
// commit of p, or committed by it), or when files it would add are listed
// as garbage: another writer took the partition; nothing of this commit
// is visible, the files of p written since are dropped, and the next use
// reads the stream again. A generation taken by other commits (other
// partitions, compaction, retention) is no conflict: the commit is built
// again on the newer manifest.
func (l *Lake) CommitPart(stream string, p int, cp Checkpoint) error {
	if l.readOnly {
		return errors.New("lake: read-only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	w := l.writerOf(stream)
	w.mu.Lock()
	defer w.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if err := l.load(ctx, stream, w); err != nil {
			return err
		}
		base, ok := w.seen[p]
		if !ok {
			base = w.cur.Part(p)
			w.seen[p] = base
		}
		garbage := map[string]bool{}
		for _, g := range w.cur.Garbage {
			garbage[g.Key] = true
		}
		next := w.cur.next()
		next.setPart(p, cp)
		added, taken := 0, false
		for _, f := range w.pending {
			if f.Part == p && f.Last <= cp.Seq {
				next.Files = append(next.Files, f)
				added++
				taken = taken || garbage[f.Key]
			}
		}
		if taken || w.cur.Part(p) != base {
			w.cur = nil
			w.drop(p)
			return fmt.Errorf("%w: %s partition %d moved by another writer", ErrConflict, stream, p)
		}
		newEpochs := 0
		for _, e := range w.epochs {
			if e.Part == p && e.From <= cp.Seq {
				next.Epochs = append(next.Epochs, e)
				newEpochs++
			}
		}
		if added == 0 && newEpochs == 0 && cp == base {
			return nil
		}
		sortFiles(next.Files)
		err := l.putManifest(ctx, stream, next)
		if errors.Is(err, objstore.ErrExists) && attempt < commitRetries {
			w.cur = nil // another commit took the generation: build on the newer one
			continue
		}
		if err != nil {
			w.cur = nil
			if errors.Is(err, objstore.ErrExists) {
				return fmt.Errorf("%w: %s generation %d, after %d attempts", ErrConflict, stream, next.Gen, attempt+1)
			}
			return err
		}
		l.committed(ctx, stream, w, next)
		w.seen[p] = cp
		w.pending = slices.DeleteFunc(w.pending, func(f FileInfo) bool { return f.Part == p && f.Last <= cp.Seq })
		w.epochs = slices.DeleteFunc(w.epochs, func(e Epoch) bool { return e.Part == p && e.From <= cp.Seq })
		return nil
	}
}

// Commit is CommitPart of stream partition 0: a stream of one partition's.
func (l *Lake) Commit(stream string, cp Checkpoint) error { return l.CommitPart(stream, 0, cp) }

// Checkpoint returns the checkpoint of stream partition 0 (a stream of one
// partition's); the zero value when none.
func (l *Lake) Checkpoint(stream string) (Checkpoint, error) { return l.PartCheckpoint(stream, 0) }

// PartCheckpoint returns the checkpoint of stream partition p; the zero
// value when none.
func (l *Lake) PartCheckpoint(stream string, p int) (Checkpoint, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	m, err := l.current(ctx, stream)
	if err != nil {
		return Checkpoint{}, err
	}
	return m.Part(p), nil
}

// Files returns local paths of a stream's committed files (those of its
// current manifest, every stream partition's), ordered by first sequence,
// for DuckDB. On local files
// they are the objects themselves, which stay at least the lake's grace
// period after a compaction or retention removes them; on a remote store
// they are copies in the cache, pinned until the next Files or
// CommittedFiles call for the same stream on this Lake (so one reader per
// stream at a time; a reader that must hold files longer, or that reads
// with others, uses Manifest and Local).
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

// CommittedFiles is Files with each file's key, range and date.
func (l *Lake) CommittedFiles(stream string) ([]File, error) {
	ctx, cancel := context.WithTimeout(context.Background(), fileTimeout)
	defer cancel()
	m, err := l.current(ctx, stream)
	if err != nil {
		return nil, err
	}
	if len(m.Files) == 0 {
		return nil, nil
	}
	keys := make([]string, len(m.Files))
	for i, f := range m.Files {
		keys[i] = f.Key
	}
	paths, release, err := l.Local(ctx, keys)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	old := l.filePins[stream]
	l.filePins[stream] = release
	l.mu.Unlock()
	if old != nil {
		old()
	}
	out := make([]File, len(m.Files))
	for i, f := range m.Files {
		out[i] = File{Path: paths[i], Key: f.Key, Part: f.Part, First: f.First, Last: f.Last, Date: f.Date}
	}
	return out, nil
}

// Local returns local paths of the objects under keys, which DuckDB
// reads, kept (pinned in the cache) until release is called. On local
// files they are the objects themselves and release does nothing.
func (l *Lake) Local(ctx context.Context, keys []string) (paths []string, release func(), err error) {
	if l.cache == nil {
		if len(keys) == 0 {
			return nil, func() {}, nil
		}
		return nil, func() {}, errors.New("lake: no cache for local copies (read-only)")
	}
	paths, release, err = l.cache.Acquire(ctx, keys...)
	if err != nil {
		return nil, release, fmt.Errorf("lake: local copies: %w", err)
	}
	return paths, release, nil
}

// RecoverPart, called before the writer of stream partition p starts,
// reads the stream's state again (turning an earlier version's layout into
// a manifest), drops what this Lake wrote of p and did not commit, takes
// p's checkpoint as the one its commits build on, and lists as garbage
// (deleted after the grace period by Sweep) the data objects of p no
// manifest lists: those a writer of p that crashed, or lost the partition,
// left before committing. On local files, the files removed by hand leave
// the manifest (see present).
func (l *Lake) RecoverPart(stream string, p int) error {
	if l.readOnly {
		return errors.New("lake: read-only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), fileTimeout)
	defer cancel()
	w := l.writerOf(stream)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cur = nil
	w.drop(p)
	if err := l.load(ctx, stream, w); err != nil {
		return err
	}
	w.seen[p] = w.cur.Part(p)
	objs, err := l.st.List(ctx, stream+"/date=")
	if err != nil {
		return fmt.Errorf("lake: recover %s: %w", stream, err)
	}
	return l.updateLocked(ctx, stream, w, func(next *Manifest) (bool, error) {
		known := map[string]bool{}
		for _, f := range next.Files {
			known[f.Key] = true
		}
		for _, g := range next.Garbage {
			known[g.Key] = true
		}
		l.mu.Lock()
		for k := range l.inflight {
			known[k] = true
		}
		l.mu.Unlock()
		now := time.Now().UTC()
		var orphans []Removed
		for _, o := range objs {
			if !known[o.Key] && strings.HasSuffix(o.Key, ".parquet") && dateOfKey(o.Key) != "" && partOfKey(o.Key) == p {
				orphans = append(orphans, Removed{Key: o.Key, Removed: now})
			}
		}
		kept := l.present(next.Files)
		if len(orphans) == 0 && len(kept) == len(next.Files) {
			return false, nil
		}
		next.Garbage = append(next.Garbage, orphans...)
		if len(orphans) > 0 {
			l.log.Info("lake: uncommitted files listed for deletion", "stream", stream, "partition", p, "files", len(orphans))
		}
		if len(kept) < len(next.Files) {
			l.log.Warn("lake: files removed from the lake's directory by hand leave the manifest", "stream", stream, "files", len(next.Files)-len(kept))
			next.Files = kept
		}
		return true, nil
	})
}

// Recover is RecoverPart of stream partition 0: a stream of one
// partition's.
func (l *Lake) Recover(stream string) error { return l.RecoverPart(stream, 0) }

// present drops the files whose objects are gone from a store of local
// files: removed by hand, the documented way of giving up the history of a
// field whose type changed (see Conflict.WaysOut). The writer's Recover
// commits their removal; until then the schema checks ignore them. On
// other stores it returns files as they are.
func (l *Lake) present(files []FileInfo) []FileInfo {
	loc, ok := l.st.(objstore.Local)
	if !ok {
		return files
	}
	out := files[:0:0]
	for _, f := range files {
		if p, err := loc.LocalPath(f.Key); err == nil {
			if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
				continue
			}
		}
		out = append(out, f)
	}
	return out
}
