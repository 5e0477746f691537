// Package batchviews stores the batch layer's results: immutable versions of
// the batch views, each view with the cutoff its rows cover, and the history
// of batch runs.
//
// Layout (files are immutable; the version record is written after its view
// files, and CURRENT, replaced by rename, is written last):
//
//	<dir>/views/<view>/<version>.parquet   rows: window int64, group string, state list<double>
//	<dir>/versions/<version>.json          Version
//	<dir>/CURRENT                          id of the current version
//	<dir>/runs/<run>.json                  Run
package batchviews

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/fsatomic"
)

// Row is one cell of a batch view: a window start (unix ms), an encoded
// group (logic.View.GroupKey) and the view's state: numeric slots (NaN =
// empty min/max), sketches, and the exact values of the sketch measures.
type Row struct {
	Window int64
	Group  string
	State  logic.State
}

// ViewVersion is one view in a version: the rows of every record that
// arrived before Cutoff (an epoch start, unix ms).
type ViewVersion struct {
	Cutoff int64  `json:"cutoff"`
	File   string `json:"file"` // relative to the store's directory
	Rows   int    `json:"rows"`
	// Definition is the view's definition (logic.View.Definition) the rows
	// were computed under; they are read only under the same one ("":
	// written before definitions existed).
	Definition string `json:"definition,omitempty"`
	// Parts are the rows by window-start date, sorted by date (a
	// version written before parts existed has File instead).
	Parts []Part `json:"parts,omitempty"`
}

// Version is a published set of batch views.
type Version struct {
	ID      string                 `json:"id"`
	Created time.Time              `json:"created"`
	Views   map[string]ViewVersion `json:"views"`
	Gen     uint64                 `json:"gen,omitempty"` // the generation of its current pointer
}

// Run is the record of one batch run.
//
// RequestedAt and CoversRequest belong to on-demand runs (asked for over
// HTTP or by `braid batch run`); a scheduled run has neither. CoversRequest
// is true when the run waited until the lake covered every record the log
// had acknowledged at RequestedAt (so each view's cutoff lies after all of
// them), false when that wait timed out or the log could not be asked.
//
// FailedViews names the views whose computation failed, with the error:
// they keep their entry of the previous version while the others are
// published (status partial), or, when every view failed, nothing is
// published (status failed).
type Run struct {
	ID            string            `json:"id"`
	Status        string            `json:"status"` // running | succeeded | partial | failed
	Views         []string          `json:"views"`
	Cutoffs       Cutoffs           `json:"cutoffs,omitempty"`
	FailedViews   map[string]string `json:"failed_views,omitempty"`
	RowsRead      int64             `json:"rows_read"`
	RowsOut       int64             `json:"rows_out"`
	UnitsComputed int               `json:"units_computed"` // work units (view × date) computed
	UnitsReused   int               `json:"units_reused"`   // units taken from the version the run built on
	RequestedAt   time.Time         `json:"requested_at,omitzero"`
	CoversRequest *bool             `json:"covers_request,omitempty"`
	Started       time.Time         `json:"started"`
	Finished      time.Time         `json:"finished,omitzero"`
	DurationMs    int64             `json:"duration_ms"`
	Error         string            `json:"error,omitempty"`
	Version       string            `json:"version,omitempty"`
}

// Cutoffs are the cutoffs of a run's views: unix ms, an epoch start (0:
// none). In JSON each is an RFC 3339 time in UTC (null for 0), like every
// time Braid answers; a number (unix ms, as records were written before)
// reads too.
type Cutoffs map[string]int64

