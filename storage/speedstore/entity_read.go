package speedstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
)

// Errors of entity reads, for callers to branch on.
var (
	// ErrUnknownEntity: no entity of that name.
	ErrUnknownEntity = errors.New("unknown entity")
	// ErrEntityBadRequest: a key or an as_of that cannot be answered.
	ErrEntityBadRequest = errors.New("bad entity request")
	// ErrEntityBuilding: the entity's state is not whole yet (a new or
	// changed entity, or a state being rebuilt): its batch part has not
	// reached where its speed part starts. It is once a batch run
	// materialises it.
	ErrEntityBuilding = errors.New("entity building")
)

// EntityHistory reads an entity's keys' events from the lake, for as_of
// instants older than what Redis keeps.
//
// EntityEvents returns, per key (as given), the events with event time in
// [from, to) that arrived at or before asOf, in any order; covered is
// false when the lake does not yet hold every event that arrived by asOf
// (the answer is then not exact). Safe for concurrent use; an error means
// nothing could be read.
type EntityHistory interface {
	EntityEvents(ctx context.Context, e *logic.Entity, keys []string, from, to, asOf int64) (events map[string][]logic.EntityEvent, covered bool, err error)
}

// EntityAnswer is one key's features as of an instant.
type EntityAnswer struct {
	Key         string
	AsOf        int64         // unix ms
	Values      []logic.Value // per feature, in Entity.Features order; null: no value
	Exact       []bool        // per feature
	FreshnessMs int64         // how much of the time up to as_of the answer may miss (0: none)
	Source      string        // "redis" (batch ⊕ speed) or "lake"
}

// EntityReader answers entity features: exact history (the batch part
// the batch layer materialised) ⊕ fresh speed state, from Redis in one
// pipelined round trip per lookup; as_of instants older than Redis keeps
// from the lake (History). Safe for concurrent use.
type EntityReader struct {
	Store    *Store
	Entities map[string]*logic.Entity
	History  EntityHistory // nil: old as_of values are refused
	Now      func() time.Time

	mu   sync.Mutex
	mats map[string]matRead
}

type matRead struct {
	m     EntityMat
	found bool
	at    time.Time
}

// matFresh bounds how stale the materialisation record a read checks
// readiness against may be (a stale one only delays readiness).
const matFresh = time.Second

// Read answers the features of keys of an entity as of asOf (unix ms;
// hasAsOf false: now, and every event folded so far counts). Errors match
// ErrUnknownEntity, ErrEntityBadRequest or ErrEntityBuilding, else Redis
// or the lake failed.
func (r *EntityReader) Read(ctx context.Context, entity string, keys []string, asOf int64, hasAsOf bool) ([]EntityAnswer, error) {
	e, ok := r.Entities[entity]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownEntity, entity)
	}
	now := time.Now().UnixMilli()
	if r.Now != nil {
		now = r.Now().UnixMilli()
	}
	if !hasAsOf {
		asOf = now
	} else if asOf > now {
		return nil, fmt.Errorf("%w: as_of %s is in the future", ErrEntityBadRequest, logic.FormatTime(asOf))
	}
	// Keys as the stores hold them (an int key "007" is 7).
	vals, stored := make([]logic.Value, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		v, err := e.KeyValue(k)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrEntityBadRequest, err)
		}
		vals[i], stored[i] = v, v.String()
	}
	lo, _ := e.Span(asOf)
	var out []EntityAnswer
	var err error
	if keep := e.Keep(); keep > 0 && lo < logic.DayOf(now-keep.Milliseconds()) {
		out, err = r.fromLake(ctx, e, stored, lo, asOf)
	} else {
		out, err = r.fromRedis(ctx, e, stored, vals, asOf, hasAsOf, now)
	}
	for i := range out {
		out[i].Key = keys[i]
	}
	return out, err
}

