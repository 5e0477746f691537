// Package batchviews stores the batch layer's results: immutable versions of
// the batch views, each view with the cutoff its rows cover, and the history
// of batch runs, on an object store (objstore: local files, or an
// S3-compatible server shared by every host).
//
// Layout (keys of the object store):
//
//	parts/<view>/<definition>/<date>/<run>.parquet  a view's rows whose window starts on that UTC date (YYYY-MM-DD), computed by run
//	versions/<version>.json                         Version, written once, before its pointer
//	current/<generation, 20 digits>                 the id of the version made current at that generation
//	runs/<run>.json                                 Run, replaced as the run progresses
//
// Row objects are written before the version record that refers to them,
// and the record before its pointer. The current version is the one the
// highest generation names. A publish builds on a version of generation g
// and creates current/<g+1> with a conditional write (objstore PutIfAbsent):
// of publishes racing on one base exactly one succeeds, the others get
// ErrConflict, and a reader sees the old version or the whole new one.
//
// A store written before parts existed (local files) holds
// views/<view>/<version>.parquet (a whole view, named by File in its
// ViewVersion), versions/<version>.json and a CURRENT object naming the
// current version: it opens and reads as it did (generation 0), and its
// first publish makes generation 1.
package batchviews

import (
	"container/list"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/objstore"
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
	Cutoff int64 `json:"cutoff"`
	// File is the key of the view's rows in one object, in a version
	// written before parts existed ("" otherwise).
	File string `json:"file"`
	// Rows is the number of rows (window and group cells).
	Rows int `json:"rows"`
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
	// Gen is the generation of the pointer that made it current, set on
	// the versions Current and Publish return (0 for a store written
	// before pointers existed, and in a record read by Version alone).
	Gen uint64 `json:"gen,omitempty"`
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
// their records and rows; older ones are removed after a publish. Default
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

// WithRunLock sets the run lock LockRuns takes, shared by every process
// that may run batch runs on the store. Default: on local files an flock
// on RUNLOCK in the store's directory (every process on the host shares
// it); on any other store a lock of this handle only, which serves when a
// single process runs batch runs.
func WithRunLock(l RunLock) Option {
	return func(s *Store) {
		if l != nil {
			s.lock = l
		}
	}
}

// WithPointerTTL sets how long Current may answer with the current
// pointer it read last instead of reading it again: a publish by another
// handle shows at the latest d later (one by this handle at once). Default:
// 0 on local files (a pointer is read per call, a directory listing),
// defaults.BatchPointerTTL on any other store (where a read is a LIST
// request, too slow for each query).
func WithPointerTTL(d time.Duration) Option {
	return func(s *Store) {
		if d >= 0 {
			s.ttl = d
		}
	}
}

// WithLogger sets the logger of the store's background work (the clean-up
// after a publish). Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(s *Store) {
		if l != nil {
			s.logger = l
		}
	}
}

// Store holds versions and runs on an object store. It is safe for
// concurrent use, by any number of handles in any number of processes:
// publishes exclude each other through the current pointer (ErrConflict),
// batch runs through the run lock.
type Store struct {
	obj      objstore.Store
	dir      string // the directory of a store on local files, else ""
	keep     int
	keepRuns int
	ttl      time.Duration
	lock     RunLock
	logger   *slog.Logger

	pubMu sync.Mutex // one Publish / SaveRun at a time in this handle

	curMu sync.Mutex // one read of the current pointer at a time
	cur   pointer

	mu        sync.Mutex
	versions  map[string]*Version   // parsed version records
	gens      map[uint64]string     // pointers read: generation -> version id
	runs      map[string]Run        // finished run records (final)
	cache     objectCache           // row objects loaded
	spans     map[string]*spanEntry // concatenated rows of consecutive parts
	spanLRU   *list.List            // of *spanEntry, most recently used in front
	spanTotal int                   // rows in spans
}

// pointer is the current pointer as last read.
type pointer struct {
	read bool      // read at least once
	at   time.Time // when
	gen  uint64
	ver  *Version // nil: no version yet
}

