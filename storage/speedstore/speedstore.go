// Package speedstore is the speed layer's state in Redis: per view, per
// arrival epoch, per window and group, the numeric slots of the view's
// measures — committed together with the consumer's position in one Lua
// script, so a redelivered micro-batch or a second writer can never count an
// event twice.
//
// Layout (ns = namespace):
//
//	{ns}:v:{view}:{epoch}:{window}  hash   field "{group}\x1e{slot}" → value,
//	                                        "{group}\x1eq{k}:{bucket}" → count (quantile sketch k),
//	                                        "{group}\x1eh{k}" → 1 (count_distinct sketch k exists)
//	{ns}:v:{view}:{epoch}:{window}:h{k}:{group}  HyperLogLog (PFADD) of sketch k
//	{ns}:v:{view}:idx               zset   member "{epoch}:{window}", score epoch
//	{ns}:pos:{stream}               hash   seq, wm (max event time), owner
//	{ns}:lease:{stream}             string: the writer lease (owner, with a TTL)
//	{ns}:commits:{stream}           channel: the new seq after every commit
package speedstore

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
)

// Store is the Redis speed store. It is safe for concurrent use by many
// goroutines and processes. Correctness never depends on there being a
// single writer per stream: every Commit is fenced by the stream's position
// (compare-and-set); the writer lease (Lease) only keeps a second speed
// process idle. Keys are touched from scripts without being declared, so
// the store needs a standalone Redis, not Redis Cluster.
type Store struct {
	rdb redis.UniversalClient
	ns  string
}

// New returns a store over a Redis client; every key starts with namespace.
func New(rdb redis.UniversalClient, namespace string) *Store {
	return &Store{rdb: rdb, ns: namespace}
}

// Position is what the speed layer commits with its state.
type Position struct {
	Seq       uint64 // last stream sequence folded in
	Watermark int64  // largest event time seen, unix ms
	Owner     string // the writer that committed it (informational)
}

func (s *Store) posKey(stream string) string   { return s.ns + ":pos:" + stream }
func (s *Store) idxKey(view string) string     { return s.ns + ":v:" + view + ":idx" }
func (s *Store) cellPrefix(view string) string { return s.ns + ":v:" + view + ":" }

// CommitChannel is the Redis channel announcing a stream's commits.
func (s *Store) CommitChannel(stream string) string { return s.ns + ":commits:" + stream }

// Position returns a stream's committed position; found is false when there
// is none (a fresh start, a Reset, or a Redis that lost its data): the caller
// then rebuilds. The position is the one Commit last wrote, never a partial
// one. Safe for concurrent use.
func (s *Store) Position(ctx context.Context, stream string) (Position, bool, error) {
	m, err := s.rdb.HGetAll(ctx, s.posKey(stream)).Result()
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
	return Position{Seq: seq, Watermark: wm, Owner: m["owner"]}, true, nil
}

// The commit script. KEYS[1] = position hash, KEYS[2] = commit channel.
// ARGV[1..4] = prevSeq, next seq, next watermark, next owner; then blocks of
// one cell hash each: key, index key, index member, epoch (score), nf,
// followed by nf triples field, op, value. Ops: i = HINCRBY, f =
// HINCRBYFLOAT, n = keep the min, x = keep the max, e = presence marker,
// p = PFADD value to the HyperLogLog key named by field.
// The compare-and-set runs first; after it the ops cannot fail (every value
// is a well-formed number), so the script is all or nothing. Lua reads ARGV
// by index, so a commit of any size (hundreds of thousands of arguments) is
// one call and never hits Lua's unpack limit.
var commitScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'seq')
local curn = 0
if cur then curn = tonumber(cur) end
if curn ~= tonumber(ARGV[1]) then return 0 end
local i = 5
local n = #ARGV
while i <= n do
  local key, idx, member, score, nf = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], tonumber(ARGV[i+4])
  redis.call('ZADD', idx, score, member)
  i = i + 5
  for j = 1, nf do
    local f, op, v = ARGV[i], ARGV[i+1], ARGV[i+2]
    if op == 'i' then
      redis.call('HINCRBY', key, f, v)
    elseif op == 'f' then
      redis.call('HINCRBYFLOAT', key, f, v)
    elseif op == 'e' then
      redis.call('HSETNX', key, f, v)
    elseif op == 'p' then
      redis.call('PFADD', f, v)
    else
      local old = redis.call('HGET', key, f)
      if (not old) or (op == 'n' and tonumber(v) < tonumber(old)) or (op == 'x' and tonumber(v) > tonumber(old)) then
        redis.call('HSET', key, f, v)
      end
    end
    i = i + 3
  end
