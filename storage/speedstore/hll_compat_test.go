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
		if *r != s {
			t.Fatalf("n=%d: registers differ from Redis's", n)
		}
		if n > 100 {
			if rel := math.Abs(float64(s.Count())-float64(n)) / float64(n); rel > 4*logic.HLLStdError {
				t.Fatalf("n=%d: relative error %.4f beyond 4σ", n, rel)
			}
		}
	}
}
