package eventlog

import (
	"hash/maphash"
	"math/bits"
)

// idWindow remembers the event ids stored in a stream's log during the
// last dedup window, with when each was stored (unix ms).
//
// An id is kept as 95 bits of two independent maphash values (seeds
// random per process: the window is rebuilt from the log at start), so two
// different ids in the window collide with a probability of about
// n²/2⁹⁶ — 10⁻¹⁴ for fifty million ids.
//
// It is built for tens of millions of ids at hundreds of thousands of
// lookups a second: one open-addressing table of 16-byte slots (linear
// probing, no pointers, so the garbage collector never scans it), where a
// lookup is one probe sequence — usually one cache line — and records the
// id when it is new. A slot whose id expired is reused by the next insert
// along its probe sequence, so in a steady state the table does not grow;
// it is rebuilt, without the expired ids, when it is 80% full (to 60%),
// and shrunk when most of it expired: 20–27 bytes per id in the window.
// It is split in 64 shards that grow on their own, so a rebuild briefly
// holds 1/64 of the ids twice, not all of them.
// Not safe for concurrent use.
type idWindow struct {
	seeds  [2]maphash.Seed
	shards [idShards]idTable // by the key's top bits: each grows on its own, so a rebuild moves 1/64 of the ids
}

const idShards = 64

// idTable is one shard of the window.
type idTable struct {
	window int64    // ms
	slots  []idSlot // nil until the first insert
	used   int      // non-empty slots (live or expired)
	base   int64    // times are stored as ms since base
	check  int64    // when to look for a shrink next
}

// idKey is an id's hash: a (never 0) and the high 32 bits of b.
type idKey struct{ a, b uint64 }

// idSlot holds a key (a == 0: empty) and in b's low 32 bits its time.
type idSlot struct{ a, b uint64 }

const (
	minSlots = 1 << 8
	keyMask  = uint64(0xFFFFFFFF_00000000)
)

func newIDWindow(windowMs int64) *idWindow {
	w := &idWindow{seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}}
	for i := range w.shards {
		w.shards[i].window = max(windowMs, 1)
	}
	return w
}

func (w *idWindow) shard(k idKey) *idTable { return &w.shards[k.a>>58] }

// seenOrAdd reports whether k was stored less than the window before now;
// if not, it records k as stored at now.
func (w *idWindow) seenOrAdd(k idKey, now int64) bool { return w.shard(k).put(k, now, false) }

// add records k as stored at t (or later, if it is recorded later already).
func (w *idWindow) add(k idKey, t int64) { w.shard(k).put(k, t, true) }

func (w *idWindow) remove(k idKey) { w.shard(k).remove(k) }

// expire lets shards shrink once most of their ids expired.
func (w *idWindow) expire(now int64) {
	for i := range w.shards {
		w.shards[i].expire(now)
	}
}

// len is the number of ids stored less than the window before now.
func (w *idWindow) len(now int64) int {
	n := 0
	for i := range w.shards {
		n += w.shards[i].len(now)
	}
	return n
}

// slotCount is the slots of all shards.
func (w *idWindow) slotCount() int {
	n := 0
	for i := range w.shards {
		n += len(w.shards[i].slots)
	}
	return n
}

func (w *idWindow) key(id string) idKey {
	return idKey{maphash.String(w.seeds[0], id) | 1, maphash.String(w.seeds[1], id) & keyMask}
}

// keyBytes is key of an id in bytes (the same key as of the string).
func (w *idWindow) keyBytes(id []byte) idKey {
	return idKey{maphash.Bytes(w.seeds[0], id) | 1, maphash.Bytes(w.seeds[1], id) & keyMask}
}

// home is the first slot of a key's probe sequence: its hash scaled to
// the table's size (any size, not only powers of two).
func (w *idTable) home(a uint64) int {
	hi, _ := bits.Mul64(a<<6, uint64(len(w.slots))) // the top 6 bits chose the shard
	return int(hi)
}

func (w *idTable) next(i int) int {
	if i++; i == len(w.slots) {
		return 0
	}
	return i
}

func (w *idTable) timeOf(s idSlot) int64 { return w.base + int64(uint32(s.b)) }

// live reports whether a slot holds an id stored less than the window
// before now.
func (w *idTable) live(s idSlot, now int64) bool {
	return s.a != 0 && w.timeOf(s) > now-w.window
}

// put finds k; a live match answers true (and, when update, moves its
// time to t if later). Otherwise k is recorded at t, in the first expired
// slot of its probe sequence or the empty one that ends it.
func (w *idTable) put(k idKey, t int64, update bool) bool {
	if w.slots == nil || w.used+1 > len(w.slots)*4/5 || t-w.base >= 1<<32-1 {
		w.rebuild(t)
	}
	if t <= w.base {
		return false // older than the window: nothing to remember
	}
	free := -1
	for i := w.home(k.a); ; i = w.next(i) {
		s := &w.slots[i]
		if s.a == 0 {
			if free < 0 {
				free = i
				w.used++
			}
			w.slots[free] = idSlot{k.a, k.b | uint64(uint32(t-w.base))}
			return false
		}
		if s.a == k.a && s.b&keyMask == k.b {
			if w.live(*s, t) && !update {
				return true
			}
			if w.timeOf(*s) < t {
				s.b = k.b | uint64(uint32(t-w.base))
			}
			return false
		}
		if free < 0 && !w.live(*s, t) {
			free = i
		}
	}
}

func (w *idTable) remove(k idKey) {
	if w.slots == nil {
		return
	}
	for i := w.home(k.a); w.slots[i].a != 0; i = w.next(i) {
		if s := &w.slots[i]; s.a == k.a && s.b&keyMask == k.b {
			s.b = k.b // time base+0: expired
			return
		}
	}
}

// expire lets the table shrink once most of it expired (looked at once a
// window: a scan of the whole table).
func (w *idTable) expire(now int64) {
	if w.slots == nil || now < w.check {
		return
	}
	w.check = now + w.window
	if len(w.slots) > minSlots && w.len(now)*8 < len(w.slots) {
		w.rebuild(now)
	}
}

func (w *idTable) len(now int64) int {
	n := 0
	for _, s := range w.slots {
		if w.live(s, now) {
			n++
		}
	}
	return n
}

// rebuild moves the ids still live at now into a table they fill to 60%
// (it grows again at 80%: between the two, a probe sequence that ends at
// an empty slot is a few slots long), with a new time base.
func (w *idTable) rebuild(now int64) {
	old, oldBase := w.slots, w.base
	live := 0
	if old != nil {
		live = w.len(now)
	}
	size := max(minSlots, live*5/3+1)
	w.slots, w.used, w.base = make([]idSlot, size), 0, now-w.window
	for _, s := range old {
		t := oldBase + int64(uint32(s.b))
		if s.a == 0 || t <= w.base {
			continue
		}
		i := w.home(s.a)
		for w.slots[i].a != 0 {
			i = w.next(i)
		}
		w.slots[i] = idSlot{s.a, s.b&keyMask | uint64(uint32(t-w.base))}
		w.used++
	}
	if w.check == 0 {
		w.check = now + w.window
	}
}
