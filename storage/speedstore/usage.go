package speedstore

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/defaults"
)

// Usage is what one state key (a view's speed state, logic.View.StateKey)
// costs in Redis, over every partition of its stream.
type Usage struct {
	Cells int64 // speed cells: (arrival epoch, window, group) entries
	Keys  int64 // Redis keys: the cell hashes, their HyperLogLogs and the partitions' indexes
	Bytes int64 // the memory of those keys, as MEMORY USAGE reports it
	// Exact is true when every cell hash and every field of them was read;
	// false when the figures are scaled up from a sample (UsageBudget).
	Exact bool
}

// UsageBudget bounds what Usage reads per partition: at most Hashes cell
// hashes (a random sample of them beyond) and, of those, Fields hash
// fields. Zero fields take defaults.SpeedCostHashes and
// defaults.SpeedCostFields.
type UsageBudget struct {
	Hashes, Fields int
}

// usageScan is the page size of the field scans of Usage, and usageBatch
// the commands per pipeline.
const (
	usageScan  = 1000
	usageBatch = 1000
)

// Usage measures what state key costs in Redis in every partition of a
// stream, within budget: cheaply enough to run every few seconds on a
// large state, and exactly on a small one.
//
// Per partition it reads the index's size (the cell hashes, one per
// arrival epoch and window) and memory; then, for every hash or a random
// sample of budget.Hashes of them, its fields and memory; then it scans
// the fields of the sampled hashes, whole hashes until budget.Fields are
// read (a hash far beyond it is cut short): each group's
// "s" field is a cell, each "h{k}" field names a HyperLogLog, whose memory
// is read too. Cells and HyperLogLogs of the fields beyond the budget are
// scaled up from those scanned (per field), and those of the hashes beyond
// the sample from the sample (per hash). Every command is O(1) or one page
// of a scan, so Usage never holds Redis for long; it only reads. It works
// on Redis Cluster (each partition's keys live in one slot). Safe for
// concurrent use.
func (s *Store) Usage(ctx context.Context, st *logic.Stream, key string, budget UsageBudget) (Usage, error) {
	if budget.Hashes <= 0 {
		budget.Hashes = defaults.SpeedCostHashes
	}
	if budget.Fields <= 0 {
		budget.Fields = defaults.SpeedCostFields
	}
	out := Usage{Exact: true}
	for p := range st.Partitions {
		u, err := s.partUsage(ctx, st.Name, p, key, budget)
		if err != nil {
			return Usage{}, fmt.Errorf("speedstore: usage of %s: %w", key, err)
		}
		out.Cells += u.Cells
		out.Keys += u.Keys
		out.Bytes += u.Bytes
		out.Exact = out.Exact && u.Exact
	}
	return out, nil
}

// partUsage is Usage of one partition.
func (s *Store) partUsage(ctx context.Context, stream string, p int, key string, budget UsageBudget) (Usage, error) {
	idx := s.idxKey(stream, p, key)
	pipe := s.rdb.Pipeline()
	card := pipe.ZCard(ctx, idx)
	idxMem := pipe.MemoryUsage(ctx, idx)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Usage{}, err
	}
	hashes := card.Val()
	u := Usage{Exact: true}
	if idxMem.Err() == nil {
		u.Keys, u.Bytes = 1, idxMem.Val()
	}
	if hashes == 0 {
		return u, nil
	}

	// The hashes to read: all of them, or a random sample.
	var members []string
	var err error
	if hashes <= int64(budget.Hashes) {
		members, err = s.rdb.ZRange(ctx, idx, 0, -1).Result()
	} else {
		members, err = s.rdb.ZRandMember(ctx, idx, budget.Hashes).Result()
	}
	if err != nil {
		return Usage{}, err
	}
	if len(members) == 0 {
		return u, nil // emptied meanwhile
	}
	prefix := s.cellPrefix(stream, p, key)
	hkeys := make([]string, len(members))
	for i, m := range members {
		hkeys[i] = prefix + m
	}

	// Their fields and memory.
	var fields, hashBytes int64
	for chunk := range slices.Chunk(hkeys, usageBatch/2) {
		pipe := s.rdb.Pipeline()
		lens := make([]*redis.IntCmd, len(chunk))
		mems := make([]*redis.IntCmd, len(chunk))
		for i, k := range chunk {
			lens[i] = pipe.HLen(ctx, k)
			mems[i] = pipe.MemoryUsage(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return Usage{}, err
		}
		for i := range chunk {
			fields += lens[i].Val()
			if mems[i].Err() == nil { // redis.Nil: expired meanwhile
				hashBytes += mems[i].Val()
			}
		}
	}

	// Their fields, within the budget: cells and HyperLogLogs.
	var scanned, cells int64
	var hlls []string
	for _, k := range hkeys {
		if scanned >= int64(budget.Fields) {
			break
		}
		var cursor uint64
		for {
			kv, next, err := s.rdb.HScan(ctx, k, cursor, "", usageScan).Result()
			if err != nil {
				return Usage{}, err
			}
			for i := 0; i < len(kv); i += 2 {
				scanned++
				f := kv[i]
				sep := strings.LastIndexByte(f, 0x1e)
				if sep < 0 {
					continue
				}
				group, slot := f[:sep], f[sep+1:]
				switch {
				case slot == "s":
					cells++
				case strings.HasPrefix(slot, "h"):
					hlls = append(hlls, k+":"+slot+":"+group)
				}
			}
			cursor = next
			// A hash is scanned whole (its fields' kinds come in no
			// particular order), unless it alone is far beyond the budget.
			if cursor == 0 || scanned >= 2*int64(budget.Fields) {
				break
			}
		}
	}
	var hllBytes int64
	for chunk := range slices.Chunk(hlls, usageBatch) {
		pipe := s.rdb.Pipeline()
		mems := make([]*redis.IntCmd, len(chunk))
		for i, k := range chunk {
			mems[i] = pipe.MemoryUsage(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return Usage{}, err
		}
		for _, m := range mems {
			if m.Err() == nil {
				hllBytes += m.Val()
			}
		}
	}

	// Scale up: the fields not scanned like those scanned, the hashes not
	// sampled like those sampled.
	perField := 1.0
	if scanned > 0 && fields > scanned {
		perField = float64(fields) / float64(scanned)
	}
	perHash := float64(hashes) / float64(len(hkeys))
	scale := func(x float64) int64 { return int64(math.Round(x)) }
	u.Cells += scale(float64(cells) * perField * perHash)
	u.Keys += scale((float64(len(hkeys)) + float64(len(hlls))*perField) * perHash)
	u.Bytes += scale((float64(hashBytes) + float64(hllBytes)*perField) * perHash)
	u.Exact = int64(len(hkeys)) == hashes && scanned >= fields
	return u, nil
}
