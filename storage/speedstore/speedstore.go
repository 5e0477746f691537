// Package speedstore is the speed layer's state in Redis: per view, per
// arrival epoch, per window and group, the numeric slots of the view's
// measures — committed together with the consumer's position in one Lua
// script, so a redelivered micro-batch or a second writer can never count an
// event twice.
//
// Layout (ns = namespace):
//
//	{ns}:v:{view}:{epoch}:{window}  hash   field "{group}\x1e{slot}" → value
//	{ns}:v:{view}:idx               zset   member "{epoch}:{window}", score epoch
//	{ns}:pos:{stream}               hash   seq, wm (max event time), owner
//	{ns}:commits:{stream}           channel: the new seq after every commit
package speedstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
)

// ErrConflict means the stored position was not the one the commit expected:
// the batch was already committed (a redelivery), another process moved the
// position, or the state was lost. Nothing was written.
var ErrConflict = errors.New("speedstore: position conflict")

// Store is the Redis speed store. It is safe for concurrent use; commits of
// one stream must come from one logical writer (the position fences others).
type Store struct {
	rdb redis.UniversalClient
	ns  string
}

// New returns a store over a Redis client with the given key namespace.
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
// is none (a fresh start, or Redis lost its data).
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

// The commit script: compare-and-set the position, apply every cell op,
// index the cells, move the position, announce it. Ops never fail midway
// (values are well-formed numbers), so the script is all or nothing.
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

// Commit applies the deltas (views of ONE stream) and moves the stream's
// position from prevSeq to next.Seq atomically. If the stored sequence is
// not prevSeq (absent counts as 0) nothing is written and ErrConflict is
// returned. Empty deltas just move the position.
func (s *Store) Commit(ctx context.Context, stream string, prevSeq uint64, next Position, deltas []*logic.Delta) error {
	args := make([]any, 0, 4+64)
	args = append(args, strconv.FormatUint(prevSeq, 10), strconv.FormatUint(next.Seq, 10), strconv.FormatInt(next.Watermark, 10), next.Owner)
	var field []byte
	for _, d := range deltas {
		v := d.View
		slots := v.Slots()
		idx := s.idxKey(v.Name)
		prefix := s.cellPrefix(v.Name)
		// One cell entry per (epoch, window): gather groups of the same key.
		type ek struct{ e, w int64 }
		byKey := map[ek][]logic.CellKey{}
		for k := range d.Cells {
			byKey[ek{k.Epoch, k.Window}] = append(byKey[ek{k.Epoch, k.Window}], k)
		}
		for k, cells := range byKey {
			member := strconv.FormatInt(k.e, 10) + ":" + strconv.FormatInt(k.w, 10)
			nfPos := len(args) + 4
			args = append(args, prefix+member, idx, member, strconv.FormatInt(k.e, 10), 0)
			nf := 0
			for _, ck := range cells {
				st := d.Cells[ck]
				for i, sl := range slots {
					x := st[i]
					var op string
					switch sl.Op {
					case logic.OpAdd:
						if x == 0 {
							continue
						}
						op = "f"
						if sl.Int {
							op = "i"
						}
					case logic.OpMin:
						op = "n"
					case logic.OpMax:
						op = "x"
					}
					if math.IsNaN(x) {
						continue
					}
					field = append(append(append(field[:0], ck.Group...), 0x1e), strconv.Itoa(i)...)
					val := strconv.FormatFloat(x, 'g', -1, 64)
					if op == "i" {
						val = strconv.FormatInt(int64(x), 10)
					}
					args = append(args, string(field), op, val)
					nf++
				}
			}
			args[nfPos] = nf
		}
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

// Cell is one speed cell: a view's state for one arrival epoch, window and group.
type Cell struct {
	Epoch, Window int64
	Group         string
	State         []float64
}

// Read returns a view's cells with window start in [fromMs, toMs) and epoch
// >= minEpoch. It reads only the indexed cell keys; concurrent commits are
// seen whole or not at all per key.
func (s *Store) Read(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64) ([]Cell, error) {
	members, err := s.rdb.ZRangeByScore(ctx, s.idxKey(v.Name), &redis.ZRangeBy{Min: strconv.FormatInt(minEpoch, 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("speedstore: read %s: %w", v.Name, err)
	}
	type ek struct{ e, w int64 }
	var keys []ek
	for _, m := range members {
		e, w, ok := parseMember(m)
		if ok && w >= fromMs && w < toMs {
			keys = append(keys, ek{e, w})
		}
	}
	if len(keys) == 0 {
		return nil, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(keys))
	prefix := s.cellPrefix(v.Name)
	for i, k := range keys {
		cmds[i] = pipe.HGetAll(ctx, prefix+strconv.FormatInt(k.e, 10)+":"+strconv.FormatInt(k.w, 10))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("speedstore: read %s: %w", v.Name, err)
	}
	var out []Cell
	for i, k := range keys {
		byGroup := map[string][]float64{}
		for f, val := range cmds[i].Val() {
			sep := strings.LastIndexByte(f, 0x1e)
			if sep < 0 {
				continue
			}
			slot, err := strconv.Atoi(f[sep+1:])
			if err != nil || slot < 0 || slot >= v.NumSlots {
				continue
			}
			x, err := strconv.ParseFloat(val, 64)
			if err != nil {
				return nil, fmt.Errorf("speedstore: read %s: bad value %q", v.Name, val)
			}
			g := f[:sep]
			st, ok := byGroup[g]
			if !ok {
				st = v.NewState()
				byGroup[g] = st
			}
			st[slot] = x
		}
		for g, st := range byGroup {
			out = append(out, Cell{Epoch: k.e, Window: k.w, Group: g, State: st})
		}
	}
	return out, nil
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

// Expire drops a view's cells of epochs < beforeEpoch (absorbed by a batch
// version). Readers never ask for those epochs once the version is current.
func (s *Store) Expire(ctx context.Context, view string, beforeEpoch int64) error {
	idx := s.idxKey(view)
	max := "(" + strconv.FormatInt(beforeEpoch, 10)
	members, err := s.rdb.ZRangeByScore(ctx, idx, &redis.ZRangeBy{Min: "-inf", Max: max}).Result()
	if err != nil {
		return fmt.Errorf("speedstore: expire %s: %w", view, err)
	}
	prefix := s.cellPrefix(view)
	for len(members) > 0 {
		n := min(len(members), 500)
		keys := make([]string, n)
		for i, m := range members[:n] {
			keys[i] = prefix + m
		}
		if err := s.rdb.Del(ctx, keys...).Err(); err != nil {
			return fmt.Errorf("speedstore: expire %s: %w", view, err)
		}
		members = members[n:]
	}
	if err := s.rdb.ZRemRangeByScore(ctx, idx, "-inf", max).Err(); err != nil {
		return fmt.Errorf("speedstore: expire %s: %w", view, err)
	}
	return nil
}

// Reset drops the state of a stream's views and its position (for a
// rebuild). A running writer of the stream will then get ErrConflict.
func (s *Store) Reset(ctx context.Context, stream string, views []string) error {
	if err := s.rdb.Del(ctx, s.posKey(stream)).Err(); err != nil {
		return fmt.Errorf("speedstore: reset %s: %w", stream, err)
	}
	for _, v := range views {
		if err := s.Expire(ctx, v, math.MaxInt64); err != nil {
			return err
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
