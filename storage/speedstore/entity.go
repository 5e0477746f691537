package speedstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
)

// Entity state (logic.Entity): per key, one hash in the slot of a stream
// partition, holding the key's events as logic encodes them
// (Entity.AppendEvent) — the batch layer's per event day, the speed
// layer's per arrival epoch:
//
//	{ns}:e:{s.p}:{key}:{k}   hash  c          the batch cutoff the d: fields cover (unix ms)
//	                               d:{day}    the key's events of that UTC day (unix ms of
//	                                          its start) that arrived before c, in
//	                                          EntityEvent order
//	                               s:{g}:{e}  the speed layer's events of arrival epoch e,
//	                                          written under generation g, appended per commit
//	                               m          the least epoch among the s: fields
//	{ns}:pos:{s.p}           hash  e:{key} = "{g}:{J}": the partition's current generation
//	                               of the entity's speed fields, and the arrival
//	                               epoch J from which they are complete
//	{ns}:entmat:{key}        string the entity's last materialisation (EntityMat, JSON)
//
// ({key} is the entity's state key, logic.Entity.StateKey; {k} an entity
// key.) The speed fields of partition p live in the hash of partition p;
// the batch fields in the hash of the key's home partition
// (Entity.HomePartition). When the stream is partitioned by the entity's
// key, both are one hash: a lookup is one HGETALL (and the position's
// fields, same slot, in the same round trip).
//
// A reader takes from the home hash the cutoff c and the days, and from
// each partition's hash the fields of the partition's current generation
// with epoch >= max(c, J): every event is on exactly one side. A commit
// writes speed fields together with the partition's position (the commit
// script), a materialisation writes a key's days and cutoff in one script
// that also drops the speed fields the cutoff covers; so a reader sees a
// key whole. A generation starts when the entity joins a partition's
// commits (a fresh position, or an entity new to the partition): fields
// of other generations are never read and are dropped as keys are
// written.

// entityLua is the entities' part of the commit script (commitLua), run
// after the compare-and-set: from ARGV[i], the number of entities, then
// per entity
//
//	prefix, ef, gen, join, drop, ttl, nk   the key prefix, the position field
//	                                       "e:{key}", a new generation, the join
//	                                       epoch, the epoch below which speed
//	                                       fields go, the keys' expiry (ms, 0:
//	                                       none), cells
//	nk × (key, epoch, events)              events appended to field s:{g}:{epoch}
//
// The entity joins when the position is fresh (J = ARGV[5], the epoch the
// fresh state starts at) or has no field ef yet (J = join), under the new
// generation; otherwise the recorded generation is kept.
const entityLua = etrimLua + `
local function egen(ef, gen, join)
  local g = redis.call('HGET', KEYS[1], ef)
  if fresh or not g then
    g = gen .. ':' .. join
    redis.call('HSET', KEYS[1], ef, g)
  end
  return string.match(g, '^([^:]*)')
end
local ne = tonumber(ARGV[i])
i = i + 1
for _ = 1, ne do
  local prefix, ef, gen, join = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3]
  local drop, ttl, nk = tonumber(ARGV[i+4]), ARGV[i+5], tonumber(ARGV[i+6])
  i = i + 7
  if fresh then join = ARGV[5] end
  local cg = egen(ef, gen, join)
  for _ = 1, nk do
    local key, ep, data = prefix .. ARGV[i], ARGV[i+1], ARGV[i+2]
    i = i + 3
    local m = tonumber(redis.call('HGET', key, 'm') or '')
    if m and m < drop then m = etrim(key, cg, drop, nil) end
    local f = 's:' .. cg .. ':' .. ep
    local old = redis.call('HGET', key, f)
    if old then data = old .. data end
    redis.call('HSET', key, f, data)
    if not m or tonumber(ep) < m then redis.call('HSET', key, 'm', ep) end
    if ttl ~= '0' then redis.call('PEXPIRE', key, ttl) end
  end
end
`

