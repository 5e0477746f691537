package batchviews

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/objstore"
)

// ErrConflict: another publisher made a version current on the same base;
// nothing of this publish is current.
var ErrConflict = errors.New("batchviews: another run published first")

// Part is the rows of one view whose window start falls on one UTC date.
type Part struct {
	Date   string `json:"date"`   // window-start date, UTC, YYYY-MM-DD
	Key    string `json:"key"`    // object key ("" for no rows)
	Rows   int    `json:"rows"`   // rows (window and group cells)
	Run    string `json:"run"`    // the run that computed it (a reused part keeps its run)
	Cutoff int64  `json:"cutoff"` // the cutoff it was computed with (unix ms)
}

const dayMs = 24 * 60 * 60 * 1000

// DateOf is the UTC date (YYYY-MM-DD) of a window start (unix ms): the
// date of the part that holds its rows.
func DateOf(windowMs int64) string {
	return time.UnixMilli(windowMs).UTC().Format(time.DateOnly)
}

// dayStart is the start (unix ms) of a date YYYY-MM-DD in UTC.
func dayStart(date string) (int64, error) {
	t, err := time.Parse(time.DateOnly, date)
	if err != nil || t.Format(time.DateOnly) != date {
		return 0, fmt.Errorf("batchviews: bad date %q (want YYYY-MM-DD)", date)
	}
	return t.UnixMilli(), nil
}

// partDir is the key prefix of a view's parts of one date under a
// definition ("" for rows of a view written before definitions existed).
func partDir(view, def, date string) string {
	if def == "" {
		def = "_"
	}
	return partPrefix + view + "/" + def + "/" + date + "/"
}

// runOfPart is the run in a part's key (its last segment, less .parquet).
func runOfPart(key string) string {
	run, _ := strings.CutSuffix(key[strings.LastIndexByte(key, '/')+1:], ".parquet")
	return run
}

// WritePart stores the rows of view v whose window start falls on date
// (YYYY-MM-DD, UTC), computed by run, under a key of its own
// (parts/<view>/<definition>/<date>/<run>.parquet), and returns the Part
// naming them. Writing a part again (the same run computing a unit twice)
// stores the same rows again. Every row must start on date; no rows gives a
// Part without an object (Key ""). Cutoff is left 0 for the caller to set
// (PublishParts sets a Part's 0 Cutoff to its view's). The part becomes
// visible when a published version refers to it; until then it survives
// the clean-up after other publishes while its run's record says running
// (or, without a record, for an hour after the run's id was made).
func (s *Store) WritePart(ctx context.Context, v *logic.View, date, run string, rows []Row) (Part, error) {
	return s.writePart(ctx, v.Name, v.Definition(), date, run, rows)
}

func (s *Store) writePart(ctx context.Context, view, def, date, run string, rows []Row) (Part, error) {
	lo, err := dayStart(date)
	if err != nil {
		return Part{}, err
	}
	if !validID(run) {
		return Part{}, fmt.Errorf("batchviews: bad run id %q", run)
	}
	for _, r := range rows {
		if r.Window < lo || r.Window-lo >= dayMs {
			return Part{}, fmt.Errorf("batchviews: part %s of %s: a row's window starts at %s, not on that date", date, view, logic.FormatTime(r.Window))
		}
	}
	p := Part{Date: date, Rows: len(rows), Run: run}
	if len(rows) == 0 {
		return p, nil
	}
	rs := slices.Clone(rows)
	sortRows(rs)
	data, err := encodeRows(rs)
	if err != nil {
		return Part{}, fmt.Errorf("batchviews: encode part %s of %s: %w", date, view, err)
	}
	key := partDir(view, def, date) + run + ".parquet"
	if err := s.obj.Put(ctx, key, bytes.NewReader(data), int64(len(data))); err != nil {
		return Part{}, fmt.Errorf("batchviews: write part %s of %s: %w", date, view, err)
	}
	p.Key = key
	return p, nil
}

