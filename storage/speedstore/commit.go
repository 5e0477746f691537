package speedstore

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
)

// fieldSep separates the group from the slot suffix in a cell hash field.
const fieldSep = 0x1e

// packedSlot is the field suffix of a group's numeric slots, all packed in
// one value (appendPacked). The field also records the group's presence in
// the cell when every slot is still at its identity (e.g. min(x) over
// nulls): the group still exists, as it does in the batch layer's GROUP BY.
const packedSlot = "s"

// pickSlot starts the field suffix of a group's pick k ("p{k}"): the pick
// of a last or first measure (logic.AppendPick).
const pickSlot = "p"

// Limits of one redis.call argument list in the commit script: Lua's
// unpack refuses about 8000 values, so fields and distinct elements go to
// Redis in chunks below it (the script chunks the index entries itself,
// 2000 pairs per ZADD).
const (
	maxBlockGroups = 1000 // groups per HMGET / HSET (2 arguments each in HSET)
	maxPFAdd       = 1000 // elements per PFADD
)

// A view joins its stream's commits (ViewPosition): the position hash's
// field "v:{state key}" holds the last sequence the view's cells are
// complete through. The main commit applies a view's section only when
// that field equals prevSeq (the view has seen every earlier commit), or
// when the stream's position is absent (a fresh start: every view joins
// from the position's start, "f:{state key}" = ARGV[5]), and moves it to
// the new sequence with the stream's; a view that has not joined yet (it
// is being rebuilt from the log, CommitRebuild) is skipped, its section
// parsed and dropped. Every view of the stream sends a section, an empty
// one too, so a joined view's field keeps step with the position.
//
// The commit script. KEYS[1] = position hash, KEYS[2] = commit channel
// (both of the partition's slot). ARGV[1..7] = prevSeq, next seq, next
// watermark, next owner, the arrival epoch a fresh position starts at, a
// fresh position's target (0: none), next last arrival; then the
// entities' sections (entityLua, entity.go), then one section per view
// (sectionLua). Indexed by Store.sharded (notifying).
var commitScripts = notifying(commitLua)

// notifying returns a script announcing on a channel, as two scripts: [0]
// PUBLISHes, [1] SPUBLISHes (Store.ShardedNotices); the Lua names the
// command "publish".
func notifying(lua string) [2]*redis.Script {
	return [2]*redis.Script{
		redis.NewScript("local publish = 'PUBLISH'\n" + lua),
		redis.NewScript("local publish = 'SPUBLISH'\n" + lua),
	}
}

// script picks the variant of a notifying script the store runs.
func (s *Store) script(v [2]*redis.Script) *redis.Script {
	if s.sharded {
		return v[1]
	}
	return v[0]
}