// etrimLua defines etrim(key, cg, drop, keepFrom): it drops from an
// entity key's hash the speed fields of generations other than cg or of
// epochs before drop, and (keepFrom not nil) the days before keepFrom; it
// sets m to the least epoch left and returns it (nil: none).
const etrimLua = `
local function etrim(key, cg, drop, keepFrom)
  local del, m, me = {}, nil, nil
  for _, f in ipairs(redis.call('HKEYS', key)) do
    local kind = string.sub(f, 1, 2)
    if kind == 's:' then
      local g, ep = string.match(f, '^s:([^:]*):(%-?%d+)$')
      local e = tonumber(ep)
      if g ~= cg or e == nil or e < drop then
        del[#del + 1] = f
      elseif not m or e < m then
        m, me = e, ep
      end
    elseif kind == 'd:' and keepFrom and tonumber(string.sub(f, 3)) < keepFrom then
      del[#del + 1] = f
    end
  end
  for j = 1, #del, 1000 do
    redis.call('HDEL', key, unpack(del, j, math.min(j + 999, #del)))
  end
  if me then redis.call('HSET', key, 'm', me) else redis.call('HDEL', key, 'm') end
  return m
end
`

// entityPrefix is the prefix of an entity's key hashes in partition p.
func (s *Store) entityPrefix(stream string, p int, sk string) string {
	return s.ns + ":e:" + Tag(stream, p) + ":" + sk + ":"
}

// EntityKey is the hash of an entity key in partition p (for tests and tools).
func (s *Store) EntityKey(e *logic.Entity, p int, key string) string {
	return s.entityPrefix(e.Stream.Name, p, e.StateKey()) + key
}

func (s *Store) matKey(sk string) string { return s.ns + ":entmat:" + sk }

// appendEntities appends the entities' sections of a commit (entityLua).
func (s *Store) appendEntities(ctx context.Context, a *argBuf, stream string, p int, ents []*logic.EntityDelta) {
	a.int(int64(len(ents)))
	if len(ents) == 0 {
		return
	}
	gen := newGeneration()
	for _, d := range ents {
		e := d.Entity
		sk := e.StateKey()
		a.str(s.entityPrefix(stream, p, sk))
		a.str("e:" + sk)
		a.str(gen)
		a.int(d.Join)
		a.int(s.mats.dropBefore(ctx, s, sk))
		a.int(e.Expiry().Milliseconds())
		a.int(int64(len(d.Cells)))
		for k, data := range d.Cells {
			a.str(k.Key)
			a.int(k.Epoch)
			a.b = append(a.b, data...)
			a.end()
		}
	}
}

// newGeneration returns a token no other join will have.
func newGeneration() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return strconv.FormatInt(time.Now().UnixNano(), 36) + hex.EncodeToString(b)
}

// EntityMat records an entity's last materialisation: every key with
// events that arrived before Cutoff has its days written up to it. Prev
// is the cutoff of the one before (0: none): speed fields below it are
// read by no one and may go.
type EntityMat struct {
	Cutoff int64     `json:"cutoff"`
	Prev   int64     `json:"prev"`
	Keys   int64     `json:"keys"` // keys written by the materialisation
	At     time.Time `json:"at"`
}

// EntityMat returns an entity's materialisation record (found false:
// none, e.g. a new entity or a Redis that lost its data).
func (s *Store) EntityMat(ctx context.Context, e *logic.Entity) (EntityMat, bool, error) {
	b, err := s.rdb.Get(ctx, s.matKey(e.StateKey())).Bytes()
	if errors.Is(err, redis.Nil) {
		return EntityMat{}, false, nil
	}
	if err != nil {
		return EntityMat{}, false, fmt.Errorf("speedstore: entity %s: %w", e.Name, err)
	}
	var m EntityMat
	if err := json.Unmarshal(b, &m); err != nil {
		return EntityMat{}, false, fmt.Errorf("speedstore: entity %s: bad materialisation record: %w", e.Name, err)
	}
	return m, true, nil
}

// SetEntityMat records a finished materialisation; it is written only
// after every key of it.
func (s *Store) SetEntityMat(ctx context.Context, e *logic.Entity, m EntityMat) error {
	b, _ := json.Marshal(m)
	if err := s.rdb.Set(ctx, s.matKey(e.StateKey()), b, 0).Err(); err != nil {
		return fmt.Errorf("speedstore: entity %s: %w", e.Name, err)
	}
	return nil
}

// matCache keeps the entities' materialisation records for commits, read
// again at most every matRefresh: a commit drops speed fields below the
// record's Prev, so a stale record only delays that.
type matCache struct {
	mu sync.Mutex
	m  map[string]matEntry
}

type matEntry struct {
	prev int64
	at   time.Time
}

const matRefresh = 5 * time.Second