// Open opens a store on st. Nothing is read or written until the first
// call.
func Open(st objstore.Store, opts ...Option) (*Store, error) {
	if st == nil {
		return nil, errors.New("batchviews: no object store")
	}
	s := &Store{obj: st, keep: defaults.BatchKeepVersions, keepRuns: defaults.BatchKeepRuns, ttl: -1, logger: slog.Default(),
		versions: map[string]*Version{}, gens: map[uint64]string{}, runs: map[string]Run{}}
	s.cache.init()
	s.spans, s.spanLRU = map[string]*spanEntry{}, list.New()
	for _, o := range opts {
		o(s)
	}
	if f, ok := st.(*objstore.Files); ok {
		s.dir = f.Root()
	}
	if s.ttl < 0 {
		s.ttl = defaults.BatchPointerTTL
		if s.dir != "" {
			s.ttl = 0
		}
	}
	if s.lock == nil {
		if s.dir != "" {
			s.lock = flockRunLock{path: filepath.Join(s.dir, "RUNLOCK")}
		} else {
			s.lock = &localRunLock{}
		}
	}
	s.logger = s.logger.With("component", "batchviews")
	return s, nil
}

// OpenDir opens (creating it if needed) a store on local files under dir;
// its run lock is an flock in dir unless an option sets another.
func OpenDir(dir string, opts ...Option) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("batchviews: %w", err)
	}
	st, err := objstore.NewFiles(abs)
	if err != nil {
		return nil, fmt.Errorf("batchviews: %w", err)
	}
	return Open(st, opts...)
}

// Dir is the store's directory on local files ("" on another store).
func (s *Store) Dir() string { return s.dir }

// PointerTTL is how long Current may answer with a pointer read earlier
// (WithPointerTTL).
func (s *Store) PointerTTL() time.Duration { return s.ttl }

// NewID returns a new, time-ordered id for a run or version.
func NewID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return time.Now().UTC().Format(idTime) + "-" + hex.EncodeToString(b[:])
}

// idTime is the layout of the time NewID starts with.
const idTime = "20060102T150405.000000Z"

// idAge is how long ago an id of NewID was made; ok false for an id of
// another form.
func idAge(id string, now time.Time) (age time.Duration, ok bool) {
	if len(id) < len(idTime) {
		return 0, false
	}
	t, err := time.Parse(idTime, id[:len(idTime)])
	if err != nil {
		return 0, false
	}
	return now.Sub(t), true
}

// Keys of the layout.
const (
	pointerPrefix = "current/"
	versionPrefix = "versions/"
	runPrefix     = "runs/"
	partPrefix    = "parts/"
	legacyPrefix  = "views/"
	legacyCurrent = "CURRENT"
)

func pointerKey(gen uint64) string { return fmt.Sprintf("%s%020d", pointerPrefix, gen) }

func parsePointerKey(key string) (uint64, bool) {
	d, ok := strings.CutPrefix(key, pointerPrefix)
	if !ok || len(d) != 20 {
		return 0, false
	}
	g, err := strconv.ParseUint(d, 10, 64)
	return g, err == nil
}

func versionKey(id string) string { return versionPrefix + id + ".json" }

// Current returns the current version, or nil before the first publish;
// the version returned has Gen set. It reads the current pointer (a LIST
// of the pointers) unless it read it less than the pointer TTL ago;
// version records are parsed once. Once it has returned a version, it
// never returns an older one.
func (s *Store) Current() (*Version, error) {
	return s.current(context.Background(), false)
}

// current reads the pointer (fresh: whatever the TTL).
func (s *Store) current(ctx context.Context, fresh bool) (*Version, error) {
	s.curMu.Lock()
	defer s.curMu.Unlock()
	now := time.Now()
	if !fresh && s.cur.read && now.Sub(s.cur.at) < s.ttl {
		return s.cur.ver, nil
	}
	gen, id, found, err := s.readPointer(ctx)
	if err != nil {
		if fresh || s.cur.ver == nil {
			return nil, err
		}
		// Serve the version read last until the store answers again
		// (asked again after the TTL).
		s.logger.Warn("read the current batch version; answering from the one read before", "version", s.cur.ver.ID, "err", err)
		s.cur.at = now
		return s.cur.ver, nil
	}
	if !found || (s.cur.ver != nil && (gen < s.cur.gen || gen == s.cur.gen && id == s.cur.ver.ID)) {
		// Nothing yet, or what was read last (pointers only move forward).
		s.cur.read, s.cur.at = true, now
		return s.cur.ver, nil
	}
	v, err := s.Version(id)
	if err != nil {
		return nil, err
	}
	v = s.withGen(v, gen)
	s.cur = pointer{read: true, at: now, gen: gen, ver: v}
	return v, nil
}