// PublishParts makes ver current on top of base, the version it was built
// on (nil: the first version, or a version on a store that has none).
// Each entry of ver.Views holds its Cutoff and Definition and either Parts
// (written by WritePart, by any process, or taken from an earlier version:
// one per date at most; a Part's 0 Cutoff becomes the view's) or, for an
// entry carried over from a version written before parts existed, File.
// Rows of each entry is set to the sum of its parts' rows.
//
// It writes the version record, then creates the pointer of generation
// base.Gen+1 (1 when base is nil). When that pointer exists already
// another publish won: the record is removed and the error wraps
// ErrConflict; nothing of ver is current. On success ver.Gen is set, and
// the clean-up runs: versions beyond the newest keep-versions go, then
// every part no remaining version refers to whose run has finished (or,
// without a run record, whose run id is more than an hour old). An empty
// ver.ID gets a new id (an id already used is refused); a zero Created gets
// the current time. Any other error leaves the base current, except when
// the store failed while creating the pointer and could not be read after
// (then Current tells which is).
func (s *Store) PublishParts(ctx context.Context, base, ver *Version) error {
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	return s.publishParts(ctx, base, ver)
}

func (s *Store) publishParts(ctx context.Context, base, ver *Version) error {
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
	for name, vv := range ver.Views {
		vv, err := checkEntry(name, vv)
		if err != nil {
			return fmt.Errorf("batchviews: publish %s: %w", ver.ID, err)
		}
		ver.Views[name] = vv
	}
	gen := uint64(1)
	if base != nil {
		gen = base.Gen + 1
	}
	rec := *ver
	rec.Gen = 0 // known from the pointer only
	b, err := json.MarshalIndent(&rec, "", "  ")
	if err != nil {
		return fmt.Errorf("batchviews: encode version: %w", err)
	}
	if err := s.obj.PutIfAbsent(ctx, versionKey(ver.ID), b); err != nil {
		if errors.Is(err, objstore.ErrExists) {
			return fmt.Errorf("batchviews: publish %s: the version id is taken", ver.ID)
		}
		return fmt.Errorf("batchviews: write version %s: %w", ver.ID, err)
	}
	if err := s.obj.PutIfAbsent(ctx, pointerKey(gen), []byte(ver.ID+"\n")); err != nil {
		lost := errors.Is(err, objstore.ErrExists)
		if !lost {
			// The pointer may have been written: look.
			got, gerr := s.obj.Get(ctx, pointerKey(gen))
			if gerr != nil || strings.TrimSpace(string(got)) != ver.ID {
				return fmt.Errorf("batchviews: publish %s: write pointer %d: %w", ver.ID, gen, err)
			}
		} else {
			if derr := s.obj.Delete(ctx, versionKey(ver.ID)); derr != nil {
				s.logger.Warn("remove the record of a version that lost its publish", "version", ver.ID, "err", derr)
			}
			return fmt.Errorf("%w: generation %d is taken, version %s not published", ErrConflict, gen, ver.ID)
		}
	}
	ver.Gen = gen
	cp := *ver
	cp.Views = make(map[string]ViewVersion, len(ver.Views))
	for k, v := range ver.Views {
		v.Parts = slices.Clone(v.Parts)
		cp.Views[k] = v
	}
	s.mu.Lock()
	s.versions[cp.ID] = &cp
	s.gens[gen] = cp.ID
	s.mu.Unlock()
	s.curMu.Lock()
	if s.cur.ver == nil || gen > s.cur.gen {
		s.cur = pointer{read: true, at: time.Now(), gen: gen, ver: &cp}
	}
	s.curMu.Unlock()
	if err := s.gc(ctx); err != nil {
		// The version is current: the rest goes at a later publish.
		s.logger.Warn("clean up after publish", "version", ver.ID, "err", err)
	}
	return nil
}