// Lookup answers the features of keys as of now, by feature name (the
// decision rules' features.<name>); a null value is the zero Value.
func (r *EntityReader) Lookup(ctx context.Context, entity string, keys []string) ([]map[string]logic.Value, error) {
	ans, err := r.Read(ctx, entity, keys, 0, false)
	if err != nil {
		return nil, err
	}
	e := r.Entities[entity]
	out := make([]map[string]logic.Value, len(ans))
	for i, a := range ans {
		m := make(map[string]logic.Value, len(e.Features))
		for fi := range e.Features {
			m[e.Features[fi].Name] = a.Values[fi]
		}
		out[i] = m
	}
	return out, nil
}

// mat returns the entity's materialisation record, at most matFresh old.
func (r *EntityReader) mat(ctx context.Context, e *logic.Entity) (EntityMat, bool, error) {
	sk := e.StateKey()
	r.mu.Lock()
	if m, ok := r.mats[sk]; ok && time.Since(m.at) < matFresh {
		r.mu.Unlock()
		return m.m, m.found, nil
	}
	r.mu.Unlock()
	m, found, err := r.Store.EntityMat(ctx, e)
	if err != nil {
		return m, found, err
	}
	r.mu.Lock()
	if r.mats == nil {
		r.mats = map[string]matRead{}
	}
	r.mats[sk] = matRead{m: m, found: found, at: time.Now()}
	r.mu.Unlock()
	return m, found, nil
}

// partState is what a read learns of a partition: the entity's current
// generation and join epoch there, and its last arrival.
type partState struct {
	gen    string
	join   int64
	joined bool
	la     int64
}

