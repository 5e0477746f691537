package speedstore_test

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/tests/testenv"
)

// TestLogicHLLIsRedisHLL checks logic's HyperLogLog against a real
// redis-server: the same elements give the same registers (decoded from
// Redis's own sparse and dense encodings) and the same count as PFCOUNT, so
// batch-built sketches and PFADD keys merge.
func TestLogicHLLIsRedisHLL(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	for _, n := range []int{0, 1, 5, 100, 3000, 50000} {
		key := fmt.Sprintf("%s:hll:%d", testenv.Namespace(t), n)
		var s logic.HLL
		var args []any
		for i := 0; i < n; i++ {
			e := fmt.Sprintf("user-%d@example.com", i)
			s.Add([]byte(e))
			args = append(args, e)
			if len(args) == 1000 || i == n-1 {
				if err := rdb.PFAdd(ctx, key, args...).Err(); err != nil {
					t.Fatal(err)
				}
				args = args[:0]
			}
		}
		if n == 0 {
			rdb.PFAdd(ctx, key)
		}
		want, err := rdb.PFCount(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got := s.Count(); got != want {
			t.Fatalf("n=%d: Count %d, PFCOUNT %d", n, got, want)
		}
		raw, err := rdb.Get(ctx, key).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		r, err := logic.DecodeRedisHLL(raw)
		if err != nil {
			t.Fatalf("n=%d: decode: %v", n, err)
		}
		if !r.Equal(&s) {
			t.Fatalf("n=%d: registers differ from Redis's", n)
		}
		// The other way: logic's encoding is a valid Redis HyperLogLog that
		// PFCOUNT reads and PFADD keeps updating.
		key2 := key + ":ours"
		if err := rdb.Set(ctx, key2, s.MarshalRedis(), 0).Err(); err != nil {
			t.Fatal(err)
		}
		if got, err := rdb.PFCount(ctx, key2).Result(); err != nil || got != want {
			t.Fatalf("n=%d: PFCOUNT of logic's encoding %d (%v), want %d", n, got, err, want)
		}
		for i := 0; i < 300; i++ {
			e := fmt.Sprintf("extra-%d", i)
			s.Add([]byte(e))
			if err := rdb.PFAdd(ctx, key2, e).Err(); err != nil {
				t.Fatalf("n=%d: PFADD onto logic's encoding: %v", n, err)
			}
		}
		if got, err := rdb.PFCount(ctx, key2).Result(); err != nil || got != s.Count() {
			t.Fatalf("n=%d: after PFADD: PFCOUNT %d (%v), Count %d", n, got, err, s.Count())
		}
		rdb.Del(ctx, key, key2)
		if n > 100 {
			if rel := math.Abs(float64(s.Count())-float64(n+300)) / float64(n+300); rel > 4*logic.HLLStdError {
				t.Fatalf("n=%d: relative error %.4f beyond 4σ", n, rel)
			}
		}
	}
}