// checkEntry checks a view's entry of a version to publish and sets its
// Rows; its parts are sorted by date.
func checkEntry(name string, vv ViewVersion) (ViewVersion, error) {
	if len(vv.Parts) == 0 {
		if vv.File == "" {
			vv.Rows = 0
		}
		return vv, nil
	}
	if vv.File != "" {
		return vv, fmt.Errorf("view %s has both a file and parts", name)
	}
	parts := slices.Clone(vv.Parts)
	sort.SliceStable(parts, func(i, j int) bool { return parts[i].Date < parts[j].Date })
	n := 0
	for i := range parts {
		p := &parts[i]
		if _, err := dayStart(p.Date); err != nil {
			return vv, fmt.Errorf("view %s: %w", name, err)
		}
		if i > 0 && parts[i-1].Date == p.Date {
			return vv, fmt.Errorf("view %s: two parts of %s", name, p.Date)
		}
		if p.Key == "" && p.Rows != 0 || p.Rows < 0 {
			return vv, fmt.Errorf("view %s: part %s: %d rows, key %q", name, p.Date, p.Rows, p.Key)
		}
		if p.Key != "" && !strings.HasPrefix(p.Key, partDir(name, vv.Definition, p.Date)) {
			return vv, fmt.Errorf("view %s: part %s: key %q is not one of the view's parts of that date under definition %q", name, p.Date, p.Key, vv.Definition)
		}
		if p.Cutoff == 0 {
			p.Cutoff = vv.Cutoff
		}
		n += p.Rows
	}
	vv.Parts, vv.Rows = parts, n
	return vv, nil
}

// Publish makes ver current on top of the current version. For every view
// in rows it writes the view's rows as parts (one per window-start date,
// computed by run ver.ID) and sets Parts and Rows of ver.Views[view],
// which must hold the view's Cutoff; other entries of ver.Views keep the
// rows of the versions they come from. See PublishParts for the rest (an
// error wrapping ErrConflict when another publish got in between). An
// empty ver.ID gets a new id; a zero Created gets the current time.
func (s *Store) Publish(ver *Version, rows map[string][]Row) error {
	ctx := context.Background()
	s.pubMu.Lock()
	defer s.pubMu.Unlock()
	if ver.ID == "" {
		ver.ID = NewID()
	}
	if !validID(ver.ID) {
		return fmt.Errorf("batchviews: bad version id %q", ver.ID)
	}
	if ver.Views == nil {
		ver.Views = map[string]ViewVersion{}
	}
	for name := range rows {
		if _, ok := ver.Views[name]; !ok {
			return fmt.Errorf("batchviews: publish %s: view %s has no entry (cutoff) in the version", ver.ID, name)
		}
	}
	// Parts are written under the version's id as their run: never over
	// the parts of a published version.
	if _, err := s.obj.Stat(ctx, versionKey(ver.ID)); err == nil {
		return fmt.Errorf("batchviews: publish %s: the version id is taken", ver.ID)
	} else if !errors.Is(err, objstore.ErrNotFound) {
		return fmt.Errorf("batchviews: publish %s: %w", ver.ID, err)
	}
	base, err := s.current(ctx, true)
	if err != nil {
		return err
	}
	type unit struct {
		view, date string
		rows       []Row
	}
	var units []unit
	for name, rs := range rows {
		byDate := map[string][]Row{}
		for _, r := range rs {
			d := DateOf(r.Window)
			byDate[d] = append(byDate[d], r)
		}
		for d, rs := range byDate {
			units = append(units, unit{name, d, rs})
		}
	}
	parts := make([]Part, len(units))
	if err := parallel(ctx, len(units), func(i int) error {
		u := units[i]
		vv := ver.Views[u.view]
		p, err := s.writePart(ctx, u.view, vv.Definition, u.date, ver.ID, u.rows)
		p.Cutoff = vv.Cutoff
		parts[i] = p
		return err
	}); err != nil {
		return err
	}
	for name, rs := range rows {
		vv := ver.Views[name]
		vv.File, vv.Parts, vv.Rows = "", nil, len(rs)
		for i, u := range units {
			if u.view == name {
				vv.Parts = append(vv.Parts, parts[i])
			}
		}
		ver.Views[name] = vv
	}
	return s.publishParts(ctx, base, ver)
}