end
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'wm', ARGV[3], 'owner', ARGV[4])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
`)

// fieldSep separates the group from the slot number in a cell hash field.
const fieldSep = 0x1e

// markerSlot is the field suffix that only records a group's presence in a
// cell whose every slot is still at its identity (e.g. min(x) over nulls):
// the group still exists, as it does in the batch layer's GROUP BY.
const markerSlot = "e"

// Commit applies the deltas (all views of ONE stream) and moves the stream's
// position from prevSeq to next.Seq, atomically, in one Lua script
// (EVALSHA, falling back to EVAL when Redis does not know the script).
//
// Contract:
//   - Compare-and-set: if the stored sequence is not prevSeq (an absent
//     position counts as 0) nothing at all is written and the error
//     matches ErrConflict. Callers drop their in-memory batch, re-read
//     Position and continue from there.
//   - Idempotent by position: committing the same micro-batch twice (a
//     redelivery, same prevSeq) is refused by the compare-and-set, so an
//     event is never counted twice. A writer whose Redis lost its data
//     (prevSeq > 0, position absent) is refused too and must rebuild.
//   - All or nothing: cells, the per-view index and the position change
//     together or not at all; readers never see half a commit.
//   - Concurrency: safe to call from many goroutines and processes; the
//     position fences them, so at most one of two commits from the same
//     prevSeq succeeds.
//   - Add slots use HINCRBY (Int slots) or HINCRBYFLOAT; min/max slots are
//     compare-and-set and empty (NaN) values are skipped. Floats are sent
//     with strconv 'g' -1 so they round-trip. HINCRBYFLOAT keeps 17 decimal
//     places: sums whose magnitude is below ~1e-10 lose relative precision.
//   - Empty deltas just move the position (and the watermark and owner).
func (s *Store) Commit(ctx context.Context, stream string, prevSeq uint64, next Position, deltas []*logic.Delta) error {
	n := 4
	for _, d := range deltas {
		n += d.Len() * (5 + 3*d.View.NumSlots)
		for _, c := range d.Cells {
			for _, set := range c.Elems {
				n += 3 * (len(set) + 1)
			}
			for _, q := range c.Buckets {
				n += 3 * len(q)
			}
		}
	}
	args := make([]any, 0, n)
	args = append(args, strconv.FormatUint(prevSeq, 10), strconv.FormatUint(next.Seq, 10), strconv.FormatInt(next.Watermark, 10), next.Owner)
	var field []byte
	for _, d := range deltas {
		args, field = s.appendDelta(args, field, d)
	}
	ok, err := commitScript.Run(ctx, s.rdb, []string{s.posKey(stream), s.CommitChannel(stream)}, args...).Int()
	if err != nil {
		return fmt.Errorf("speedstore: commit %s: %w", stream, err)
	}
	if ok != 1 {
		return fmt.Errorf("%w: stream %s expected seq %d", ErrConflict, stream, prevSeq)
	}
	return nil
}

// appendDelta appends the script arguments of one view's delta.
func (s *Store) appendDelta(args []any, field []byte, d *logic.Delta) ([]any, []byte) {
	v := d.View
	slots := v.Slots()
	firstAdd := -1
	for i, sl := range slots {
		if sl.Op == logic.OpAdd {
			firstAdd = i
			break
		}
	}
	idx := s.idxKey(v.Name)
	prefix := s.cellPrefix(v.Name)
	// One hash per (epoch, window): gather its groups.
	type ek struct{ e, w int64 }
	byKey := map[ek][]string{}
	for k := range d.Cells {
		byKey[ek{k.Epoch, k.Window}] = append(byKey[ek{k.Epoch, k.Window}], k.Group)
	}
	for k, groups := range byKey {
		epoch := strconv.FormatInt(k.e, 10)
		member := epoch + ":" + strconv.FormatInt(k.w, 10)
		nfPos := len(args) + 4
		args = append(args, prefix+member, idx, member, epoch, 0)
		nf := 0
		for _, g := range groups {
			c := d.Cells[logic.CellKey{Epoch: k.e, Window: k.w, Group: g}]
			st := c.Num
			wrote := false
			for i, set := range c.Elems {
				if len(set) == 0 {
					continue
				}
				sk := "h" + strconv.Itoa(i)
				field = append(append(append(field[:0], g...), fieldSep), sk...)
				args = append(args, string(field), "e", "1")
				hk := prefix + member + ":" + sk + ":" + g
				for e := range set {
					args = append(args, hk, "p", e)
				}
				nf += 1 + len(set)
				wrote = true
			}
			for i, q := range c.Buckets {
				for b, cnt := range q {
					field = append(append(append(append(append(field[:0], g...), fieldSep), 'q'), strconv.Itoa(i)...), ':')
					field = strconv.AppendInt(field, int64(b), 10)
					args = append(args, string(field), "i", strconv.FormatInt(int64(cnt), 10))
					nf++
					wrote = true
				}
			}
			for i, sl := range slots {
				x := st[i]
				var op, val string
				switch {
				case sl.Op == logic.OpAdd && x == 0 && (wrote || !(i == firstAdd && allIdentity(slots, st, i+1))):
					continue // adding 0 changes nothing (unless it is the group's only trace)
				case sl.Op != logic.OpAdd && math.IsNaN(x):
					continue // an empty min/max
				case sl.Op == logic.OpAdd && sl.Int:
					op, val = "i", strconv.FormatInt(int64(x), 10)
				case sl.Op == logic.OpAdd:
					op, val = "f", strconv.FormatFloat(x, 'g', -1, 64)
				case sl.Op == logic.OpMin:
					op, val = "n", strconv.FormatFloat(x, 'g', -1, 64)
				default:
					op, val = "x", strconv.FormatFloat(x, 'g', -1, 64)
				}
				field = append(append(append(field[:0], g...), fieldSep), strconv.Itoa(i)...)
				args = append(args, string(field), op, val)
				nf++
				wrote = true
			}
			if !wrote {
				field = append(append(append(field[:0], g...), fieldSep), markerSlot...)
				args = append(args, string(field), "e", "1")
				nf++
			}
		}
		args[nfPos] = nf
	}
	return args, field
}

// allIdentity reports whether st[from:] holds only identities.
func allIdentity(slots []logic.Slot, st []float64, from int) bool {
	for i := from; i < len(slots); i++ {
		if slots[i].Op == logic.OpAdd && st[i] != 0 || slots[i].Op != logic.OpAdd && !math.IsNaN(st[i]) {
			return false
		}
	}
	return true
}

// Cell is one speed cell: a view's state for one arrival epoch, window and group.
type Cell struct {
	Epoch, Window int64
	Group         string
	State         logic.State // identity where nothing was stored; no exact values
}

// readChunk bounds the HGETALLs of one pipeline round trip.
const readChunk = 1000

// Read returns a view's cells with window start in [fromMs, toMs) and epoch
// >= minEpoch, in no particular order; each (epoch, window, group) appears
// once. It finds the cell hashes through the view's index (never SCAN or
// KEYS) and reads them with pipelined HGETALLs. Each hash is read
// atomically, so a concurrent commit is seen whole per (epoch, window); a
// Read racing several commits may see some of them only. The returned
// states are owned by the caller. Safe for concurrent use.
func (s *Store) Read(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64) ([]Cell, error) {
	members, err := s.rdb.ZRangeByScore(ctx, s.idxKey(v.Name), &redis.ZRangeBy{Min: strconv.FormatInt(minEpoch, 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("speedstore: read %s: %w", v.Name, err)
	}
	type ek struct{ e, w int64 }
	var keys []ek
	for _, m := range members {
		e, w, ok := parseMember(m)
		if ok && w >= fromMs && w < toMs && e >= minEpoch {
			keys = append(keys, ek{e, w})
		}
	}
	prefix := s.cellPrefix(v.Name)
	var out []Cell
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), readChunk)]
		keys = keys[len(chunk):]
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.MapStringStringCmd, len(chunk))
		for i, k := range chunk {
			cmds[i] = pipe.HGetAll(ctx, prefix+strconv.FormatInt(k.e, 10)+":"+strconv.FormatInt(k.w, 10))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, fmt.Errorf("speedstore: read %s: %w", v.Name, err)
		}
		type hllRef struct {
			st *logic.State
			k  int
		}
		var hlls []hllRef
		var hllKeys []string
		for i, k := range chunk {
			member := strconv.FormatInt(k.e, 10) + ":" + strconv.FormatInt(k.w, 10)
			byGroup := map[string]*logic.State{}
			for f, val := range cmds[i].Val() {
				sep := strings.LastIndexByte(f, fieldSep)
				if sep < 0 {
					continue
				}
				g, slot := f[:sep], f[sep+1:]
				st, ok := byGroup[g]
				if !ok {
					ns := v.NewState()
					st = &ns
					byGroup[g] = st
				}
				if err := s.readField(v, st, slot, val); err != nil {
					return nil, fmt.Errorf("speedstore: read %s: %s in %s: %w", v.Name, val, f, err)
				}
				if k, ok := sketchIndex(slot, 'h', len(st.HLL)); ok {
					hlls = append(hlls, hllRef{st, k})
					hllKeys = append(hllKeys, prefix+member+":"+slot+":"+g)
				}
			}
			for g, st := range byGroup {
				out = append(out, Cell{Epoch: k.e, Window: k.w, Group: g, State: *st})
			}
		}
		if len(hllKeys) > 0 {
			vals, err := s.rdb.MGet(ctx, hllKeys...).Result()
			if err != nil {
				return nil, fmt.Errorf("speedstore: read %s: %w", v.Name, err)
			}
			for i, x := range vals {
				str, ok := x.(string)
				if !ok {
					continue // expired between the two reads: the cell goes with it
				}
				h, err := logic.DecodeRedisHLL([]byte(str))
				if err != nil {
					return nil, fmt.Errorf("speedstore: read %s: %s: %w", v.Name, hllKeys[i], err)
				}
				hlls[i].st.HLL[hlls[i].k] = h
			}
		}
	}
	return out, nil
}

// readField stores one hash field of a cell into st: a numeric slot, a
// quantile bucket count, or nothing (presence markers, distinct sketches
// read separately, slots of an older view definition).
func (s *Store) readField(v *logic.View, st *logic.State, slot, val string) error {
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
		return nil
	}
	i, err := strconv.Atoi(slot)
	if err != nil || i < 0 || i >= v.NumSlots {
		return nil
	}
	x, err := strconv.ParseFloat(val, 64)
	if err != nil {
		return err
	}
	st.Num[i] = x
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

// Expire drops a view's cells of arrival epochs < beforeEpoch (absorbed by
// a batch version) and their index entries; epochs >= beforeEpoch are left
// untouched. It finds them through the index. Each chunk deletes its hashes
// and removes exactly their index members in one MULTI, so the index never
// points at a deleted hash that a concurrent commit recreated. Idempotent;
// safe to run while the speed layer commits (it only commits current
// epochs, which are above any batch cutoff).
func (s *Store) Expire(ctx context.Context, view string, beforeEpoch int64) error {
	idx := s.idxKey(view)
	max := "(" + strconv.FormatInt(beforeEpoch, 10)
	if beforeEpoch == math.MaxInt64 {
		max = "+inf"
	}
	members, err := s.rdb.ZRangeByScore(ctx, idx, &redis.ZRangeBy{Min: "-inf", Max: max}).Result()
	if err != nil {
		return fmt.Errorf("speedstore: expire %s: %w", view, err)
	}
	prefix := s.cellPrefix(view)
	for len(members) > 0 {
		chunk := members[:min(len(members), expireChunk)]
		members = members[len(chunk):]
		args := make([]any, 0, 2+len(chunk))
		args = append(args, prefix, idx)
		for _, m := range chunk {
			args = append(args, m)
		}
		if err := expireScript.Run(ctx, s.rdb, nil, args...).Err(); err != nil {
			return fmt.Errorf("speedstore: expire %s: %w", view, err)
		}
	}
	return nil
}

// The expire script: ARGV[1] = cell key prefix, ARGV[2] = index key, then
// index members. Per member it deletes the cell hash, the HyperLogLogs its
// "h{k}" fields name, and the index member — all in one atomic step, so the
// index never points at a deleted hash.
var expireScript = redis.NewScript(`
local prefix, idx = ARGV[1], ARGV[2]
for i = 3, #ARGV do
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

