package speedstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
)

// A view whose definition is new to the store is rebuilt beside its
// stream's running commits: its cells start empty, a rebuild folds the
// records from the arrival epoch it starts at (BeginRebuild) up to the
// stream's position in commits of its own (CommitRebuild, fenced by the
// record it reached), and the commit that reaches the stream's position
// joins the view to the stream's commits (ViewPosition.Joined), all in one
// script. From then on every commit of the stream moves the view with it
// (Commit). The stream's commits skip the view until it joins, and the
// rebuild never folds a record past the stream's position, so every record
// is folded into the view exactly once: by the rebuild up to the join, by
// the stream's commits after it.

// Rebuild is where a view's rebuild stands.
type Rebuild struct {
	From    int64  // the arrival epoch (unix ms) its cells start at
	Rebuilt uint64 // the last record folded (0: none yet: start at From)
}

// BeginRebuild starts (or resumes) the rebuild of a view's state key on a
// stream: a rebuild already under way is resumed where it stands (its
// From kept); else the key's cells are deleted (what a rebuild cut short
// before it began left) and a rebuild from arrival epoch from begins.
// Errors: ErrJoined, ErrNoPosition. Only the stream's writer (the lease
// holder) may rebuild.
func (s *Store) BeginRebuild(ctx context.Context, stream string, p int, key string, from int64) (Rebuild, error) {
	pos, found, err := s.Position(ctx, stream, p)
	if err != nil {
		return Rebuild{}, err
	}
	if !found {
		return Rebuild{}, ErrNoPosition
	}
	vp := pos.Views[key]
	switch {
	case vp.JoinedOK:
		return Rebuild{}, ErrJoined
	case vp.Rebuilding:
		return Rebuild{From: vp.From, Rebuilt: vp.Rebuilt}, nil
	}
	if err := s.clear(ctx, stream, p, key); err != nil {
		return Rebuild{}, fmt.Errorf("speedstore: begin rebuild of %s: %w", key, err)
	}
	n, err := beginScript.Run(ctx, s.rdb, []string{s.posKey(stream, p)}, key, from).Int()
	if err != nil {
		return Rebuild{}, fmt.Errorf("speedstore: begin rebuild of %s: %w", key, err)
	}
	if n != 1 {
		return Rebuild{}, fmt.Errorf("%w: stream %s changed while the rebuild of %s began", ErrConflict, stream, key)
	}
	return Rebuild{From: from}, nil
}

var beginScript = redis.NewScript(`
if not redis.call('HGET', KEYS[1], 'seq') then return 0 end
if redis.call('HEXISTS', KEYS[1], 'v:' .. ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[1], 'b:' .. ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'b:' .. ARGV[1], '0', 'f:' .. ARGV[1], ARGV[2])
return 1
`)

// CommitRebuild applies a rebuilding view's delta, the records after prev
// up to next (first: the first record of the rebuild, recorded when prev
// is 0), in one script. It is fenced by the rebuild's last record: when
// the stored one is not prev (another rebuild moved it, the view joined,
// or the stream was reset) nothing is written and the error matches
// ErrConflict. next must not be past the stream's position; when it is
// the stream's position the view joins the stream's commits in the same
// script (joined = true) and the commit channel announces it.
func (s *Store) CommitRebuild(ctx context.Context, stream string, p int, prev, first, next uint64, d *logic.Delta) (joined bool, err error) {
	key := d.View.StateKey()
	var a argBuf
	a.str(key)
	a.str(strconv.FormatUint(prev, 10))
	a.str(strconv.FormatUint(next, 10))
	a.str(strconv.FormatUint(first, 10))
	s.appendDelta(&a, stream, p, d)
	n, err := s.script(rebuildScripts).Run(ctx, s.rdb, []string{s.posKey(stream, p), s.CommitChannel(stream, p)}, a.args()...).Int()
	if err != nil {
		return false, fmt.Errorf("speedstore: rebuild %s: %w", key, err)
	}
	if n == 0 {
		return false, fmt.Errorf("%w: rebuild of %s on %s expected record %d", ErrConflict, key, stream, prev)
	}
	return n == 2, nil
}

// The rebuild script: KEYS[1] = position hash, KEYS[2] = commit channel.
var rebuildScripts = notifying(`
local pos = KEYS[1]
local sk = ARGV[1]
local seq = redis.call('HGET', pos, 'seq')
if not seq then return 0 end
if redis.call('HEXISTS', pos, 'v:' .. sk) == 1 then return 0 end
if redis.call('HGET', pos, 'b:' .. sk) ~= ARGV[2] then return 0 end
if tonumber(ARGV[3]) > tonumber(seq) then return 0 end
local function join(_) return true end
local i = 5
` + sectionLua + `
if ARGV[2] == '0' then redis.call('HSET', pos, 'bs:' .. sk, ARGV[4]) end
redis.call('HSET', pos, 'b:' .. sk, ARGV[3])
if seq == ARGV[3] then
  redis.call('HSET', pos, 'v:' .. sk, ARGV[3])
  redis.call('HDEL', pos, 'b:' .. sk, 'bs:' .. sk)
  redis.call(publish, KEYS[2], seq)
  return 2
end
return 1
`)

// StateKeys lists the state keys that have cells in the store (found by
// their index keys with SCAN, on every master of a Redis Cluster: for
// clean-up at start, not for queries). Keys written before views had
// definitions have no "@".
func (s *Store) StateKeys(ctx context.Context) ([]string, error) {
	prefix := s.ns + ":v:{"
	var (
		mu   sync.Mutex
		out  []string
		seen = map[string]bool{}
	)
	scan := func(ctx context.Context, c redis.Cmdable) error {
		it := c.Scan(ctx, 0, prefix+"*:idx", 1000).Iterator()
		for it.Next(ctx) {
			k := strings.TrimSuffix(strings.TrimPrefix(it.Val(), prefix), ":idx")
			_, k, _ = strings.Cut(k, "}:")
			mu.Lock()
			if k != "" && !strings.Contains(k, ":") && !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
			mu.Unlock()
		}
		return it.Err()
	}
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return scan(ctx, c) })
	} else {
		err = scan(ctx, s.rdb)
	}
	if err != nil {
		return nil, fmt.Errorf("speedstore: list state keys: %w", err)
	}
	return out, nil
}

// DropState deletes a state key's cells and its part of the stream's
// position (a view removed, or redefined: its old definition's state).
func (s *Store) DropState(ctx context.Context, stream string, p int, key string) error {
	if err := s.clear(ctx, stream, p, key); err != nil {
		return err
	}
	if err := s.rdb.HDel(ctx, s.posKey(stream, p), "v:"+key, "f:"+key, "b:"+key, "bs:"+key).Err(); err != nil {
		return fmt.Errorf("speedstore: drop %s: %w", key, err)
	}
	return nil
}