// MarshalJSON renders each cutoff as RFC 3339 (null for 0).
func (c Cutoffs) MarshalJSON() ([]byte, error) {
	if c == nil {
		return []byte("null"), nil
	}
	out := make(map[string]*string, len(c))
	for k, ms := range c {
		if ms > 0 {
			t := logic.FormatTime(ms)
			out[k] = &t
		} else {
			out[k] = nil
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads RFC 3339 times, unix ms or null (0) per view.
func (c *Cutoffs) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("cutoffs: %w", err)
	}
	if raw == nil {
		*c = nil
		return nil
	}
	out := make(Cutoffs, len(raw))
	for k, r := range raw {
		ms, err := decodeMs(r)
		if err != nil {
			return fmt.Errorf("cutoff of %s: %w", k, err)
		}
		out[k] = ms
	}
	*c = out
	return nil
}

// decodeMs reads a time given as an RFC 3339 string, unix ms or null (0).
func decodeMs(r json.RawMessage) (int64, error) {
	var x any
	if err := json.Unmarshal(r, &x); err != nil {
		return 0, err
	}
	switch y := x.(type) {
	case nil:
		return 0, nil
	case float64:
		if y != math.Trunc(y) || math.Abs(y) > 1<<62 {
			return 0, fmt.Errorf("bad unix ms %s", r)
		}
		return int64(y), nil
	case string:
		t, err := time.Parse(time.RFC3339Nano, y)
		if err != nil {
			return 0, err
		}
		return t.UnixMilli(), nil
	}
	return 0, fmt.Errorf("want an RFC 3339 time or unix ms, got %s", r)
}

// Run statuses.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusPartial   = "partial" // some views failed (FailedViews); the others were published
	StatusFailed    = "failed"
)

// Option configures a Store.
type Option func(*Store)

// WithKeepVersions sets how many versions (the current one included) keep
// their files; older ones are removed at Publish. Default
// defaults.BatchKeepVersions.
func WithKeepVersions(n int) Option {
	return func(s *Store) {
		if n >= 1 {
			s.keep = n
		}
	}
}

// WithKeepRuns sets how many run records are kept. Default
// defaults.BatchKeepRuns.
func WithKeepRuns(n int) Option {
	return func(s *Store) {
		if n >= 1 {
			s.keepRuns = n
		}
	}
}

// Store holds versions and runs under a directory. It is safe for
// concurrent use; one process publishes.
type Store struct {
	dir      string
	keep     int
	keepRuns int

	pubMu sync.Mutex // one Publish / SaveRun at a time

	mu       sync.Mutex
	versions map[string]*Version // parsed version records
	cache    map[string]*entry   // view file -> rows
	tick     uint64
}

type entry struct {
	once   sync.Once
	rows   []Row
	err    error
	used   uint64
	loaded atomic.Int64 // len(rows), once loaded
}

const maxCachedFiles = 64

// Open opens (creating it if needed) a store under dir.
func Open(dir string, opts ...Option) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("batchviews: %w", err)
	}
	s := &Store{dir: abs, keep: defaults.BatchKeepVersions, keepRuns: defaults.BatchKeepRuns, versions: map[string]*Version{}, cache: map[string]*entry{}}
	for _, o := range opts {
		o(s)
	}
	for _, d := range []string{abs, filepath.Join(abs, "views"), filepath.Join(abs, "versions"), filepath.Join(abs, "runs")} {
		if err := fsatomic.MkdirAllSync(d); err != nil {
			return nil, fmt.Errorf("batchviews: create %s: %w", d, err)
		}
	}
	return s, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// NewID returns a new, time-ordered id for a run or version.
func NewID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format("20060102T150405.000000Z") + "-" + hex.EncodeToString(b[:])
}

// Current returns the current version, or nil before the first publish.
// It re-reads the CURRENT pointer (a tiny file) each call; version records
// are parsed once.
func (s *Store) Current() (*Version, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, "CURRENT"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("batchviews: read CURRENT: %w", err)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return nil, nil
	}
	return s.Version(id)
}

// Version returns a published version by id.
func (s *Store) Version(id string) (*Version, error) {
	s.mu.Lock()
	v, ok := s.versions[id]
	s.mu.Unlock()
	if ok {
		return v, nil
	}
	if !validID(id) {
		return nil, fmt.Errorf("batchviews: bad version id %q", id)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "versions", id+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrMissingMeta, id)
	}
	if err != nil {
		return nil, fmt.Errorf("batchviews: read version %s: %w", id, err)
	}
	v = &Version{}
	if err := json.Unmarshal(b, v); err != nil {
		return nil, fmt.Errorf("batchviews: decode version %s: %w", id, err)
	}
	if v.Views == nil {
		v.Views = map[string]ViewVersion{}
	}
	s.mu.Lock()
	s.versions[id] = v
	s.mu.Unlock()
	return v, nil
}