// Reset drops a stream's position and then every cell and index of the
// given views, for a rebuild from the log. The position goes first, so a
// Reset cut short leaves the position absent and the next start resets
// again; a writer still running on the old state is refused with
// ErrConflict from then on. Reset must come from the stream's single
// rebuilding writer (the lease holder): a commit from prevSeq 0 racing a
// Reset could be half deleted.
func (s *Store) Reset(ctx context.Context, stream string, views []string) error {
	if err := s.rdb.Del(ctx, s.posKey(stream)).Err(); err != nil {
		return fmt.Errorf("speedstore: reset %s: %w", stream, err)
	}
	for _, v := range views {
		if err := s.Expire(ctx, v, math.MaxInt64); err != nil {
			return fmt.Errorf("speedstore: reset %s: %w", stream, err)
		}
		if err := s.rdb.Del(ctx, s.idxKey(v)).Err(); err != nil {
			return fmt.Errorf("speedstore: reset %s: %w", v, err)
		}
	}
	return nil
}

// Ping checks the connection.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

var leaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

// Lease takes or renews the writer lease of a stream for ttl. It returns
// false while another owner holds it. The lease keeps a second speed process
// in standby; correctness does not depend on it (the position's
// compare-and-set does), only efficiency.
func (s *Store) Lease(ctx context.Context, stream, owner string, ttl time.Duration) (bool, error) {
	ok, err := leaseScript.Run(ctx, s.rdb, []string{s.ns + ":lease:" + stream}, owner, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("speedstore: lease %s: %w", stream, err)
	}
	return ok == 1, nil
}

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// ReleaseLease gives the lease up if owner holds it.
func (s *Store) ReleaseLease(ctx context.Context, stream, owner string) error {
	if err := releaseScript.Run(ctx, s.rdb, []string{s.ns + ":lease:" + stream}, owner).Err(); err != nil {
		return fmt.Errorf("speedstore: release %s: %w", stream, err)
	}
	return nil
}
