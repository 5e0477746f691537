// Package leases shares the partitions of Braid's streams among the
// processes of one role ("speed", "archive") through Redis, so that any
// number of them can run and each partition is worked on by one of them,
// moving to the survivors when one stops or dies.
//
// Layout (ns = namespace; works on one Redis server and on Redis Cluster:
// every command and script touches one key):
//
//	{ns}:members:{role}               zset   member = a process (Owner), score = its
//	                                         membership's expiry, unix ms on Redis's clock
//	{ns}:lease:{<stream>.<p>}:{role}  string the owner of partition p, with a TTL; the
//	                                         hash tag is speedstore.Tag, so the lease lives
//	                                         in the slot of the partition's speed state
//
// Membership: every TTL/5 a member renews its entry to Redis's TIME plus
// the TTL (one script: no clock skew between hosts matters) and reads the
// live members (expired entries are dropped by the same script).
//
// Shares: every member computes the same assignment from the same live
// members: rendezvous hashing (a partition goes to the member with the
// highest FNV-1a of member+"/"+stream+"."+p) with bounded loads — the
// partitions are taken in a fixed order and each goes to the highest
// ranked member that holds fewer than ceil(partitions/members) so far. So
// the shares differ by at most one, and a member joining or leaving moves
// few partitions. Plain rendezvous leaves 8 partitions 6:2 or worse
// between two processes about a third of the time.
//
// Leases: a member works on a partition only while it holds the
// partition's lease, taken when absent (or already its own) with a PX of
// the TTL and renewed every tick (a member takes nothing in the tick it
// joins unless told to, so members starting together share from the
// start; one that
// cannot renew keeps working for a few lifetimes, through a Redis
// failover, and takes the lease again). A partition it holds but should no
// longer own is given up — the work's context is cancelled, and once the
// work returned the lease is released — so the rightful member takes it on
// its next tick. A member killed without a goodbye loses its membership and
// its leases within the TTL, and the survivors take its partitions at their
// next tick after that: within about TTL + TTL/5.
//
// The lease fences nothing: two members may briefly both work on a
// partition (a pause longer than the TTL, a network split). The work must
// be correct anyway — for the speed layer the position's compare-and-set
// is; the lease only keeps the work in one place almost always.
package leases

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/speedstore"
)

// Partition is partition P of stream Stream.
type Partition struct {
	Stream string
	P      int
}

func (p Partition) String() string { return p.Stream + "." + strconv.Itoa(p.P) }

// Options configures a Group.
type Options struct {
	Namespace string        // the Redis key prefix
	Role      string        // the group: "speed", "archive"
	Owner     string        // this process's name in the group ("": host, pid and a random suffix)
	TTL       time.Duration // membership and lease lifetime unrenewed (0: defaults.LeaseTTL)
	// TakeAtOnce: take the partitions in the tick the member joins (a
	// process expected to run alone, such as braid up); else it waits one
	// tick, so members starting together share from the start instead of
	// one taking all and handing half over.
	TakeAtOnce bool
	Logger     *slog.Logger // nil: discarded
}

// Group is this process's membership of a role's group.
type Group struct {
	rdb    redis.UniversalClient
	ns     string
	role   string
	owner  string
	ttl    time.Duration
	tick   time.Duration
	atOnce bool
	logger *slog.Logger
}

// New returns this process's membership of the role's group over a Redis
// client (a standalone server or a cluster). It does nothing until Run.
func New(rdb redis.UniversalClient, o Options) *Group {
	if o.TTL <= 0 {
		o.TTL = defaults.LeaseTTL
	}
	if o.Owner == "" {
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		host, _ := os.Hostname()
		o.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Group{rdb: rdb, ns: o.Namespace, role: o.Role, owner: o.Owner, ttl: o.TTL, tick: o.TTL / 5, atOnce: o.TakeAtOnce,
		logger: o.Logger.With("role", o.Role, "owner", o.Owner)}
}

// Owner is this process's name in the group: the value of the leases it
// holds.
func (g *Group) Owner() string { return g.owner }

func membersKey(ns, role string) string { return ns + ":members:" + role }

func leaseKey(ns, role string, p Partition) string {
	return ns + ":lease:" + speedstore.Tag(p.Stream, p.P) + ":" + role
}

// heartbeatScript renews (ARGV[2] = "1") or removes (else) member ARGV[1]
// of the group KEYS[1] whose entries live ARGV[3] ms, drops the expired
// ones and returns the live members. Expiries are on Redis's clock (TIME);
// the set itself expires with its last member.
var heartbeatScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
local top = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[1], top[2]) end
return redis.call('ZRANGE', KEYS[1], 0, -1)
`)

// takeScript takes lease KEYS[1] for owner ARGV[1] for ARGV[2] ms when it
// is free or already the owner's; it returns 1 when the owner holds it.
var takeScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
`)