// readPointer finds the highest generation and its version id, else the
// CURRENT object of a store written before pointers existed (generation 0).
func (s *Store) readPointer(ctx context.Context) (gen uint64, id string, found bool, err error) {
	objs, err := s.obj.List(ctx, pointerPrefix)
	if err != nil {
		return 0, "", false, fmt.Errorf("batchviews: read the current pointer: %w", err)
	}
	for _, o := range objs {
		if g, ok := parsePointerKey(o.Key); ok && (!found || g > gen) {
			gen, found = g, true
		}
	}
	if found {
		id, err := s.pointerID(ctx, gen)
		if err != nil {
			return 0, "", false, err
		}
		return gen, id, true, nil
	}
	b, err := s.obj.Get(ctx, legacyCurrent)
	if errors.Is(err, objstore.ErrNotFound) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("batchviews: read CURRENT: %w", err)
	}
	id = strings.TrimSpace(string(b))
	return 0, id, id != "", nil
}

// pointerID returns the version id of generation gen's pointer.
func (s *Store) pointerID(ctx context.Context, gen uint64) (string, error) {
	s.mu.Lock()
	id, ok := s.gens[gen]
	s.mu.Unlock()
	if ok {
		return id, nil
	}
	b, err := s.obj.Get(ctx, pointerKey(gen))
	if err != nil {
		return "", fmt.Errorf("batchviews: read pointer %d: %w", gen, err)
	}
	id = strings.TrimSpace(string(b))
	s.mu.Lock()
	s.gens[gen] = id
	s.mu.Unlock()
	return id, nil
}

// withGen returns v with Gen set to gen (records are shared: a copy when
// it differs).
func (s *Store) withGen(v *Version, gen uint64) *Version {
	if v.Gen == gen {
		return v
	}
	cp := *v
	cp.Gen = gen
	s.mu.Lock()
	s.versions[v.ID] = &cp
	s.mu.Unlock()
	return &cp
}

// maxCachedVersions bounds the parsed version records kept.
const maxCachedVersions = 64

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
	b, err := s.obj.Get(context.Background(), versionKey(id))
	if errors.Is(err, objstore.ErrNotFound) {
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
	if prev, ok := s.versions[id]; ok {
		v = prev // read meanwhile, perhaps with its Gen
	} else {
		if len(s.versions) >= maxCachedVersions {
			// Versions other handles removed stay here otherwise.
			clear(s.versions)
		}
		s.versions[id] = v
	}
	s.mu.Unlock()
	return v, nil
}

func validID(id string) bool {
	return id != "" && !strings.ContainsAny(id, "/\\") && !strings.HasPrefix(id, ".")
}

// Versions returns the ids of the stored versions, oldest first.
func (s *Store) Versions() ([]string, error) { return s.ids(context.Background(), versionPrefix) }

// ids lists the records under prefix ("versions/", "runs/") by id, oldest
// first (ids are time-ordered).
func (s *Store) ids(ctx context.Context, prefix string) ([]string, error) {
	objs, err := s.obj.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("batchviews: list %s: %w", prefix, err)
	}
	var ids []string
	for _, o := range objs {
		if id, ok := strings.CutSuffix(strings.TrimPrefix(o.Key, prefix), ".json"); ok && validID(id) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids, nil
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
// stream's live views in cat (config.Catalog.SpeedViewsOf: batch-tier
// views keep no speed state) that have an entry there (under any
// definition): where the speed layer's state of the stream starts. A view's batch rows
// under today's definition have that cutoff or a later one (cutoffs follow
// the archiver, which only moves forward), so from it the speed cells
// cover whatever cutoff answers. 0 when no view has an entry.
func (s *Store) StreamCutoff(ctx context.Context, stream string, cat *config.Catalog) (int64, error) {
	cur, err := s.Current()
	if err != nil || cur == nil {
		return 0, err
	}
	var out int64 = -1
	for _, v := range cat.SpeedViewsOf(stream) {
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
