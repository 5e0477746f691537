package eventlog

import (
	"hash/maphash"
)

// idWindow remembers the event ids stored in a stream's log during the
// last dedup window, with when each was stored (unix ms). An id is kept as
// a 128-bit hash (two independent maphash seeds, random per process: the
// window is rebuilt from the log at start), so two different ids collide
// with a probability of about n²/2¹²⁹ — 10⁻²⁵ for ten million ids.
//
// It is built for tens of millions of ids: an entry is 24 bytes in a map
// without pointers, which the garbage collector never scans, and the maps
// are generations of a quarter window each, so expired ids go a whole map
// at a time. Not safe for concurrent use.
type idWindow struct {
	window int64 // ms
	gen    int64 // ms covered by one generation
	seeds  [2]maphash.Seed
	gens   []idGen // oldest first
}

type idKey [2]uint64

type idGen struct {
	start int64 // stored times in [start, start+gen)
	ids   map[idKey]int64
}

func newIDWindow(windowMs int64) *idWindow {
	windowMs = max(windowMs, 4)
	return &idWindow{window: windowMs, gen: windowMs / 4, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
}

func (w *idWindow) key(id []byte) idKey {
	return idKey{maphash.Bytes(w.seeds[0], id), maphash.Bytes(w.seeds[1], id)}
}

// seen reports whether k was stored less than the window before now.
func (w *idWindow) seen(k idKey, now int64) bool {
	for i := len(w.gens) - 1; i >= 0; i-- {
		g := &w.gens[i]
		if g.start+w.gen <= now-w.window {
			break // this and older generations hold only expired ids
		}
		if t, ok := g.ids[k]; ok && t > now-w.window {
			return true
		}
	}
	return false
}

// add records k as stored at t.
func (w *idWindow) add(k idKey, t int64) {
	start := t - t%w.gen
	n := len(w.gens)
	switch {
	case n > 0 && w.gens[n-1].start == start:
	case n > 0 && w.gens[n-1].start > start:
		// An older time (a rebuild reading an earlier record after a later
		// one, or a clock step back): the newest generation keeps it.
		start = w.gens[n-1].start
	default:
		w.gens = append(w.gens, idGen{start: start, ids: make(map[idKey]int64)})
		n++
	}
	w.gens[n-1].ids[k] = t
}

// remove forgets k (an id recorded by add for a write that then failed).
func (w *idWindow) remove(k idKey) {
	for i := range w.gens {
		delete(w.gens[i].ids, k)
	}
}

// expire drops the generations that hold only ids stored a window or more
// before now.
func (w *idWindow) expire(now int64) {
	i := 0
	for i < len(w.gens) && w.gens[i].start+w.gen <= now-w.window {
		i++
	}
	if i > 0 {
		clear(w.gens[:i])
		w.gens = append(w.gens[:0], w.gens[i:]...)
	}
}

// len is the number of ids held (expired ones not yet dropped included).
func (w *idWindow) len() int {
	n := 0
	for _, g := range w.gens {
		n += len(g.ids)
	}
	return n
}