func (r *EntityReader) fromRedis(ctx context.Context, e *logic.Entity, keys []string, vals []logic.Value, asOf int64, hasAsOf bool, now int64) ([]EntityAnswer, error) {
	s, stream, sk := r.Store, e.Stream.Name, e.StateKey()
	mat, _, err := r.mat(ctx, e)
	if err != nil {
		return nil, err
	}
	n := e.Stream.Partitions
	homes := make([]int, len(keys))
	pipe := s.rdb.Pipeline()
	hashes := make([][]*redis.MapStringStringCmd, len(keys)) // by key, by partition read
	posCmds := map[int]*redis.SliceCmd{}
	posOf := func(p int) {
		if _, ok := posCmds[p]; !ok {
			posCmds[p] = pipe.HMGet(ctx, s.posKey(stream, p), "e:"+sk, "la", "seq", "rt")
		}
	}
	for i, k := range keys {
		homes[i] = e.HomePartition(vals[i])
		if e.KeyPartitioned() {
			hashes[i] = []*redis.MapStringStringCmd{pipe.HGetAll(ctx, s.entityPrefix(stream, homes[i], sk)+k)}
			posOf(homes[i])
			continue
		}
		hashes[i] = make([]*redis.MapStringStringCmd, n)
		for p := range n {
			hashes[i][p] = pipe.HGetAll(ctx, s.entityPrefix(stream, p, sk)+k)
			posOf(p)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("speedstore: entity %s: %w", e.Name, err)
	}
	parts := map[int]partState{}
	for p, cmd := range posCmds {
		v := cmd.Val()
		var ps partState
		if g, ok := v[0].(string); ok {
			gen, j, _ := strings.Cut(g, ":")
			ps.gen, ps.joined = gen, true
			ps.join, _ = strconv.ParseInt(j, 10, 64)
		}
		if la, ok := v[1].(string); ok {
			ps.la, _ = strconv.ParseInt(la, 10, 64)
		}
		// A fresh position refolds the log up to its target: until it
		// gets there, the speed part misses events.
		seq, _ := v[2].(string)
		rt, _ := v[3].(string)
		if at, target := atoi(seq), atoi(rt); at < target {
			return nil, fmt.Errorf("%w: %s: partition %d of %s is catching up with the log (%d of %d)", ErrEntityBuilding, e.Name, p, stream, at, target)
		}
		// Whole once a materialisation reached where the speed part
		// starts (a cutoff of 0 covers nothing: the speed part must
		// start at 0 too).
		if !ps.joined || ps.join > mat.Cutoff {
			return nil, fmt.Errorf("%w: %s: partition %d of %s has its speed state from %s, the batch part reaches %s",
				ErrEntityBuilding, e.Name, p, stream, joinText(ps), logic.FormatTime(mat.Cutoff))
		}
		parts[p] = ps
	}
	lo, _ := e.Span(asOf)
	out := make([]EntityAnswer, len(keys))
	var evs []logic.EntityEvent
	var vbuf []logic.Value // the values of evs, reused key after key
	for i, k := range keys {
		evs, vbuf = evs[:0], vbuf[:0]
		readParts := []int{homes[i]}
		if !e.KeyPartitioned() {
			readParts = readParts[:0]
			for p := range n {
				readParts = append(readParts, p)
			}
		}
		var home map[string]string
		for j, p := range readParts {
			if p == homes[i] {
				home = hashes[i][j].Val()
			}
		}
		cut, _ := strconv.ParseInt(home["c"], 10, 64)
		for f, data := range home {
			day, ok := strings.CutPrefix(f, "d:")
			if !ok {
				continue
			}
			d, err := strconv.ParseInt(day, 10, 64)
			if err != nil || d+logic.DayMs <= lo || d >= asOf {
				continue
			}
			if evs, vbuf, err = e.DecodeEventsString(evs, vbuf, data); err != nil {
				return nil, fmt.Errorf("speedstore: entity %s key %s day %s: %w", e.Name, k, day, err)
			}
		}
		fresh := int64(0)
		for j, p := range readParts {
			ps := parts[p]
			from := max(cut, ps.join)
			for f, data := range hashes[i][j].Val() {
				rest, ok := strings.CutPrefix(f, "s:")
				if !ok {
					continue
				}
				g, ep, _ := strings.Cut(rest, ":")
				epoch, err := strconv.ParseInt(ep, 10, 64)
				if err != nil || g != ps.gen || epoch < from {
					continue
				}
				if evs, vbuf, err = e.DecodeEventsString(evs, vbuf, data); err != nil {
					return nil, fmt.Errorf("speedstore: entity %s key %s epoch %s: %w", e.Name, k, ep, err)
				}
			}
			if ps.la > 0 {
				fresh = max(fresh, min(now, asOf)-ps.la)
			}
		}
		vals := e.Compute(evs, asOf, hasAsOf)
		exact := make([]bool, len(vals))
		for fi := range exact {
			exact[fi] = true
		}
		out[i] = EntityAnswer{Key: k, AsOf: asOf, Values: vals, Exact: exact, FreshnessMs: max(fresh, 0), Source: "redis"}
	}
	return out, nil
}

func atoi(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

func joinText(ps partState) string {
	if !ps.joined {
		return "nowhere yet (no speed commit with the entity)"
	}
	return logic.FormatTime(ps.join)
}

func (r *EntityReader) fromLake(ctx context.Context, e *logic.Entity, keys []string, lo, asOf int64) ([]EntityAnswer, error) {
	if r.History == nil {
		return nil, fmt.Errorf("%w: as_of %s is older than the %s this entity keeps in Redis, and this process cannot read the lake",
			ErrEntityBadRequest, logic.FormatTime(asOf), e.Keep())
	}
	events, covered, err := r.History.EntityEvents(ctx, e, keys, lo, asOf, asOf)
	if err != nil {
		return nil, fmt.Errorf("entity %s: lake: %w", e.Name, err)
	}
	out := make([]EntityAnswer, len(keys))
	for i, k := range keys {
		vals := e.Compute(events[k], asOf, true)
		exact := make([]bool, len(vals))
		for fi := range exact {
			exact[fi] = covered
		}
		out[i] = EntityAnswer{Key: k, AsOf: asOf, Values: vals, Exact: exact, Source: "lake"}
	}
	return out, nil
}