func validID(id string) bool {
	return id != "" && !strings.ContainsAny(id, "/\\") && !strings.HasPrefix(id, ".")
}

// fileRow is a view row as stored in Parquet: flat columns only, so that
// loading a large view file does not reconstruct nested lists. Num and
// Exact are float64s, little-endian; Sketches is each encoded sketch
// (logic.State.EncodeSketches) after its uvarint length.
type fileRow struct {
	Window   int64  `parquet:"window"`
	Group    string `parquet:"group"`
	Num      []byte `parquet:"num"`
	Sketches []byte `parquet:"sketch_bytes"`
	Exact    []byte `parquet:"exact_f64"`
}

// listFileRow is the earlier layout (nested lists), still read.
type listFileRow struct {
	Window   int64     `parquet:"window"`
	Group    string    `parquet:"group"`
	State    []float64 `parquet:"state,list"`
	Sketches [][]byte  `parquet:"sketches,list"`
	Exact    []float64 `parquet:"exact,list"`
}

func newFileRow(r Row) fileRow {
	fr := fileRow{Window: r.Window, Group: r.Group, Num: appendFloats(nil, r.State.Num)}
	if sk := r.State.EncodeSketches(); len(sk) > 0 {
		for _, b := range sk {
			fr.Sketches = binary.AppendUvarint(fr.Sketches, uint64(len(b)))
			fr.Sketches = append(fr.Sketches, b...)
		}
	}
	if r.State.Exact != nil {
		fr.Exact = appendFloats(nil, r.State.Exact)
	}
	return fr
}

func appendFloats(dst []byte, fs []float64) []byte {
	for _, f := range fs {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
	}
	return dst
}

func readFloats(b []byte) ([]float64, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("%d bytes of float64s", len(b))
	}
	out := make([]float64, len(b)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out, nil
}

func splitSketches(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, errors.New("truncated sketch")
		}
		out = append(out, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	return out, nil
}

// Rows returns a view's rows in ver with window start in [fromMs, toMs),
// ordered by window then group. A view file is loaded once and kept in
// memory; the returned rows (and their State) are shared: do not modify
// them. A view absent from ver yields ErrNoView.
func (s *Store) Rows(ctx context.Context, ver *Version, v *logic.View, fromMs, toMs int64) ([]Row, error) {
	if ver == nil {
		return nil, nil
	}
	vv, ok := ver.Views[v.Name]
	if !ok {
		return nil, fmt.Errorf("%w: %s in %s", ErrNoView, v.Name, ver.ID)
	}
	if vv.Definition != v.Definition() {
		return nil, fmt.Errorf("%w: %s in %s has definition %q, the view %q", ErrNoView, v.Name, ver.ID, vv.Definition, v.Definition())
	}
	rows, err := s.load(vv.File, v)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	lo := sort.Search(len(rows), func(i int) bool { return rows[i].Window >= fromMs })
	hi := sort.Search(len(rows), func(i int) bool { return rows[i].Window >= toMs })
	if hi <= lo {
		return nil, nil
	}
	return rows[lo:hi:hi], nil
}

func (s *Store) load(file string, v *logic.View) ([]Row, error) {
	if file == "" {
		return nil, nil
	}
	s.mu.Lock()
	e, ok := s.cache[file]
	if !ok {
		if len(s.cache) >= maxCachedFiles {
			s.evictLocked()
		}
		e = &entry{}
		s.cache[file] = e
	}
	s.tick++
	e.used = s.tick
	s.mu.Unlock()
	e.once.Do(func() {
		e.rows, e.err = readViewFile(filepath.Join(s.dir, filepath.FromSlash(file)), v)
		e.loaded.Store(int64(len(e.rows)))
	})
	if e.err != nil {
		s.mu.Lock()
		if s.cache[file] == e {
			delete(s.cache, file)
		}
		s.mu.Unlock()
		return nil, e.err
	}
	return e.rows, nil
}