// ioParallel is how many objects one call reads or writes at once.
const ioParallel = 8

// parallel calls fn(0..n-1), ioParallel at a time, and returns the first
// error (the calls not started yet are skipped).
func parallel(ctx context.Context, n int, fn func(i int) error) error {
	if n == 1 {
		return fn(0)
	}
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		errMu sync.Mutex
		first error
	)
	failed := func() bool { errMu.Lock(); defer errMu.Unlock(); return first != nil }
	for range min(n, ioParallel) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || failed() || ctx.Err() != nil {
					return
				}
				if err := fn(i); err != nil {
					errMu.Lock()
					if first == nil {
						first = err
					}
					errMu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// Rows returns a view's rows in ver with window start in [fromMs, toMs),
// ordered by window then group. It reads only the parts whose date meets
// the range (a part holds the windows starting in [date, date + 1 day));
// each row object is loaded once and kept in memory (the least recently
// used go beyond maxCachedObjects). The rows returned (and their State)
// are shared: do not modify them. An empty range (toMs <= fromMs) returns
// no rows but loads all the view's rows: a warm-up. A view absent from ver,
// or stored under another definition, yields ErrNoView.
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
	warm := toMs <= fromMs
	var keys []string
	first, last := -1, -1 // the parts read, by index in vv.Parts
	if len(vv.Parts) == 0 {
		if vv.File != "" {
			keys = append(keys, vv.File)
		}
	} else {
		for i, p := range vv.Parts {
			if p.Key == "" {
				continue
			}
			lo, err := dayStart(p.Date)
			if err != nil {
				return nil, fmt.Errorf("batchviews: %s in %s: %w", v.Name, ver.ID, err)
			}
			if warm || lo < toMs && lo+dayMs > fromMs {
				keys = append(keys, p.Key)
				if first < 0 {
					first = i
				}
				last = i
			}
		}
	}
	span := fmt.Sprintf("%s\x00%s\x00%d-%d", ver.ID, v.Name, first, last)
	if len(keys) > 1 && !warm {
		if rows, ok := s.spanRows(span); ok {
			return within(rows, fromMs, toMs), nil
		}
	}
	loaded := make([][]Row, len(keys))
	if err := parallel(ctx, len(keys), func(i int) error {
		rows, err := s.load(ctx, keys[i], v)
		loaded[i] = rows
		return err
	}); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case warm:
		return nil, nil
	case len(keys) == 0:
		return nil, nil
	case len(keys) == 1:
		return within(loaded[0], fromMs, toMs), nil
	}
	// Rows of several parts: their concatenation is kept (parts are in
	// date order, so are their rows), so that the next range over the same
	// parts is a slice of it too.
	n := 0
	for _, rows := range loaded {
		n += len(rows)
	}
	all := make([]Row, 0, n)
	for _, rows := range loaded {
		all = append(all, rows...)
	}
	s.keepSpan(span, ver.ID, all)
	return within(all, fromMs, toMs), nil
}

// within returns the rows (ordered by window) with window start in
// [fromMs, toMs), shared.
func within(rows []Row, fromMs, toMs int64) []Row {
	lo := sort.Search(len(rows), func(i int) bool { return rows[i].Window >= fromMs })
	hi := sort.Search(len(rows), func(i int) bool { return rows[i].Window >= toMs })
	if hi <= lo {
		return nil
	}
	return rows[lo:hi:hi]
}

