package lake

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/braid-data/braid/storage/objstore"
)

// ErrConflict: another writer took the stream partition this commit is
// of (or, for the manifest updates that are not commits of a partition,
// kept taking the generations it was built on); nothing of this commit is
// visible.
var ErrConflict = errors.New("lake: another writer committed first")

// FileInfo describes a committed lake file, as its stream's manifest lists it.
type FileInfo struct {
	Key        string `json:"key"`            // object key in the lake's store
	Date       string `json:"date"`           // event date (UTC), YYYY-MM-DD
	Part       int    `json:"part,omitempty"` // the stream partition whose log records it holds
	First      uint64 `json:"first"`          // first log sequence (of its partition) it holds
	Last       uint64 `json:"last"`           // last log sequence it holds
	Rows       int64  `json:"rows"`           // rows (events)
	Bytes      int64  `json:"bytes"`          // object size
	MinArrival int64  `json:"min_arrival"`    // unix ms, of the rows' arrival
	MaxArrival int64  `json:"max_arrival"`    // unix ms: a partition received events since C iff a file has MaxArrival >= C
	MinTime    int64  `json:"min_time"`       // event time, unix ms
	MaxTime    int64  `json:"max_time"`
}

// Removed is a file compaction or retention took out of the lake; it is
// deleted once it has been out for the lake's grace period (readers that
// hold an older manifest can still read it until then).
type Removed struct {
	Key     string    `json:"key"`
	Removed time.Time `json:"removed"`
}

// Manifest is a stream's committed state: generation Gen, the checkpoint
// of each stream partition (partition 0's in Checkpoint, as before streams
// had partitions; the others' in Parts), the committed files (by First),
// the schema epochs, and the files removed but not yet deleted.
type Manifest struct {
	Gen        uint64             `json:"gen"`
	Checkpoint Checkpoint         `json:"checkpoint"`
	Parts      map[int]Checkpoint `json:"parts,omitempty"`
	Files      []FileInfo         `json:"files"`
	Epochs     []Epoch            `json:"epochs"`
	Garbage    []Removed          `json:"garbage,omitempty"`
}

// Part returns the checkpoint of stream partition p (the zero value when
// none).
func (m *Manifest) Part(p int) Checkpoint {
	if p == 0 {
		return m.Checkpoint
	}
	return m.Parts[p]
}

func (m *Manifest) setPart(p int, cp Checkpoint) {
	if p == 0 {
		m.Checkpoint = cp
		return
	}
	if m.Parts == nil {
		m.Parts = map[int]Checkpoint{}
	}
	m.Parts[p] = cp
}

// CoveredUntil is the coverage of a stream of n partitions: the least
// CoveredUntil of partitions 0..n-1 (0 when one has none), so every record
// of the stream that arrived before it is in the manifest's files.
func (m *Manifest) CoveredUntil(n int) int64 {
	cu := m.Checkpoint.CoveredUntil
	for p := 1; p < n; p++ {
		cu = min(cu, m.Parts[p].CoveredUntil)
	}
	return cu
}

// CompactStats is what one Compact did.
type CompactStats struct {
	Partitions int   // partitions compacted
	FilesIn    int   // files merged
	FilesOut   int   // files written
	Bytes      int64 // bytes written
}

// keepManifests is how many of a stream's newest manifests stay in the
// store: readers that listed the manifests just before a few commits still
// find the one they chose.
const keepManifests = 10

func manifestPrefix(stream string) string { return stream + "/_manifest/" }

func manifestKey(stream string, gen uint64) string {
	return fmt.Sprintf("%s%020d.json", manifestPrefix(stream), gen)
}

// manifestGen reads the generation of a manifest key.
func manifestGen(stream, key string) (uint64, bool) {
	name, ok := strings.CutPrefix(key, manifestPrefix(stream))
	if !ok {
		return 0, false
	}
	name, ok = strings.CutSuffix(name, ".json")
	if !ok || len(name) != 20 {
		return 0, false
	}
	g, err := strconv.ParseUint(name, 10, 64)
	return g, err == nil && g > 0
}

// clone is a deep copy of m.
func (m *Manifest) clone() *Manifest {
	c := *m
	c.Parts = maps.Clone(m.Parts)
	c.Files = slices.Clone(m.Files)
	c.Epochs = slices.Clone(m.Epochs)
	c.Garbage = slices.Clone(m.Garbage)
	return &c
}

// next is a copy of m as the next generation.
func (m *Manifest) next() *Manifest {
	c := m.clone()
	c.Gen++
	return c
}