func (c *matCache) dropBefore(ctx context.Context, s *Store, sk string) int64 {
	c.mu.Lock()
	en, ok := c.m[sk]
	c.mu.Unlock()
	if ok && time.Since(en.at) < matRefresh {
		return en.prev
	}
	// Read outside the lock: commits of other partitions go on meanwhile
	// (two may read at once; either record will do).
	en.at = time.Now()
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if b, err := s.rdb.Get(rctx, s.matKey(sk)).Bytes(); err == nil {
		var m EntityMat
		if json.Unmarshal(b, &m) == nil {
			en.prev = m.Prev
		}
	} else if errors.Is(err, redis.Nil) {
		en.prev = 0
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]matEntry{}
	}
	c.m[sk] = en
	c.mu.Unlock()
	return en.prev
}

// EntityDays is what a materialisation writes of one key: its events per
// UTC day (start, unix ms), each day's encodings in EntityEvent order.
type EntityDays struct {
	Key  string
	Days map[int64][]byte
}

// entityWriteLua writes one key's batch part. KEYS[1] = the key's hash,
// KEYS[2] = the position of its partition (one slot); ARGV = ef, cutoff,
// keepFrom (days before it go), ttl (ms, 0: none), nd, then nd × (day,
// events). A hash already holding a later cutoff is left alone. It drops
// the speed fields the cutoff covers and those of other generations.
var entityWriteScript = redis.NewScript(etrimLua + `
local c = tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], 'c') or '0')
if cur > c then return 0 end
redis.call('HSET', KEYS[1], 'c', ARGV[2])
local nd = tonumber(ARGV[5])
for j = 0, nd - 1 do
  redis.call('HSET', KEYS[1], 'd:' .. ARGV[6 + 2 * j], ARGV[7 + 2 * j])
end
local g = redis.call('HGET', KEYS[2], ARGV[1])
local cg = g and string.match(g, '^([^:]*)') or ''
etrim(KEYS[1], cg, c, tonumber(ARGV[3]))
if ARGV[4] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
`)

// Bounds of a materialisation's writes: keys per pipeline.
const writeKeys = 200

// WriteEntityDays writes the batch part of keys (a materialisation up to
// cutoff): each key's hash in its home partition, atomically: its days
// replaced, its cutoff set, the speed fields below the cutoff and the
// days before keepFrom (unix ms; math.MinInt64: none) dropped. Keys are
// written in pipelines of writeKeys. Safe for concurrent use with the
// speed layer's commits; one materialisation of an entity at a time
// (the batch run lock).
func (s *Store) WriteEntityDays(ctx context.Context, e *logic.Entity, cutoff, keepFrom int64, keys []EntityDays) error {
	sk := e.StateKey()
	ttl := strconv.FormatInt(e.Expiry().Milliseconds(), 10)
	for len(keys) > 0 {
		n := min(len(keys), writeKeys)
		pipe := s.rdb.Pipeline()
		for _, k := range keys[:n] {
			kv, err := e.KeyValue(k.Key)
			if err != nil {
				return fmt.Errorf("speedstore: entity %s: %w", e.Name, err)
			}
			p := e.HomePartition(kv)
			args := []any{"e:" + sk, strconv.FormatInt(cutoff, 10), strconv.FormatInt(keepFrom, 10), ttl, len(k.Days)}
			for day, data := range k.Days {
				args = append(args, strconv.FormatInt(day, 10), data)
			}
			entityWriteScript.Eval(ctx, pipe, []string{s.entityPrefix(e.Stream.Name, p, sk) + k.Key, s.posKey(e.Stream.Name, p)}, args...)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("speedstore: entity %s: write: %w", e.Name, err)
		}
		keys = keys[n:]
	}
	return nil
}

// EntityJoins returns, per partition of the entity's stream, the arrival
// epoch from which the speed layer's state of the entity is complete
// there (-1: the entity has not joined the partition's commits yet). The
// entity answers once its materialisation's cutoff reaches every one.
func (s *Store) EntityJoins(ctx context.Context, e *logic.Entity) ([]int64, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, e.Stream.Partitions)
	for p := range cmds {
		cmds[p] = pipe.HGet(ctx, s.posKey(e.Stream.Name, p), "e:"+e.StateKey())
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("speedstore: entity %s: %w", e.Name, err)
	}
	out := make([]int64, len(cmds))
	for p, c := range cmds {
		out[p] = -1
		if g, err := c.Result(); err == nil {
			_, j, _ := strings.Cut(g, ":")
			out[p], _ = strconv.ParseInt(j, 10, 64)
		}
	}
	return out, nil
}
