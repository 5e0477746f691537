package speedstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// BenchmarkEntityLookup compares an entity lookup (one key: the pipelined
// HGETALL of its hash and the position's fields, decoding its events and
// computing the features) with a bare HGETALL of the same hash, with 4
// clients, over BRAID_BENCH_ENTITY_KEYS keys (default 100000) of 8 events
// each in two days. Run: go test ./storage/speedstore -run '^$' -bench EntityLookup
func BenchmarkEntityLookup(b *testing.B) {
	ctx := context.Background()
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("BRAID_BENCH_ENTITY_KEYS")); err == nil && v > 0 {
		n = v
	}
	rdb := testenv.StartRedis(b).Client(b)
	st := speedstore.New(rdb, "bench")
	e := entityOver(b, 1, "")
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 0}, 0, nil, e.NewDelta()); err != nil {
		b.Fatal(err)
	}
	now := time.Now().UnixMilli()
	var batch []speedstore.EntityDays
	for k := range n {
		d := speedstore.EntityDays{Key: fmt.Sprintf("c%07d", k), Days: map[int64][]byte{}}
		for i := range 8 {
			ts := now - int64(i)*20*60_000
			x, _, err := e.Stream.Prepare(fmt.Appendf(nil, `{"ts":%d,"id":"o%d-%d","customer":%q,"amount":%d.5}`, ts, k, i, d.Key, i), ts)
			if err != nil {
				b.Fatal(err)
			}
			ee := e.EventOf(&x, ts, 0, uint64(k*8+i), 0)
			d.Days[logic.DayOf(ts)] = e.AppendEvent(d.Days[logic.DayOf(ts)], &ee)
		}
		batch = append(batch, d)
		if len(batch) == 2000 || k == n-1 {
			if err := st.WriteEntityDays(ctx, e, now, logic.DayOf(now)-2*logic.DayMs, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if err := st.SetEntityMat(ctx, e, speedstore.EntityMat{Cutoff: now}); err != nil {
		b.Fatal(err)
	}
	r := &speedstore.EntityReader{Store: st, Entities: map[string]*logic.Entity{"customer": e}}
	b.Run("lookup", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			rng := rand.New(rand.NewPCG(rand.Uint64(), 1))
			for pb.Next() {
				if _, err := r.Read(ctx, "customer", []string{fmt.Sprintf("c%07d", rng.IntN(n))}, 0, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
	b.Run("hgetall", func(b *testing.B) {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
			for pb.Next() {
				if err := rdb.HGetAll(ctx, st.EntityKey(e, 0, fmt.Sprintf("c%07d", rng.IntN(n)))).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