// sectionLua applies the view sections of ARGV from index i on, each only
// when join(statekey) says the view takes it (it may record the join).
// A section:
//
//	idx, prefix, key, ops, nb      index key, cell key prefix, the view's state
//	                                key, one letter per slot (a = add, n = min,
//	                                x = max), blocks
//	nb × (score, member)            index entries, block order
//	nb × block                      one cell hash each (key = prefix..member):
//	  ng, nx                        groups, extra ops
//	  ng fields, ng packed values   "{group}\x1es" → the slots (appendPacked)
//	  nx × (op, a, b [, b elems])   i = HINCRBY a b, e = HSETNX a b,
//	                                p = PFADD to key a the next b arguments,
//	                                L / F = field a takes the pick b when
//	                                b's key is greater (L, last) or less
//	                                (F, first) than its pick's, or it has none
//
// Per block it reads the groups' packed values with one HMGET, merges each
// with the new one slot by slot (add; min / max skipping NaN, the empty
// value), and writes them back with one HSET; a group new to the hash takes
// the new value as sent. A block of one group tries HSETNX first, so a new
// cell costs one call. An old value of another length is replaced. A pick
// (logic.AppendPick) starts with its key in logic.PickKeySize bytes whose
// byte order is the keys' order: the script compares them byte by byte
// (never with Lua's string comparison, which follows the server's locale). Nothing
// in a section can fail (numbers are well formed, packed values are checked
// for length, no call takes more arguments than unpack allows), so a script
// that passed its compare-and-set is all or nothing. Lua reads ARGV by
// index, so a commit of any size is one call.
const sectionLua = `
local spack, sunpack = struct.pack, struct.unpack
local n = #ARGV
while i <= n do
  local idx, prefix, sk, opstr, nb = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], tonumber(ARGV[i+4])
  i = i + 5
  local live = join(sk)
  local ns = #opstr
  local size = 8 * ns
  local fmt = '<' .. string.rep('d', ns)
  local ops = {}
  for s = 1, ns do ops[s] = string.byte(opstr, s) end
  local pairs0 = i
  local last = i + 2 * nb - 1
  while i <= last do
    local e = math.min(i + 3999, last)
    if live then redis.call('ZADD', idx, unpack(ARGV, i, e)) end
    i = e + 1
  end
  local function later(o, new)
    if #o < 32 then return 1 end
    for k = 1, 32 do
      local x, y = string.byte(o, k), string.byte(new, k)
      if x ~= y then
        if y > x then return 1 end
        return -1
      end
    end
    return 0
  end
  local function merge(o, new)
    if not o or ns == 0 or #o ~= size or #new ~= size then return new end
    local a = {sunpack(fmt, o)}
    local c = {sunpack(fmt, new)}
    for s = 1, ns do
      local op, x, y = ops[s], a[s], c[s]
      if op == 97 then
        a[s] = x + y
      elseif y == y and (x ~= x or (op == 110 and y < x) or (op == 120 and y > x)) then
        a[s] = y
      end
    end
    return spack(fmt, unpack(a, 1, ns))
  end
  for b = 0, nb - 1 do
    local key = prefix .. ARGV[pairs0 + 2 * b + 1]
    local ng, nx = tonumber(ARGV[i]), tonumber(ARGV[i+1])
    i = i + 2
    if not live then
      i = i + 2 * ng
    elseif ng == 1 then
      local f, new = ARGV[i], ARGV[i+1]
      if redis.call('HSETNX', key, f, new) == 0 then
        redis.call('HSET', key, f, merge(redis.call('HGET', key, f), new))
      end
      i = i + 2
    elseif ng > 1 then
      local old = redis.call('HMGET', key, unpack(ARGV, i, i + ng - 1))
      local kv = {}
      for j = 1, ng do
        kv[2 * j - 1] = ARGV[i + j - 1]
        kv[2 * j] = merge(old[j], ARGV[i + ng + j - 1])
      end
      redis.call('HSET', key, unpack(kv))
      i = i + 2 * ng
    end
    for _ = 1, nx do
      local op, a, v = ARGV[i], ARGV[i+1], ARGV[i+2]
      i = i + 3
      if op == 'p' then
        local ne = tonumber(v)
        if live then redis.call('PFADD', a, unpack(ARGV, i, i + ne - 1)) end
        i = i + ne
      elseif not live then
      elseif op == 'i' then
        redis.call('HINCRBY', key, a, v)
      elseif op == 'L' or op == 'F' then
        local o = redis.call('HGET', key, a)
        if not o or later(o, v) == (op == 'L' and 1 or -1) then redis.call('HSET', key, a, v) end
      else
        redis.call('HSETNX', key, a, v)
      end
    end
  end
end
`

const commitLua = `
local cur = redis.call('HGET', KEYS[1], 'seq')
local curn = 0
if cur then curn = tonumber(cur) end
if curn ~= tonumber(ARGV[1]) then return 0 end
local fresh = not cur
local function join(sk)
  if fresh then
    redis.call('HSET', KEYS[1], 'v:' .. sk, ARGV[2], 'f:' .. sk, ARGV[5])
    return true
  end
  if redis.call('HGET', KEYS[1], 'v:' .. sk) == ARGV[1] then
    redis.call('HSET', KEYS[1], 'v:' .. sk, ARGV[2])
    return true
  end
  return false
end
local i = 8
` + entityLua + sectionLua + `
redis.call('HSET', KEYS[1], 'seq', ARGV[2], 'wm', ARGV[3], 'owner', ARGV[4], 'la', ARGV[7])
if fresh and ARGV[6] ~= '0' then redis.call('HSET', KEYS[1], 'rt', ARGV[6]) end
redis.call(publish, KEYS[2], ARGV[2])
return 1
`

