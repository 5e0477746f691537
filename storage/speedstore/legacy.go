package speedstore

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/redis/go-redis/v9"
)

// DropLegacy deletes what a store wrote for a stream before streams had
// partitions, in keys without a hash tag: the position {ns}:pos:{stream},
// the lease {ns}:lease:{stream}, and for each given state key its index
// {ns}:v:{key}:idx, the cell hashes it lists and their distinct sketches.
// The speed layer calls it when partition 0 of the stream starts fresh,
// once no process of the old layout writes any more. Idempotent (nothing
// to do when they are absent): a run cut short leaves the index entries
// of what is not deleted yet, and the position, for the next run. It
// deletes key by key (the keys lie in any slot of a Redis Cluster), in
// pipelines of at most expireChunk cells.
func (s *Store) DropLegacy(ctx context.Context, stream string, keys []string) error {
	for _, k := range keys {
		if err := s.dropLegacyCells(ctx, k); err != nil {
			return fmt.Errorf("speedstore: drop the unpartitioned state of %s: %w", k, err)
		}
	}
	pipe := s.rdb.Pipeline()
	pipe.Del(ctx, s.ns+":pos:"+stream)
	pipe.Del(ctx, s.ns+":lease:"+stream)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("speedstore: drop the unpartitioned position of %s: %w", stream, err)
	}
	return nil
}

// dropLegacyCells deletes the cells of an unpartitioned state key, chunk
// by chunk of its index: the hashes' distinct sketches (named by their
// "h{k}" fields), the hashes, then their index entries; the index last.
func (s *Store) dropLegacyCells(ctx context.Context, key string) error {
	idx := s.ns + ":v:" + key + ":idx"
	prefix := s.ns + ":v:" + key + ":"
	members, err := s.rdb.ZRange(ctx, idx, 0, -1).Result()
	if err != nil {
		return err
	}
	for len(members) > 0 {
		chunk := members[:min(len(members), expireChunk)]
		members = members[len(chunk):]
		pipe := s.rdb.Pipeline()
		fields := make([]*redis.StringSliceCmd, len(chunk))
		for i, m := range chunk {
			fields[i] = pipe.HKeys(ctx, prefix+m)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
		pipe = s.rdb.Pipeline()
		for i, m := range chunk {
			hash := prefix + m
			for _, f := range fields[i].Val() {
				sep := strings.LastIndexByte(f, fieldSep)
				if sep < 0 {
					continue
				}
				if _, ok := sketchIndex(f[sep+1:], 'h', math.MaxInt); ok {
					pipe.Del(ctx, hash+":"+f[sep+1:]+":"+f[:sep])
				}
			}
			pipe.Del(ctx, hash)
		}
		done := make([]any, len(chunk))
		for i, m := range chunk {
			done[i] = m
		}
		pipe.ZRem(ctx, idx, done...)
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return s.rdb.Del(ctx, idx).Err()
}