// releaseScript deletes lease KEYS[1] if owner ARGV[1] holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// heartbeat renews (or, with stay false, ends) this member's membership
// and returns the live members.
func (g *Group) heartbeat(ctx context.Context, stay bool) ([]string, error) {
	flag := "0"
	if stay {
		flag = "1"
	}
	members, err := heartbeatScript.Run(ctx, g.rdb, []string{membersKey(g.ns, g.role)}, g.owner, flag, g.ttl.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("leases: %s membership: %w", g.role, err)
	}
	return members, nil
}

// take takes or renews the lease of p; false while another owner holds it.
func (g *Group) take(ctx context.Context, p Partition) (bool, error) {
	ok, err := takeScript.Run(ctx, g.rdb, []string{leaseKey(g.ns, g.role, p)}, g.owner, g.ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("leases: lease of %s %s: %w", g.role, p, err)
	}
	return ok == 1, nil
}

// release gives up the lease of p if this member holds it.
func (g *Group) release(ctx context.Context, p Partition) error {
	if err := releaseScript.Run(ctx, g.rdb, []string{leaseKey(g.ns, g.role, p)}, g.owner).Err(); err != nil {
		return fmt.Errorf("leases: release %s %s: %w", g.role, p, err)
	}
	return nil
}

// Owners reads who holds each partition's lease of a role ("" = nobody),
// for status pages. It is one round trip per Redis node.
func Owners(ctx context.Context, rdb redis.UniversalClient, ns, role string, parts []Partition) (map[Partition]string, error) {
	cmds := make([]*redis.StringCmd, len(parts))
	_, err := rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, p := range parts {
			cmds[i] = pipe.Get(ctx, leaseKey(ns, role, p))
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		return nil, fmt.Errorf("leases: owners of %s: %w", role, err)
	}
	out := make(map[Partition]string, len(parts))
	for i, p := range parts {
		v, err := cmds[i].Result()
		if err != nil && err != redis.Nil {
			return nil, fmt.Errorf("leases: owner of %s %s: %w", role, p, err)
		}
		out[p] = v
	}
	return out, nil
}

// assign is the share of every partition among members: rendezvous
// hashing with bounded loads (see the package comment). Every member
// computes the same answer from the same members, whatever their order and
// the order of parts. No members: an empty map.
func assign(members []string, parts []Partition) map[Partition]string {
	out := make(map[Partition]string, len(parts))
	if len(members) == 0 {
		return out
	}
	ms := slices.Clone(members)
	slices.Sort(ms)
	ms = slices.Compact(ms)
	ps := sortedParts(parts)
	limit := (len(ps) + len(ms) - 1) / len(ms)
	load := make(map[string]int, len(ms))
	scores := make([]uint64, len(ms))
	order := make([]int, len(ms))
	for _, p := range ps {
		for i, m := range ms {
			scores[i] = score(m, p)
			order[i] = i
		}
		// Highest score first; on a tie the lower name (ms is sorted).
		slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(scores[b], scores[a]) })
		for _, i := range order {
			if load[ms[i]] < limit {
				out[p] = ms[i]
				load[ms[i]]++
				break
			}
		}
	}
	return out
}

// score is member m's rendezvous weight for partition p.
func score(m string, p Partition) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(m + "/" + p.Stream + "." + strconv.Itoa(p.P)))
	return h.Sum64()
}

// sortedParts returns parts sorted by stream then partition, without
// repeats.
func sortedParts(parts []Partition) []Partition {
	ps := slices.Clone(parts)
	slices.SortFunc(ps, func(a, b Partition) int {
		return cmp.Or(cmp.Compare(a.Stream, b.Stream), cmp.Compare(a.P, b.P))
	})
	return slices.Compact(ps)
}