// LoadedRows is the number of view rows held in memory.
func (s *Store) LoadedRows() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, e := range s.cache {
		n += e.loaded.Load()
	}
	return n
}

// KeepOnly lets go of the loaded view files that ver does not use (a
// later Rows of an older version loads its file again).
func (s *Store) KeepOnly(ver *Version) {
	used := map[string]bool{}
	for _, vv := range ver.Views {
		used[vv.File] = true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for file := range s.cache {
		if !used[file] {
			delete(s.cache, file)
		}
	}
}

func (s *Store) evictLocked() {
	var oldest string
	var at uint64
	for k, e := range s.cache {
		if oldest == "" || e.used < at {
			oldest, at = k, e.used
		}
	}
	delete(s.cache, oldest)
}

func readViewFile(path string, v *logic.View) ([]Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("batchviews: read %s: %w", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("batchviews: read %s: %w", path, err)
	}
	pf, err := parquet.OpenFile(f, info.Size())
	if err != nil {
		return nil, fmt.Errorf("batchviews: read %s: %w", path, err)
	}
	var rows []Row
	if _, flat := pf.Schema().Lookup("num"); flat {
		rows, err = readFlatRows(pf, v)
	} else {
		rows, err = readListRows(pf, v)
	}
	if err != nil {
		return nil, fmt.Errorf("batchviews: read %s: view %s: %w", path, v.Name, err)
	}
	sortRows(rows)
	return rows, nil
}

func readFlatRows(pf *parquet.File, v *logic.View) ([]Row, error) {
	r := parquet.NewGenericReader[fileRow](pf)
	defer r.Close()
	rows := make([]Row, 0, pf.NumRows())
	buf := make([]fileRow, 4096)
	for {
		n, readErr := r.Read(buf)
		for _, fr := range buf[:n] {
			st := v.NewState()
			var err error
			if st.Num, err = readFloats(fr.Num); err != nil {
				return nil, err
			}
			if len(fr.Exact) > 0 {
				if st.Exact, err = readFloats(fr.Exact); err != nil {
					return nil, err
				}
			}
			if len(fr.Sketches) > 0 {
				sk, err := splitSketches(fr.Sketches)
				if err != nil {
					return nil, err
				}
				if err := v.DecodeSketches(&st, sk); err != nil {
					return nil, err
				}
			}
			rows = append(rows, Row{Window: fr.Window, Group: fr.Group, State: st})
		}
		if errors.Is(readErr, io.EOF) {
			return rows, nil
		}
		if readErr != nil {
			return nil, readErr
		}
	}
}

func readListRows(pf *parquet.File, v *logic.View) ([]Row, error) {
	r := parquet.NewGenericReader[listFileRow](pf)
	defer r.Close()
	frs := make([]listFileRow, pf.NumRows())
	n, err := r.Read(frs)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	frs = frs[:n]
	rows := make([]Row, len(frs))
	for i, fr := range frs {
		st := v.NewState()
		st.Num = fr.State
		if len(fr.Exact) > 0 {
			st.Exact = fr.Exact
		}
		if err := v.DecodeSketches(&st, fr.Sketches); err != nil {
			return nil, err
		}
		rows[i] = Row{Window: fr.Window, Group: fr.Group, State: st}
	}
	return rows, nil
}

func sortRows(rows []Row) {
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Window != rows[j].Window {
			return rows[i].Window < rows[j].Window
		}
		return rows[i].Group < rows[j].Group
	})
}

