package speedstore_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

func entityOver(t testing.TB, partitions int, partitionBy string) *logic.Entity {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id", Partitions: partitions, PartitionBy: partitionBy,
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "customer": logic.TypeString, "amount": logic.TypeFloat}}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	e, err := logic.NewEntity("customer", logic.EntityDef{Stream: "orders", Key: "customer", Features: []logic.FeatureDef{
		{Name: "n", Measure: "count()", Over: time.Hour}, {Name: "spend", Measure: "sum(amount)", Over: time.Hour}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestEntityCommitAndMaterialise follows one key through the store:
// speed commits append its events per epoch under the partition's
// generation; the entity answers 503 (ErrEntityBuilding) until a
// materialisation reaches the join; a materialisation replaces the epochs
// it covers with days atomically; a fresh position starts a new
// generation whose reader ignores the old fields, which the next write
// drops.
func TestEntityCommitAndMaterialise(t *testing.T) {
	ctx := context.Background()
	rdb := testenv.StartRedis(t).Client(t)
	st := speedstore.New(rdb, testenv.Namespace(t))
	e := entityOver(t, 1, "")
	ents := map[string]*logic.Entity{"customer": e}
	now := time.Now().UnixMilli()
	epoch := time.Second
	ev := func(seq uint64, amount float64, arrival int64) (logic.Event, int64) {
		raw := fmt.Sprintf(`{"ts":%d,"id":"o%d","customer":"c1","amount":%v}`, arrival-1000, seq, amount)
		x, _, err := e.Stream.Prepare([]byte(raw), arrival)
		if err != nil {
			t.Fatal(err)
		}
		return x, arrival
	}
	commit := func(prev, next uint64, join int64, arrivals ...int64) {
		d := e.NewDelta()
		d.Join = join
		for i, a := range arrivals {
			x, _ := ev(next*100+uint64(i), 10, a)
			d.Fold(logic.EpochOf(a, epoch), a, 0, next, i, &x)
		}
		if err := st.Commit(ctx, "orders", 0, prev, speedstore.Position{Seq: next, LastArrival: arrivals[len(arrivals)-1]}, 0, nil, d); err != nil {
			t.Fatal(err)
		}
	}
	hash := st.EntityKey(e, 0, "c1")
	speedFields := func() []string {
		var out []string
		for _, f := range rdb.HKeys(ctx, hash).Val() {
			if strings.HasPrefix(f, "s:") {
				out = append(out, f)
			}
		}
		slices.Sort(out)
		return out
	}
	r := &speedstore.EntityReader{Store: st, Entities: ents}
	read := func() (int64, float64) {
		t.Helper()
		a, err := r.Read(ctx, "customer", []string{"c1"}, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		return a[0].Values[0].I, a[0].Values[1].F
	}

	// A fresh position: the entity joins at freshFrom (0) and answers at once.
	commit(0, 1, 0, now-5000, now-4900)
	commit(1, 2, 0, now-3000)
	if n, s := read(); n != 3 || s != 30 {
		t.Fatalf("speed only: n=%d spend=%v, want 3, 30", n, s)
	}
	if got := speedFields(); len(got) != 2 {
		t.Fatalf("speed fields %v, want one per epoch", got)
	}

	// A materialisation up to a cutoff between the epochs: the key's days
	// hold the two events before it, the epoch before it is dropped.
	cut := logic.EpochOf(now-4000, epoch)
	var days []byte
	for i, a := range []int64{now - 5000, now - 4900} {
		x, _ := ev(100+uint64(i), 10, a)
		ee := e.EventOf(&x, a, 0, 1, i)
		days = e.AppendEvent(days, &ee)
	}
	if err := st.WriteEntityDays(ctx, e, cut, logic.DayOf(now)-logic.DayMs, []speedstore.EntityDays{{Key: "c1", Days: map[int64][]byte{logic.DayOf(now - 5000): days}}}); err != nil {
		t.Fatal(err)
	}
	if got := speedFields(); len(got) != 1 {
		t.Fatalf("after the write, speed fields %v, want the epoch after the cutoff", got)
	}
	if n, s := read(); n != 3 || s != 30 {
		t.Fatalf("batch ⊕ speed: n=%d spend=%v, want 3, 30", n, s)
	}

	// Redis loses the position (a reset): a fresh position is a new
	// generation; the old epoch is never read again, the batch days are.
	if err := st.Reset(ctx, "orders", 0, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(ctx, "customer", []string{"c1"}, 0, false); !errors.Is(err, speedstore.ErrEntityBuilding) {
		t.Fatalf("without a position: %v, want ErrEntityBuilding", err)
	}
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 5}, cut, nil, e.NewDelta()); err != nil {
		t.Fatal(err)
	}
	// The entity joined at cut, which no materialisation reached yet.
	if _, err := r.Read(ctx, "customer", []string{"c1"}, 0, false); !errors.Is(err, speedstore.ErrEntityBuilding) {
		t.Fatalf("joined past the materialisation: %v, want ErrEntityBuilding", err)
	}
	if err := st.SetEntityMat(ctx, e, speedstore.EntityMat{Cutoff: cut}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the reader's record is at most a second old
	if n, s := read(); n != 2 || s != 20 {
		t.Fatalf("new generation, nothing refolded yet: n=%d spend=%v, want the batch days' 2, 20", n, s)
	}
	// The speed layer refolds the event after the cutoff under the new
	// generation; the old generation's field goes at the next write.
	commit(5, 6, 0, now-3000)
	if n, s := read(); n != 3 || s != 30 {
		t.Fatalf("refolded: n=%d spend=%v, want 3, 30", n, s)
	}
	if err := st.WriteEntityDays(ctx, e, cut, logic.DayOf(now)-logic.DayMs, []speedstore.EntityDays{{Key: "c1", Days: map[int64][]byte{logic.DayOf(now - 5000): days}}}); err != nil {
		t.Fatal(err)
	}
	if got := speedFields(); len(got) != 1 {
		t.Fatalf("speed fields %v, want only the current generation's", got)
	}
	if ttl := rdb.PTTL(ctx, hash).Val(); ttl <= 0 || ttl > e.Expiry() {
		t.Fatalf("key expiry %v, want within %v", ttl, e.Expiry())
	}
}