// Commit applies the deltas (all views of ONE stream) to partition p and
// moves the partition's position from prevSeq to next (Seq, Watermark,
// LastArrival, Owner), atomically, in one Lua script (EVALSHA, falling back
// to EVAL when Redis does not know the script), and announces next.Seq on
// CommitChannel.
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
//   - A cell's numeric slots travel and are stored as one packed value
//     (IEEE-754 doubles, exact: min/max keep every bit, NaN = empty) and
//     are merged in the script with logic's slot rules in float64, as
//     logic.View.MergeState does: integer slots are exact below 2^53.
//   - Empty deltas just move the position (and the watermark and owner).
//   - Joins: deltas must hold every view of the stream (empty ones too).
//     A view's cells change only when it has joined the stream's commits
//     (ViewPosition.Joined == prevSeq), or when the position is absent:
//     then every view joins, its cells covering arrival epochs from
//     freshFrom on, and the position records next.Target (the log's last
//     record the fresh state has yet to fold). A view not joined
//     (rebuilding, CommitRebuild) is left alone.
func (s *Store) Commit(ctx context.Context, stream string, p int, prevSeq uint64, next Position, freshFrom int64, deltas []*logic.Delta, ents ...*logic.EntityDelta) error {
	var a argBuf
	a.str(strconv.FormatUint(prevSeq, 10))
	a.str(strconv.FormatUint(next.Seq, 10))
	a.str(strconv.FormatInt(next.Watermark, 10))
	a.str(next.Owner)
	a.str(strconv.FormatInt(freshFrom, 10))
	a.str(strconv.FormatUint(next.Target, 10))
	a.str(strconv.FormatInt(next.LastArrival, 10))
	s.appendEntities(ctx, &a, stream, p, ents)
	for _, d := range deltas {
		s.appendDelta(&a, stream, p, d)
	}
	ok, err := s.script(commitScripts).Run(ctx, s.rdb, []string{s.posKey(stream, p), s.CommitChannel(stream, p)}, a.args()...).Int()
	if err != nil {
		return fmt.Errorf("speedstore: commit %s: %w", stream, err)
	}
	if ok != 1 {
		return fmt.Errorf("%w: stream %s expected seq %d", ErrConflict, stream, prevSeq)
	}
	return nil
}

// cellRef is one cell of a delta, as the encoder orders them: by hash
// (epoch, window), then by its index in the delta's group list.
type cellRef struct {
	epoch, window int64
	i             int
}

// appendDelta appends the script section of one view's delta (one without
// blocks for an empty delta). Cells are sorted by hash; each hash's groups
// form one block, or several of at most maxBlockGroups.
func (s *Store) appendDelta(a *argBuf, stream string, p int, d *logic.Delta) {
	v := d.View
	sk := v.StateKey()
	if d.Len() == 0 {
		a.str(s.idxKey(stream, p, sk))
		a.str(s.cellPrefix(stream, p, sk))
		a.str(sk)
		a.b = appendOps(a.b, v.Slots())
		a.end()
		a.int(0)
		return
	}
	cells, groups, states := a.cells[:0], a.groups[:0], a.states[:0]
	size := 0
	for k, c := range d.Cells {
		cells = append(cells, cellRef{k.Epoch, k.Window, len(groups)})
		groups = append(groups, k.Group)
		states = append(states, c)
		size += len(k.Group)
	}
	a.cells, a.groups, a.states = cells, groups, states
	slices.SortFunc(cells, func(x, y cellRef) int {
		if c := cmp.Compare(x.epoch, y.epoch); c != 0 {
			return c
		}
		return cmp.Compare(x.window, y.window)
	})
	// blocks[i] is where block i starts in cells (and blocks[nb] = len).
	blocks := a.blocks[:0]
	for i := range cells {
		if i == 0 || cells[i].epoch != cells[i-1].epoch || cells[i].window != cells[i-1].window || i-blocks[len(blocks)-1] == maxBlockGroups {
			blocks = append(blocks, i)
		}
	}
	blocks = append(blocks, len(cells))
	a.blocks = blocks
	nb := len(blocks) - 1
	a.grow(size+len(cells)*(2+8*v.NumSlots)+nb*48, 2*len(cells)+4*nb+4)

	a.str(s.idxKey(stream, p, sk))
	a.str(s.cellPrefix(stream, p, sk))
	a.str(sk)
	a.b = appendOps(a.b, v.Slots())
	a.end()
	a.int(int64(nb))
	for _, start := range blocks[:nb] {
		c := cells[start]
		a.int(c.epoch)
		a.b = strconv.AppendInt(a.b, c.epoch, 10)
		a.b = append(a.b, ':')
		a.b = strconv.AppendInt(a.b, c.window, 10)
		a.end()
	}
	for bi := range nb {
		b := cells[blocks[bi]:blocks[bi+1]]
		nx := 0
		for _, r := range b {
			c := states[r.i]
			for _, set := range c.Elems {
				if len(set) > 0 {
					nx += 1 + (len(set)+maxPFAdd-1)/maxPFAdd
				}
			}
			for _, q := range c.Buckets {
				nx += len(q)
			}
			for _, pk := range c.Picks {
				if !pk.Empty() {
					nx++
				}
			}
		}
		a.int(int64(len(b)))
		a.int(int64(nx))
		for _, r := range b {
			a.b = append(append(append(a.b, groups[r.i]...), fieldSep), packedSlot...)
			a.end()
		}
		for _, r := range b {
			a.b = appendPacked(a.b, states[r.i].Num)
			a.end()
		}
		if nx == 0 {
			continue
		}
		member := strconv.FormatInt(b[0].epoch, 10) + ":" + strconv.FormatInt(b[0].window, 10)
		for _, r := range b {
			g, c := groups[r.i], states[r.i]
			for k, set := range c.Elems {
				if len(set) == 0 {
					continue
				}
				hf := "h" + strconv.Itoa(k)
				a.str("e")
				a.b = append(append(append(a.b, g...), fieldSep), hf...)
				a.end()
				a.str("1")
				hk := s.cellPrefix(stream, p, sk) + member + ":" + hf + ":" + g
				left, chunk := len(set), 0
				for e := range set {
					if chunk == 0 {
						chunk = min(left, maxPFAdd)
						a.str("p")
						a.str(hk)
						a.int(int64(chunk))
					}
					a.str(e)
					chunk--
					left--
				}
			}
			for k, q := range c.Buckets {
				for bk, cnt := range q {
					a.str("i")
					a.b = append(append(append(append(append(a.b, g...), fieldSep), 'q'), strconv.Itoa(k)...), ':')
					a.b = strconv.AppendInt(a.b, int64(bk), 10)
					a.end()
					a.int(int64(cnt))
				}
			}
			for k, pk := range c.Picks {
				if pk.Empty() {
					continue
				}
				if v.PickLast(k) {
					a.str("L")
				} else {
					a.str("F")
				}
				a.b = append(append(append(a.b, g...), fieldSep), pickSlot...)
				a.b = strconv.AppendInt(a.b, int64(k), 10)
				a.end()
				a.b = logic.AppendPick(a.b, pk)
				a.end()
			}
		}
	}
}