// Publish makes ver the current version. For every view in rows it writes
// the view's file and sets File and Rows of ver.Views[view] (which must hold
// the view's Cutoff); other entries of ver.Views keep the files of earlier
// versions. Files are written first, then the version record, then the
// CURRENT pointer (each temp, fsync, rename). Versions beyond the newest
// keep-versions, and files no kept version references, are removed.
// An empty ver.ID gets a new id; a zero Created gets the current time.
func (s *Store) Publish(ver *Version, rows map[string][]Row) error {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if ver.ID == "" {
		ver.ID = NewID()
	}
	if !validID(ver.ID) {
		return fmt.Errorf("batchviews: bad version id %q", ver.ID)
	}
	if ver.Created.IsZero() {
		ver.Created = time.Now().UTC()
	}
	if ver.Views == nil {
		ver.Views = map[string]ViewVersion{}
	}
	for name := range rows {
		if _, ok := ver.Views[name]; !ok {
			return fmt.Errorf("batchviews: publish %s: view %s has no entry (cutoff) in the version", ver.ID, name)
		}
	}
	names := make([]string, 0, len(rows))
	for name := range rows {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		rs := rows[name]

		sortRows(rs)
		dir := filepath.Join(s.dir, "views", name)
		if err := fsatomic.MkdirAllSync(dir); err != nil {
			return fmt.Errorf("batchviews: create %s: %w", dir, err)
		}
		fname := ver.ID + ".parquet"
		if _, err := fsatomic.WriteFileAtomic(dir, fname, func(w io.Writer) error {
			frs := make([]fileRow, len(rs))
			for i, r := range rs {
				frs[i] = newFileRow(r)
			}
			return parquet.Write(w, frs, parquet.Compression(&parquet.Zstd))
		}); err != nil {
			return fmt.Errorf("batchviews: write view %s: %w", name, err)
		}
		vv := ver.Views[name]
		vv.File = "views/" + name + "/" + fname
		vv.Rows = len(rs)
		ver.Views[name] = vv
	}
	b, err := json.MarshalIndent(ver, "", "  ")
	if err != nil {
		return fmt.Errorf("batchviews: encode version: %w", err)
	}
	if err := writeSmall(filepath.Join(s.dir, "versions"), ver.ID+".json", b); err != nil {
		return fmt.Errorf("batchviews: write version %s: %w", ver.ID, err)
	}
	if err := writeSmall(s.dir, "CURRENT", []byte(ver.ID+"\n")); err != nil {
		return fmt.Errorf("batchviews: write CURRENT: %w", err)
	}
	cp := *ver
	cp.Views = make(map[string]ViewVersion, len(ver.Views))
	for k, v := range ver.Views {
		cp.Views[k] = v
	}
	s.mu.Lock()
	s.versions[ver.ID] = &cp
	s.mu.Unlock()
	if err := s.gc(ver.ID); err != nil {
		return fmt.Errorf("batchviews: gc: %w", err)
	}
	return nil
}

