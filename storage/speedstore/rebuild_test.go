package speedstore_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// TestBeginRebuildClearsLeftovers: cells a rebuild that died before it
// began left behind (written with no position) are cleared when a rebuild
// of the key begins, so the rebuild folds every record exactly once. (The
// rebuild's contract is in storagetest's speed store suite.)
func TestBeginRebuildClearsLeftovers(t *testing.T) {
	ctx := context.Background()
	r := testenv.StartRedis(t)
	st := speedstore.New(r.Client(t), testenv.Namespace(t))
	a := storagetest.SpeedView(t)
	b, err := logic.NewView("by_country_2", logic.ViewDef{Stream: "orders", Window: 60e9, GroupBy: []string{"country"},
		Measures: []logic.MeasureDef{ // a's, in another order (check reads them by name)
			{Name: "ihi", Expr: "max(items)"}, {Name: "ilo", Expr: "min(items)"}, {Name: "avg", Expr: "avg(amount)"},
			{Name: "hi", Expr: "max(amount)"}, {Name: "lo", Expr: "min(amount)"}, {Name: "items", Expr: "sum(items)"},
			{Name: "rev", Expr: "sum(amount)"}, {Name: "n", Expr: "count()"}}}, a.Stream)
	if err != nil {
		t.Fatal(err)
	}
	evs := storagetest.RandomSpeedEvents(rand.New(rand.NewPCG(3, 4)), 500)
	if err := st.Commit(ctx, "orders", 0, 0, speedstore.Position{Seq: 10}, 0, []*logic.Delta{storagetest.FoldSpeed(a, evs)}); err != nil {
		t.Fatal(err)
	}
	if err := st.CommitRebuildUnfenced(ctx, storagetest.FoldSpeed(b, evs[:100])); err != nil {
		t.Fatal(err)
	}
	if cells, _ := st.Read(ctx, b, 0, 1<<40, 0); len(cells) == 0 {
		t.Fatal("the leftover cells were not written")
	}
	if _, err := st.BeginRebuild(ctx, "orders", 0, b.StateKey(), 0); err != nil {
		t.Fatal(err)
	}
	if cells, _ := st.Read(ctx, b, 0, 1<<40, 0); len(cells) != 0 {
		t.Fatalf("%d cells left from before the rebuild began", len(cells))
	}
	if joined, err := st.CommitRebuild(ctx, "orders", 0, 0, 1, 10, storagetest.FoldSpeed(b, evs)); err != nil || !joined {
		t.Fatalf("rebuild 1..10: joined %v, %v", joined, err)
	}
	cells, err := st.Read(ctx, b, 0, 1<<40, 0)
	if err != nil {
		t.Fatal(err)
	}
	storagetest.CheckSpeedCells(t, a, cells, storagetest.ExpectedSpeedCells(evs, 0, 0, 1<<40))
}