func sortFiles(fs []FileInfo) {
	slices.SortFunc(fs, func(a, b FileInfo) int {
		if a.First != b.First {
			if a.First < b.First {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
}

// Manifest returns a stream's current manifest (Gen 0: none yet; a stream
// of an earlier version's layout not yet turned into manifests reads as
// the manifest it will become, with Gen 0). The caller owns the copy.
func (l *Lake) Manifest(ctx context.Context, stream string) (Manifest, error) {
	m, err := l.current(ctx, stream)
	if err != nil {
		return Manifest{}, err
	}
	return *m.clone(), nil
}

// current reads a stream's highest manifest (shared: not to be modified).
// The last one read is kept per stream: when the listing shows no newer
// generation, it is not read again.
func (l *Lake) current(ctx context.Context, stream string) (*Manifest, error) {
	for attempt := 0; ; attempt++ {
		objs, err := l.st.List(ctx, manifestPrefix(stream))
		if err != nil {
			return nil, fmt.Errorf("lake: list manifests of %s: %w", stream, err)
		}
		var gen uint64
		for _, o := range objs {
			if g, ok := manifestGen(stream, o.Key); ok && g > gen {
				gen = g
			}
		}
		if gen == 0 {
			m, _, err := l.legacyManifest(ctx, stream)
			return m, err
		}
		l.mu.Lock()
		seen := l.seen[stream]
		l.mu.Unlock()
		if seen != nil && seen.Gen == gen {
			return seen, nil
		}
		m, err := l.readManifest(ctx, stream, gen)
		if errors.Is(err, objstore.ErrNotFound) && attempt < 5 {
			continue // deleted by a writer since the listing: list again
		}
		if err != nil {
			return nil, err
		}
		l.noteSeen(stream, m)
		return m, nil
	}
}

func (l *Lake) noteSeen(stream string, m *Manifest) {
	l.mu.Lock()
	if old := l.seen[stream]; old == nil || old.Gen < m.Gen {
		l.seen[stream] = m
	}
	l.mu.Unlock()
}

func (l *Lake) readManifest(ctx context.Context, stream string, gen uint64) (*Manifest, error) {
	b, err := l.st.Get(ctx, manifestKey(stream, gen))
	if err != nil {
		return nil, fmt.Errorf("lake: read manifest %d of %s: %w", gen, stream, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("lake: decode manifest %d of %s: %w", gen, stream, err)
	}
	if m.Gen != gen {
		return nil, fmt.Errorf("lake: manifest %d of %s says generation %d", gen, stream, m.Gen)
	}
	return &m, nil
}

// writer is what a Lake keeps of a stream it writes: the manifest its
// commits build on, the files and schema epochs written and not yet
// committed (each of a stream partition), and the checkpoint of each
// partition it writes as it last saw it (the fence of its commits). mu
// serializes the stream's manifest updates in this Lake (the archivers'
// commits, compaction, retention, sweeps).
type writer struct {
	mu      sync.Mutex
	cur     *Manifest  // nil: read the store before the next update
	pending []FileInfo // written, not committed
	epochs  []Epoch    // recorded by writes, not committed (From beyond their partition's checkpoint)
	seen    map[int]Checkpoint
}

func (l *Lake) writerOf(stream string) *writer {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.writers[stream]
	if w == nil {
		w = &writer{seen: map[int]Checkpoint{}}
		l.writers[stream] = w
	}
	return w
}

// drop forgets what w wrote of stream partition p and did not commit, and
// the checkpoint of p it saw (w.mu held).
func (w *writer) drop(p int) {
	w.pending = slices.DeleteFunc(w.pending, func(f FileInfo) bool { return f.Part == p })
	w.epochs = slices.DeleteFunc(w.epochs, func(e Epoch) bool { return e.Part == p })
	delete(w.seen, p)
}

// load reads the stream's current manifest into w when w has none (w.mu
// held): an earlier version's layout becomes generation 1 here. Pending
// files and epochs their partition's checkpoint covers are dropped
// (another writer committed those records). Old manifests are deleted.
func (l *Lake) load(ctx context.Context, stream string, w *writer) error {
	if w.cur != nil {
		return nil
	}
	m, err := l.current(ctx, stream)
	if err != nil {
		return err
	}
	if m.Gen == 0 && (len(m.Files) > 0 || m.Checkpoint != (Checkpoint{}) || len(m.Epochs) > 0) {
		// An earlier version's lake: its state becomes manifest 1.
		first := m.clone()
		first.Gen = 1
		if err := l.putManifest(ctx, stream, first); err == nil {
			l.log.Info("lake: stream turned into manifests", "stream", stream, "files", len(first.Files), "seq", first.Checkpoint.Seq)
			m = first
		} else if errors.Is(err, objstore.ErrExists) {
			if m, err = l.current(ctx, stream); err != nil {
				return err
			}
		} else {
			return err
		}
	}
	w.cur = m
	w.pending = slices.DeleteFunc(w.pending, func(f FileInfo) bool { return f.Last <= m.Part(f.Part).Seq })
	w.epochs = slices.DeleteFunc(w.epochs, func(e Epoch) bool { return e.From <= m.Part(e.Part).Seq })
	if m.Gen > keepManifests {
		objs, err := l.st.List(ctx, manifestPrefix(stream))
		if err == nil {
			for _, o := range objs {
				if g, ok := manifestGen(stream, o.Key); ok && g+keepManifests <= m.Gen {
					_ = l.st.Delete(ctx, o.Key)
				}
			}
		}
	}
	return nil
}

func (l *Lake) putManifest(ctx context.Context, stream string, m *Manifest) error {
	if m.Files == nil {
		m.Files = []FileInfo{}
	}
	if m.Epochs == nil {
		m.Epochs = []Epoch{}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("lake: encode manifest of %s: %w", stream, err)
	}
	if err := l.st.PutIfAbsent(ctx, manifestKey(stream, m.Gen), b); err != nil {
		if errors.Is(err, objstore.ErrExists) {
			return err
		}
		return fmt.Errorf("lake: commit %s: %w", stream, err)
	}
	l.noteSeen(stream, m)
	return nil
}

// committed makes next, just written, w's manifest (w.mu held) and
// deletes the manifest that fell out of the kept ones.
func (l *Lake) committed(ctx context.Context, stream string, w *writer, next *Manifest) {
	w.cur = next
	if next.Gen > keepManifests {
		if err := l.st.Delete(ctx, manifestKey(stream, next.Gen-keepManifests)); err != nil {
			l.log.Warn("lake: delete an old manifest", "stream", stream, "gen", next.Gen-keepManifests, "err", err)
		}
	}
}

// update applies change to a copy of the stream's current manifest (as
// the next generation) and commits it, unless change reports no change.
// When another commit took the generation, change is applied again to the
// newer manifest (it must decide from next alone); ErrConflict after
// commitRetries attempts.
func (l *Lake) update(ctx context.Context, stream string, change func(next *Manifest) (bool, error)) error {
	if l.readOnly {
		return errors.New("lake: read-only")
	}
	w := l.writerOf(stream)
	w.mu.Lock()
	defer w.mu.Unlock()
	return l.updateLocked(ctx, stream, w, change)
}

// updateLocked is update with w.mu held.
func (l *Lake) updateLocked(ctx context.Context, stream string, w *writer, change func(next *Manifest) (bool, error)) error {
	for attempt := 0; ; attempt++ {
		if err := l.load(ctx, stream, w); err != nil {
			return err
		}
		next := w.cur.next()
		changed, err := change(next)
		if err != nil || !changed {
			return err
		}
		err = l.putManifest(ctx, stream, next)
		if err == nil {
			l.committed(ctx, stream, w, next)
			return nil
		}
		w.cur = nil
		if !errors.Is(err, objstore.ErrExists) {
			return err
		}
		if attempt == commitRetries {
			return fmt.Errorf("%w: %s generation %d, after %d attempts", ErrConflict, stream, next.Gen, attempt+1)
		}
	}
}

// DropBefore removes the date partitions dated before date (YYYY-MM-DD),
// of every stream partition, in one commit and returns how many files went. Their objects stay for the
// grace period (Sweep deletes them).
func (l *Lake) DropBefore(ctx context.Context, stream, date string) (int, error) {
	if _, err := time.Parse("2006-01-02", date); err != nil {
		return 0, fmt.Errorf("lake: drop before %q: %w", date, err)
	}
	n := 0
	err := l.update(ctx, stream, func(next *Manifest) (bool, error) {
		now := time.Now().UTC()
		n = 0
		next.Files = slices.DeleteFunc(next.Files, func(f FileInfo) bool {
			if f.Date < date {
				next.Garbage = append(next.Garbage, Removed{Key: f.Key, Removed: now})
				n++
				return true
			}
			return false
		})
		return n > 0, nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Sweep deletes the removed files whose grace period is over and commits
// a manifest without them; it returns how many it deleted.
func (l *Lake) Sweep(ctx context.Context, stream string) (int, error) {
	n := 0
	err := l.update(ctx, stream, func(next *Manifest) (bool, error) {
		n = 0
		cut := time.Now().Add(-l.grace)
		var keep []Removed
		for _, g := range next.Garbage {
			if g.Removed.After(cut) {
				keep = append(keep, g)
				continue
			}
			if err := l.st.Delete(ctx, g.Key); err != nil {
				return false, fmt.Errorf("lake: sweep %s: %w", stream, err)
			}
			n++
		}
		next.Garbage = keep
		return n > 0, nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