// appendOps appends one letter per slot: a = add, n = min, x = max.
func appendOps(dst []byte, slots []logic.Slot) []byte {
	for _, sl := range slots {
		switch sl.Op {
		case logic.OpMin:
			dst = append(dst, 'n')
		case logic.OpMax:
			dst = append(dst, 'x')
		default:
			dst = append(dst, 'a')
		}
	}
	return dst
}

// appendPacked appends a cell's numeric slots as stored in its "s" field:
// each slot's IEEE-754 bits, little endian, 8 bytes, in View.Slots order
// (Lua's struct format "<d…d"). NaN (an empty min/max) stays NaN.
func appendPacked(dst []byte, num []float64) []byte {
	for _, x := range num {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(x))
	}
	return dst
}

// mergePacked merges a packed value into st.Num with the slots' rules. A
// value of another length (a view redefined since it was written) is
// ignored; it reports whether it was used.
func mergePacked(slots []logic.Slot, num []float64, val string) bool {
	if len(val) != 8*len(slots) {
		return false
	}
	for i, sl := range slots {
		mergeSlot(sl, &num[i], math.Float64frombits(leUint64(val[8*i:])))
	}
	return true
}

// mergeSlot merges x into *dst with the slot's rule; an empty (NaN) min or
// max changes nothing.
func mergeSlot(sl logic.Slot, dst *float64, x float64) {
	if sl.Op != logic.OpAdd && math.IsNaN(x) {
		return
	}
	*dst = sl.Merge(*dst, x)
}

func leUint64(s string) uint64 {
	_ = s[7]
	return uint64(s[0]) | uint64(s[1])<<8 | uint64(s[2])<<16 | uint64(s[3])<<24 |
		uint64(s[4])<<32 | uint64(s[5])<<40 | uint64(s[6])<<48 | uint64(s[7])<<56
}

// argBuf builds script arguments in one buffer: each argument is the bytes
// appended to b since the previous end(). cells and blocks are the
// encoder's scratch space.
type argBuf struct {
	b      []byte
	ends   []int
	cells  []cellRef
	groups []string
	states []*logic.DeltaCell
	blocks []int
}

// grow makes room for n more bytes in m more arguments.
func (a *argBuf) grow(n, m int) {
	a.b = slices.Grow(a.b, n)
	a.ends = slices.Grow(a.ends, m)
}

func (a *argBuf) end()         { a.ends = append(a.ends, len(a.b)) }
func (a *argBuf) str(s string) { a.b = append(a.b, s...); a.end() }
func (a *argBuf) int(n int64)  { a.b = strconv.AppendInt(a.b, n, 10); a.end() }

// args returns the arguments for the client: each one a pointer into one
// slice, so passing them as interfaces allocates nothing more.
func (a *argBuf) args() []any {
	refs := make([]argRef, len(a.ends))
	out := make([]any, len(a.ends))
	start := 0
	for i, e := range a.ends {
		refs[i] = argRef(a.b[start:e:e])
		out[i] = &refs[i]
		start = e
	}
	return out
}

// argRef is one script argument; the client writes what MarshalBinary
// returns as it is.
type argRef []byte

func (r *argRef) MarshalBinary() ([]byte, error) { return *r, nil }
