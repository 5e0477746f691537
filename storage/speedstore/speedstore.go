// Package speedstore is the speed layer's state in Redis: per view, per
// arrival epoch, per window and group, the numeric slots of the view's
// measures — committed together with the consumer's position in one Lua
// script, so a redelivered micro-batch or a second writer can never count an
// event twice.
//
// Layout (ns = namespace; {key} = a view's state key, "{view}@{definition}"
// (logic.View.StateKey), so that state written under one definition of a
// view is never read under another; {s.p} = the hash tag of partition p of
// stream s, Tag):
//
//	{ns}:v:{s.p}:{key}:{epoch}:{window}  hash   field "{group}\x1es" → the numeric slots, packed,
//	                                       "{group}\x1eq{k}:{bucket}" → count (quantile sketch k),
//	                                       "{group}\x1eh{k}" → 1 (count_distinct sketch k exists)
//	                                       "{group}\x1ep{k}" → pick k (last / first), logic.AppendPick
//	{ns}:v:{s.p}:{key}:{epoch}:{window}:h{k}:{group}  HyperLogLog (PFADD) of sketch k
//	{ns}:v:{s.p}:{key}:idx         zset   member "{epoch}:{window}", score epoch
//	{ns}:pos:{s.p}                 hash   seq, wm (max event time), la (last arrival),
//	                                      owner, rt (a fresh position's target,
//	                                      Position.Target); per view (ViewPosition):
//	                                      v:{key} (joined through), f:{key} (first
//	                                      epoch), b:{key} and bs:{key} (a rebuild's
//	                                      last and first record)
//	{ns}:lease:{s.p}:{role}        string: the partition's lease of a role (storage/leases)
//	{ns}:commits:{s.p}             channel: the new seq after every commit
//
// Every key of a partition carries its hash tag, so in Redis Cluster a
// partition lives in one slot: each script declares the partition's
// position (or index) key as KEYS[1], which routes it to the slot's
// master, and touches only keys of that slot. A read merges the cells of
// a view's partitions (ReadEach).
//
// A group's numeric slots (View.Slots) are one field, "s": 8 bytes per
// slot, the float64's IEEE-754 bits little endian, in slot order (Lua's
// struct format "<d…d"), so min/max keep every bit and NaN (empty)
// survives. The commit script reads a hash's groups with one HMGET, merges
// each packed value with the new one in Lua (logic's slot rules, in
// float64) and writes them back with one HSET: two calls per cell hash
// whatever its groups and slots. The field also marks the group's presence
// when every slot is at its identity.
package speedstore

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
)

// Store is the Redis speed store. It is safe for concurrent use by many
// goroutines and processes. Correctness never depends on there being a
// single writer per partition: every Commit is fenced by the partition's
// position (compare-and-set); the leases that share partitions among
// processes (storage/leases) only keep the others off it. It works on one
// Redis server and on Redis Cluster alike.
type Store struct {
	rdb     redis.UniversalClient
	ns      string
	sharded bool     // commit notices by SPUBLISH (ShardedNotices)
	mats    matCache // the entities' materialisation records, for commits (entity.go)
}

// New returns a store over a Redis client; every key starts with namespace.
// Over a *redis.ClusterClient the store announces commits on sharded
// channels (ShardedNotices).
func New(rdb redis.UniversalClient, namespace string) *Store {
	_, sharded := rdb.(*redis.ClusterClient)
	return &Store{rdb: rdb, ns: namespace, sharded: sharded}
}

// ShardedNotices reports how the store announces commits on
// CommitChannel: true (over a Redis Cluster client) by SPUBLISH, which
// stays on the nodes of the channel's slot, so subscribers use SSUBSCRIBE;
// false by PUBLISH, so they use SUBSCRIBE or PSUBSCRIBE. Sharded channels
// are what Redis Cluster needs to scale; one server takes PUBLISH, which
// every Redis-protocol server has (the embedded development server has no
// sharded pub/sub).
func (s *Store) ShardedNotices() bool { return s.sharded }