// A span is the rows of consecutive parts of a view in a version, one
// slice: a range over several parts is a slice of it, not a copy. Spans
// hold Row values (not their states, which the parts' rows share): their
// rows in all are bounded by maxSpanRows or the rows of the parts loaded,
// whichever is more, the least recently used going first.
type spanEntry struct {
	key     string
	version string
	elem    *list.Element
	rows    []Row
}

const maxSpanRows = 1 << 20

func (s *Store) spanRows(key string) ([]Row, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.spans[key]
	if !ok {
		return nil, false
	}
	s.spanLRU.MoveToFront(e.elem)
	return e.rows, true
}

func (s *Store) keepSpan(key, version string, rows []Row) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.spans[key]; ok {
		return
	}
	e := &spanEntry{key: key, version: version, rows: rows}
	e.elem = s.spanLRU.PushFront(e)
	s.spans[key] = e
	s.spanTotal += len(rows)
	var parts int64
	for _, pe := range s.cache.byKey {
		parts += pe.loaded.Load()
	}
	for limit := max(maxSpanRows, int(parts)); s.spanTotal > limit && s.spanLRU.Len() > 1; {
		s.dropSpanLocked(s.spanLRU.Back().Value.(*spanEntry))
	}
}

func (s *Store) dropSpanLocked(e *spanEntry) {
	delete(s.spans, e.key)
	s.spanLRU.Remove(e.elem)
	s.spanTotal -= len(e.rows)
}

// maxCachedObjects bounds the row objects (parts, or whole views of
// versions written before parts) kept in memory.
const maxCachedObjects = 4096

// objectCache holds loaded row objects, least recently used first out.
type objectCache struct {
	byKey map[string]*entry
	lru   *list.List // of *entry, most recently used in front
}

type entry struct {
	key    string
	elem   *list.Element
	once   sync.Once
	rows   []Row
	err    error
	loaded atomic.Int64 // len(rows), once loaded
}

func (c *objectCache) init() {
	c.byKey, c.lru = map[string]*entry{}, list.New()
}

func (c *objectCache) remove(e *entry) {
	if c.byKey[e.key] == e {
		delete(c.byKey, e.key)
		c.lru.Remove(e.elem)
	}
}

func (s *Store) load(ctx context.Context, key string, v *logic.View) ([]Row, error) {
	s.mu.Lock()
	e, ok := s.cache.byKey[key]
	if ok {
		s.cache.lru.MoveToFront(e.elem)
	} else {
		e = &entry{key: key}
		e.elem = s.cache.lru.PushFront(e)
		s.cache.byKey[key] = e
		for s.cache.lru.Len() > maxCachedObjects {
			s.cache.remove(s.cache.lru.Back().Value.(*entry))
		}
	}
	s.mu.Unlock()
	e.once.Do(func() {
		data, err := s.obj.Get(ctx, key)
		if err == nil {
			e.rows, err = decodeRows(bytes.NewReader(data), int64(len(data)), v)
		}
		if err != nil {
			e.err = fmt.Errorf("batchviews: read %s: %w", key, err)
		}
		e.loaded.Store(int64(len(e.rows)))
	})
	if e.err != nil {
		s.mu.Lock()
		s.cache.remove(e)
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
	for _, e := range s.cache.byKey {
		n += e.loaded.Load()
	}
	return n
}

// KeepOnly lets go of the loaded row objects that ver does not use (a
// later Rows of an older version loads them again).
func (s *Store) KeepOnly(ver *Version) {
	used := map[string]bool{}
	for _, vv := range ver.Views {
		used[vv.File] = true
		for _, p := range vv.Parts {
			used[p.Key] = true
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, e := range s.cache.byKey {
		if !used[key] {
			s.cache.remove(e)
		}
	}
	for _, e := range s.spans {
		if e.version != ver.ID {
			s.dropSpanLocked(e)
		}
	}
}

// forget drops a deleted object from the cache.
func (s *Store) forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.cache.byKey[key]; ok {
		s.cache.remove(e)
	}
}