func writeSmall(dir, name string, b []byte) error {
	_, err := fsatomic.WriteFileAtomic(dir, name, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
	return err
}

// Versions returns the ids of the stored versions, oldest first.
func (s *Store) Versions() ([]string, error) { return s.ids("versions") }

// ids lists the records of a folder ("versions", "runs") by id, oldest
// first (ids are time-ordered).
func (s *Store) ids(folder string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, folder))
	if err != nil {
		return nil, fmt.Errorf("batchviews: list %s: %w", folder, err)
	}
	var ids []string
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".json"); ok && validID(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// gc keeps the newest s.keep versions (always current) and the files they
// reference; everything else under versions/ and views/ goes.
func (s *Store) gc(current string) error {
	ids, err := s.Versions()
	if err != nil {
		return err
	}
	keep := map[string]bool{current: true}
	for i := len(ids) - 1; i >= 0 && len(keep) < s.keep; i-- {
		keep[ids[i]] = true
	}
	files := map[string]bool{}
	var errs []error
	for id := range keep {
		v, err := s.Version(id)
		if err != nil {
			// An unreadable version keeps nothing alive but is not removed.
			errs = append(errs, err)
			continue
		}
		for _, vv := range v.Views {
			files[vv.File] = true
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, id := range ids {
		if keep[id] {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, "versions", id+".json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		s.mu.Lock()
		delete(s.versions, id)
		s.mu.Unlock()
	}
	viewsDir := filepath.Join(s.dir, "views")
	views, err := os.ReadDir(viewsDir)
	if err != nil {
		return err
	}
	for _, vd := range views {
		if !vd.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(viewsDir, vd.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, e := range ents {
			rel := "views/" + vd.Name() + "/" + e.Name()
			if files[rel] {
				continue
			}
			if err := os.Remove(filepath.Join(viewsDir, vd.Name(), e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
			s.mu.Lock()
			delete(s.cache, rel)
			s.mu.Unlock()
		}
	}
	return errors.Join(errs...)
}

// SaveRun writes (or replaces) a run record.
func (s *Store) SaveRun(r Run) error {
	if !validID(r.ID) {
		return fmt.Errorf("batchviews: bad run id %q", r.ID)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("batchviews: encode run: %w", err)
	}
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if err := writeSmall(filepath.Join(s.dir, "runs"), r.ID+".json", b); err != nil {
		return fmt.Errorf("batchviews: save run %s: %w", r.ID, err)
	}
	ids, err := s.runIDs()
	if err != nil {
		return err
	}
	for i := 0; i+s.keepRuns < len(ids); i++ {
		if ids[i] == r.ID {
			continue
		}
		_ = os.Remove(filepath.Join(s.dir, "runs", ids[i]+".json"))
	}
	return nil
}

func (s *Store) runIDs() ([]string, error) { return s.ids("runs") }

// Runs returns every stored run, newest first.
func (s *Store) Runs() ([]Run, error) {
	ids, err := s.runIDs()
	if err != nil {
		return nil, err
	}
	out := make([]Run, 0, len(ids))
	for i := len(ids) - 1; i >= 0; i-- {
		r, ok, err := s.Run(ids[i])
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Started.After(out[j].Started) })
	return out, nil
}

// Run returns one run record.
func (s *Store) Run(id string) (Run, bool, error) {
	var r Run
	if !validID(id) {
		return r, false, nil
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "runs", id+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, fmt.Errorf("batchviews: read run %s: %w", id, err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("batchviews: decode run %s: %w", id, err)
	}
	return r, true, nil
}

// Cutoff returns the cutoff of a view's rows in the current version (0:
// none, or rows of another definition).
func (s *Store) Cutoff(v *logic.View) (int64, error) {
	cur, err := s.Current()
	if err != nil || cur == nil {
		return 0, err
	}
	if vv := cur.Views[v.Name]; vv.Definition == v.Definition() {
		return vv.Cutoff, nil
	}
	return 0, nil
}

// StreamCutoff returns the smallest cutoff, in the current version, of the
// stream's views in cat that have an entry there (under any definition):
// where the speed layer's state of the stream starts. A view's batch rows
// under today's definition have that cutoff or a later one (cutoffs follow
// the archiver, which only moves forward), so from it the speed cells
// cover whatever cutoff answers. 0 when no view has an entry.
func (s *Store) StreamCutoff(ctx context.Context, stream string, cat *config.Catalog) (int64, error) {
	cur, err := s.Current()
	if err != nil || cur == nil {
		return 0, err
	}
	var out int64 = -1
	for _, v := range cat.ViewsOf(stream) {
		vv, ok := cur.Views[v.Name]
		if ok && (out < 0 || vv.Cutoff < out) {
			out = vv.Cutoff
		}
	}
	if out < 0 {
		return 0, nil
	}
	return out, nil
}

// CutoffSource adapts the store to a consumer's
// StreamCutoff(ctx, stream) (int64, error) interface (the speed layer's).
type CutoffSource struct {
	Store   *Store
	Catalog *config.Catalog
}

// StreamCutoff implements the speed layer's CutoffSource.
func (c CutoffSource) StreamCutoff(ctx context.Context, stream string) (int64, error) {
	return c.Store.StreamCutoff(ctx, stream, c.Catalog)
}