// Position is what the speed layer commits with its state.
type Position struct {
	Seq       uint64 // last stream sequence folded in
	Watermark int64  // largest event time seen, unix ms
	Owner     string // the writer that committed it (informational)
	// Target is, for a position created fresh (Commit with prevSeq 0) over
	// a log that held records from its start on, the last of them then:
	// the state misses events until Seq reaches it (0: nothing to catch up).
	Target uint64
	// LastArrival is the arrival (unix ms) of the last record folded: with
	// Watermark, the partition's part of its stream's watermark
	// (logic.StreamMark). A position stored before it was kept reads 0.
	LastArrival int64
	// Views holds, by state key, each view's part of the position (read
	// only: Commit and CommitRebuild maintain it).
	Views map[string]ViewPosition
}

// ViewPosition is where one view's cells stand on its stream. A view's
// cells hold exactly the events of the records that arrived in epochs
// from From on, up to Joined (when joined) or Rebuilt (while rebuilding).
// A view whose Joined equals the stream's Seq has seen every commit: its
// cells are complete up to the stream's position.
type ViewPosition struct {
	Joined       uint64 // last sequence of the stream's commits the view took part in
	JoinedOK     bool   // Joined is set: the view takes part in the stream's commits
	From         int64  // arrival epoch (unix ms) the view's cells start at
	Rebuilt      uint64 // while rebuilding: the last record folded by the rebuild (0: none yet)
	RebuildFirst uint64 // while rebuilding: the first record it folded (0: none yet)
	Rebuilding   bool   // a rebuild has begun and not joined yet
}

// Tag is the hash tag of partition p of a stream, "{<stream>.<p>}": every
// key of the partition (cells, index, position, lease) carries it, so in
// Redis Cluster they live in one slot and one script commits them.
func Tag(stream string, p int) string { return "{" + stream + "." + strconv.Itoa(p) + "}" }

func (s *Store) posKey(stream string, p int) string { return s.ns + ":pos:" + Tag(stream, p) }
func (s *Store) idxKey(stream string, p int, key string) string {
	return s.ns + ":v:" + Tag(stream, p) + ":" + key + ":idx"
}
func (s *Store) cellPrefix(stream string, p int, key string) string {
	return s.ns + ":v:" + Tag(stream, p) + ":" + key + ":"
}

// CommitChannel is the Redis channel announcing the commits of partition
// p of a stream.
func (s *Store) CommitChannel(stream string, p int) string {
	return s.ns + ":commits:" + Tag(stream, p)
}

// Position returns partition part's committed position; found is false
// when there is none (a fresh start, a Reset, or a Redis that lost its
// data): the caller then rebuilds. The position is the one Commit last wrote, never a partial
// one. Safe for concurrent use.
func (s *Store) Position(ctx context.Context, stream string, part int) (Position, bool, error) {
	m, err := s.rdb.HGetAll(ctx, s.posKey(stream, part)).Result()
	if err != nil {
		return Position{}, false, fmt.Errorf("speedstore: position %s: %w", stream, err)
	}
	if len(m) == 0 {
		return Position{}, false, nil
	}
	seq, err := strconv.ParseUint(m["seq"], 10, 64)
	if err != nil {
		return Position{}, false, fmt.Errorf("speedstore: position %s: bad seq %q", stream, m["seq"])
	}
	wm, _ := strconv.ParseInt(m["wm"], 10, 64)
	p := Position{Seq: seq, Watermark: wm, Owner: m["owner"], Views: map[string]ViewPosition{}}
	p.Target, _ = strconv.ParseUint(m["rt"], 10, 64)
	p.LastArrival, _ = strconv.ParseInt(m["la"], 10, 64)
	for f, val := range m {
		kind, key, ok := strings.Cut(f, ":")
		if !ok {
			continue
		}
		vp := p.Views[key]
		n, _ := strconv.ParseInt(val, 10, 64)
		switch kind {
		case "v":
			vp.Joined, vp.JoinedOK = uint64(n), true
		case "f":
			vp.From = n
		case "b":
			vp.Rebuilt, vp.Rebuilding = uint64(n), true
		case "bs":
			vp.RebuildFirst = uint64(n)
		default:
			continue
		}
		p.Views[key] = vp
	}
	return p, true, nil
}

// Cell is one speed cell: a view's state for one arrival epoch, window and group.
type Cell struct {
	Epoch, Window int64
	Group         string
	State         logic.State // identity where nothing was stored; no exact values
}

// Bounds of one round trip of Read, so that a read of many or large cell
// hashes never holds Redis (single-threaded: the speed layer's commits and
// leases wait behind it) or the process's memory for long: the sizes of
// up to readHashes hashes are asked in one pipeline (HLEN), then hashes
// are fetched whole (HGETALL) in pipelines of at most readFields fields
// together, and a hash of more fields is scanned (HSCAN) scanCount fields
// at a time. Distinct sketches are fetched mgetKeys at a time, by
// partition (one MGET stays in one slot of a Redis Cluster).
var (
	readHashes = 1000
	readFields = 16384
	scanCount  = 4096
	mgetKeys   = 1000
)

// Read returns a view's cells with window start in [fromMs, toMs) and epoch
// >= minEpoch, in no particular order; each (epoch, window, group) appears
// once, the merge (logic's rules, as logic.View.MergeState) of its cells
// in every partition of the view's stream. It finds the cell hashes
// through the view's index in each partition (never SCAN or KEYS) and
// reads them in bounded round trips (readHashes, readFields, scanCount,
// mgetKeys). A hash read whole (HGETALL) is seen atomically, so a
// concurrent commit is seen whole per (epoch, window) and partition; a
// large hash is scanned in parts, and a Read racing commits may see some
// of them only, per part, as it may per hash and per partition. The
// returned states are owned by the caller. Safe for concurrent use.
func (s *Store) Read(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64) ([]Cell, error) {
	var out []Cell
	err := s.ReadEach(ctx, v, fromMs, toMs, minEpoch, func(c Cell) error {
		out = append(out, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReadEach is Read calling fn with each cell as soon as its first field is
// read (in whichever partition), so a caller can stop a read early: an
// error from fn stops it and is returned as is; once ctx ends, it stops
// before the next round trip with ctx's error, so an abandoned read costs
// Redis at most one more round trip. A cell's state lives in its slices,
// which the read goes on filling in place (later fields of its group, the
// same cell's fields in other partitions, its distinct sketches): fn may
// keep the cell, and its state is whole once ReadEach returns nil. The
// partitions' hashes of one (epoch, window) are read in the same round
// trips, so the read holds the groups of at most readHashes hashes apart
// from what fn keeps.
func (s *Store) ReadEach(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64, fn func(Cell) error) error {
	n := v.Stream.Partitions
	r := &cellReader{s: s, v: v, fn: fn, prefixes: make([]string, n), hlls: make([][]hllRef, n), hllKeys: make([][]string, n)}
	for p := range n {
		r.prefixes[p] = s.cellPrefix(v.Stream.Name, p, v.StateKey())
	}
	err := r.read(ctx, fromMs, toMs, minEpoch)
	if err != nil && !r.stopped {
		return fmt.Errorf("speedstore: read %s: %w", v.Name, err)
	}
	return err
}

// cellReader is one ReadEach.
type cellReader struct {
	s        *Store
	v        *logic.View
	prefixes []string // by partition: the view's cell key prefix
	fn       func(Cell) error
	stopped  bool // fn returned an error
	// groups holds, for the (epoch, window)s being read, their cells by
	// group, where every partition's fields of the cell go.
	groups map[cellKey]map[string]*logic.State
	// By partition: the distinct sketches still to fetch, and where they go.
	hlls    [][]hllRef
	hllKeys [][]string
}

type hllRef struct {
	st *logic.State
	k  int
}

type cellKey struct{ e, w int64 }

func (k cellKey) member() string {
	return strconv.FormatInt(k.e, 10) + ":" + strconv.FormatInt(k.w, 10)
}

// hashRef is the cell hash of an (epoch, window) in partition p.
type hashRef struct {
	k cellKey
	p int
}

func (r *cellReader) key(h hashRef) string { return r.prefixes[h.p] + h.k.member() }

func (r *cellReader) read(ctx context.Context, fromMs, toMs, minEpoch int64) error {
	pipe := r.s.rdb.Pipeline()
	idx := make([]*redis.StringSliceCmd, len(r.prefixes))
	for p := range idx {
		idx[p] = pipe.ZRangeByScore(ctx, r.s.idxKey(r.v.Stream.Name, p, r.v.StateKey()), &redis.ZRangeBy{Min: strconv.FormatInt(minEpoch, 10), Max: "+inf"})
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	// The (epoch, window)s in range, each with the partitions that hold it.
	parts := map[cellKey][]int{}
	for p, cmd := range idx {
		for _, m := range cmd.Val() {
			e, w, ok := parseMember(m)
			if ok && w >= fromMs && w < toMs && e >= minEpoch {
				parts[cellKey{e, w}] = append(parts[cellKey{e, w}], p)
			}
		}
		idx[p] = nil
	}
	keys := slices.SortedFunc(maps.Keys(parts), func(a, b cellKey) int {
		if c := cmp.Compare(a.e, b.e); c != 0 {
			return c
		}
		return cmp.Compare(a.w, b.w)
	})
	for len(keys) > 0 {
		// A chunk: the (epoch, window)s whose hashes number at most
		// readHashes (at least one (epoch, window), whatever its hashes).
		var chunk []hashRef
		n := 0
		for ; n < len(keys) && (n == 0 || len(chunk)+len(parts[keys[n]]) <= readHashes); n++ {
			for _, p := range parts[keys[n]] {
				chunk = append(chunk, hashRef{keys[n], p})
			}
		}
		keys = keys[n:]
		if err := ctx.Err(); err != nil {
			return err
		}
		pipe := r.s.rdb.Pipeline()
		lens := make([]*redis.IntCmd, len(chunk))
		for i, h := range chunk {
			lens[i] = pipe.HLen(ctx, r.key(h))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		r.groups = make(map[cellKey]map[string]*logic.State, n)
		// Whole hashes, in pipelines of at most readFields fields; larger
		// hashes scanned on their own.
		var batch []hashRef
		fields := 0
		for i, h := range chunk {
			n := int(lens[i].Val())
			switch {
			case n == 0:
				continue // expired since the index was read
			case n > readFields:
				if err := r.scan(ctx, h); err != nil {
					return err
				}
				continue
			case fields+n > readFields:
				if err := r.fetch(ctx, batch); err != nil {
					return err
				}
				batch, fields = batch[:0], 0
			}
			batch = append(batch, h)
			fields += n
		}
		if err := r.fetch(ctx, batch); err != nil {
			return err
		}
	}
	r.groups = nil
	for p := range r.hllKeys {
		if err := r.fetchHLLs(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// cellGroups returns the cells of an (epoch, window) being read, by group.
func (r *cellReader) cellGroups(k cellKey) map[string]*logic.State {
	g := r.groups[k]
	if g == nil {
		g = map[string]*logic.State{}
		r.groups[k] = g
	}
	return g
}

// fetch reads whole hashes in one pipeline.
func (r *cellReader) fetch(ctx context.Context, hashes []hashRef) error {
	if len(hashes) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	pipe := r.s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(hashes))
	for i, h := range hashes {
		cmds[i] = pipe.HGetAll(ctx, r.key(h))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	for i, h := range hashes {
		byGroup := r.cellGroups(h.k)
		for f, val := range cmds[i].Val() {
			if err := r.field(h, byGroup, f, val); err != nil {
				return err
			}
		}
		cmds[i] = nil
		if err := r.hllsDue(ctx); err != nil {
			return err
		}
	}
	return nil
}

// scan reads one large hash scanCount fields per round trip. A field can
// come twice (the hash grew or shrank meanwhile): only its first reading
// counts.
func (r *cellReader) scan(ctx context.Context, h hashRef) error {
	key := r.key(h)
	byGroup := r.cellGroups(h.k)
	seen := map[string]struct{}{}
	var cursor uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		kv, next, err := r.s.rdb.HScan(ctx, key, cursor, "", int64(scanCount)).Result()
		if err != nil {
			return err
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if _, dup := seen[kv[i]]; dup {
				continue
			}
			seen[kv[i]] = struct{}{}
			if err := r.field(h, byGroup, kv[i], kv[i+1]); err != nil {
				return err
			}
		}
		if err := r.hllsDue(ctx); err != nil {
			return err
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// field merges one hash field into its group's state; a group seen for the
// first time (in any partition) is handed to fn.
func (r *cellReader) field(h hashRef, byGroup map[string]*logic.State, f, val string) error {
	sep := strings.LastIndexByte(f, fieldSep)
	if sep < 0 {
		return nil
	}
	g, slot := f[:sep], f[sep+1:]
	st, ok := byGroup[g]
	if !ok {
		ns := r.v.NewState()
		st = &ns
		byGroup[g] = st
		// The cell shares st's slices, which the fields read after this
		// one fill in place.
		if err := r.fn(Cell{Epoch: h.k.e, Window: h.k.w, Group: g, State: ns}); err != nil {
			r.stopped = true
			return err
		}
	}
	if err := r.s.readField(r.v, st, slot, val); err != nil {
		return fmt.Errorf("%s in %s: %w", val, f, err)
	}
	if hk, ok := sketchIndex(slot, 'h', len(st.HLL)); ok {
		r.hlls[h.p] = append(r.hlls[h.p], hllRef{st, hk})
		r.hllKeys[h.p] = append(r.hllKeys[h.p], r.key(h)+":"+slot+":"+g)
	}
	return nil
}

// hllsDue fetches a partition's distinct sketches waiting once there are
// mgetKeys.
func (r *cellReader) hllsDue(ctx context.Context) error {
	for p, keys := range r.hllKeys {
		if len(keys) >= mgetKeys {
			if err := r.fetchHLLs(ctx, p); err != nil {
				return err
			}
		}
	}
	return nil
}

// fetchHLLs reads the distinct sketches waiting in partition p, mgetKeys
// per MGET, and merges each into its cell's (the union of the cell's
// sketches in the partitions read so far).
func (r *cellReader) fetchHLLs(ctx context.Context, p int) error {
	refs, keys := r.hlls[p], r.hllKeys[p]
	for len(keys) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(len(keys), mgetKeys)
		vals, err := r.s.rdb.MGet(ctx, keys[:n]...).Result()
		if err != nil {
			return err
		}
		for i, x := range vals {
			str, ok := x.(string)
			if !ok {
				continue // expired between the two reads: the cell goes with it
			}
			h, err := logic.DecodeRedisHLL([]byte(str))
			if err != nil {
				return fmt.Errorf("%s: %w", keys[i], err)
			}
			// h is new: merge what the cell has into it rather than
			// change a sketch the caller may already hold.
			dst := &refs[i].st.HLL[refs[i].k]
			if *dst != nil {
				h.Merge(*dst)
			}
			*dst = h
		}
		refs, keys = refs[n:], keys[n:]
	}
	r.hlls[p], r.hllKeys[p] = nil, nil
	return nil
}

// readField merges one hash field of a cell into st: the packed numeric
// slots, a quantile bucket count, or nothing (presence markers, distinct
// sketches read separately).
func (s *Store) readField(v *logic.View, st *logic.State, slot, val string) error {
	if slot == packedSlot {
		mergePacked(v.Slots(), st.Num, val)
		return nil
	}
	if k, ok := pickIndex(slot, len(st.Picks)); ok {
		p, err := logic.DecodePick([]byte(val))
		if err != nil {
			return err
		}
		if p.Val.Kind == v.PickType(k) { // another type: not this definition's (ignored, as a packed value of another length)
			logic.MergePick(&st.Picks[k], p, v.PickLast(k))
		}
		return nil
	}
	if k, ok := sketchIndex(slot, 'q', len(st.Q)); ok {
		colon := strings.IndexByte(slot, ':')
		b, err := strconv.ParseInt(slot[colon+1:], 10, 32)
		if err != nil {
			return err
		}
		n, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return err
		}
		if st.Q[k] == nil {
			st.Q[k] = logic.QuantileSketch{}
		}
		st.Q[k][int32(b)] += float64(n)
	}
	return nil
}

// sketchIndex parses a field suffix "{kind}{k}" or "{kind}{k}:..." and
// reports whether k is a sketch index below n.
func sketchIndex(slot string, kind byte, n int) (int, bool) {
	if len(slot) < 2 || slot[0] != kind {
		return 0, false
	}
	end := strings.IndexByte(slot, ':')
	if end < 0 {
		end = len(slot)
	}
	k, err := strconv.Atoi(slot[1:end])
	if err != nil || k < 0 || k >= n || (kind == 'h') != (end == len(slot)) {
		return 0, false
	}
	return k, true
}

// pickIndex parses a field suffix "p{k}" and reports whether k is a pick
// index below n.
func pickIndex(slot string, n int) (int, bool) {
	if len(slot) < 2 || slot[:1] != pickSlot {
		return 0, false
	}
	k, err := strconv.Atoi(slot[1:])
	if err != nil || k < 0 || k >= n {
		return 0, false
	}
	return k, true
}

func parseMember(m string) (e, w int64, ok bool) {
	i := strings.IndexByte(m, ':')
	if i < 0 {
		return 0, 0, false
	}
	e, err1 := strconv.ParseInt(m[:i], 10, 64)
	w, err2 := strconv.ParseInt(m[i+1:], 10, 64)
	return e, w, err1 == nil && err2 == nil
}

// expireChunk bounds the keys deleted per round trip.
const expireChunk = 500

// Expire drops the cells of a view's state key (logic.View.StateKey) of
// arrival epochs < beforeEpoch (absorbed by a batch version) and their
// index entries, in every partition of the stream; epochs >= beforeEpoch
// are left untouched. It finds them through the index. Each chunk deletes
// its hashes and removes exactly their index members in one script (one
// partition: one slot), so the index never points at a deleted hash that
// a concurrent commit recreated. Idempotent;
// safe to run while the speed layer commits (it only commits current
// epochs, which are above any batch cutoff).
func (s *Store) Expire(ctx context.Context, st *logic.Stream, key string, beforeEpoch int64) error {
	for p := range st.Partitions {
		if err := s.expire(ctx, st.Name, p, key, beforeEpoch); err != nil {
			return err
		}
	}
	return nil
}

// expire is Expire of one partition.
func (s *Store) expire(ctx context.Context, stream string, p int, key string, beforeEpoch int64) error {
	idx := s.idxKey(stream, p, key)
	max := "(" + strconv.FormatInt(beforeEpoch, 10)
	if beforeEpoch == math.MaxInt64 {
		max = "+inf"
	}
	members, err := s.rdb.ZRangeByScore(ctx, idx, &redis.ZRangeBy{Min: "-inf", Max: max}).Result()
	if err != nil {
		return fmt.Errorf("speedstore: expire %s: %w", key, err)
	}
	prefix := s.cellPrefix(stream, p, key)
	for len(members) > 0 {
		chunk := members[:min(len(members), expireChunk)]
		members = members[len(chunk):]
		args := make([]any, 0, 1+len(chunk))
		args = append(args, prefix)
		for _, m := range chunk {
			args = append(args, m)
		}
		if err := expireScript.Run(ctx, s.rdb, []string{idx}, args...).Err(); err != nil {
			return fmt.Errorf("speedstore: expire %s: %w", key, err)
		}
	}
	return nil
}

// The expire script: KEYS[1] = index key, ARGV[1] = cell key prefix (of
// the index's partition: one slot), then index members. Per member it
// deletes the cell hash, the HyperLogLogs its "h{k}" fields name, and the
// index member — all in one atomic step, so the index never points at a
// deleted hash.
var expireScript = redis.NewScript(`
local idx, prefix = KEYS[1], ARGV[1]
for i = 2, #ARGV do
  local key = prefix .. ARGV[i]
  for _, f in ipairs(redis.call('HKEYS', key)) do
    local g, k = string.match(f, '^(.*)\30(h%d+)$')
    if g then redis.call('DEL', key .. ':' .. k .. ':' .. g) end
  end
  redis.call('DEL', key)
  redis.call('ZREM', idx, ARGV[i])
end
return 1
`)

// Reset drops partition p's position and then every cell and index of
// the given views (state keys) in it, for a rebuild from the log. The
// position goes first, so a Reset cut short leaves the position absent and the next start resets
// again; a writer still running on the old state is refused with
// ErrConflict from then on. Reset must come from the stream's single
// rebuilding writer (the lease holder): a commit from prevSeq 0 racing a
// Reset could be half deleted.
func (s *Store) Reset(ctx context.Context, stream string, p int, keys []string) error {
	if err := s.rdb.Del(ctx, s.posKey(stream, p)).Err(); err != nil {
		return fmt.Errorf("speedstore: reset %s: %w", stream, err)
	}
	for _, k := range keys {
		if err := s.clear(ctx, stream, p, k); err != nil {
			return fmt.Errorf("speedstore: reset %s: %w", stream, err)
		}
	}
	return nil
}

// clear deletes every cell and the index of a state key in a partition.
func (s *Store) clear(ctx context.Context, stream string, p int, key string) error {
	if err := s.expire(ctx, stream, p, key, math.MaxInt64); err != nil {
		return err
	}
	if err := s.rdb.Del(ctx, s.idxKey(stream, p, key)).Err(); err != nil {
		return fmt.Errorf("speedstore: clear %s: %w", key, err)
	}
	return nil
}

// Ping checks the connection.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }
