package ingest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// fixedFeatures answers the same features for every key.
type fixedFeatures struct{}

func (fixedFeatures) Lookup(_ context.Context, _ string, keys []string) ([]map[string]logic.Value, error) {
	m := map[string]logic.Value{"orders_1h": {Kind: logic.TypeInt, I: 1}, "avg_basket_30d": {Kind: logic.TypeFloat, F: 40},
		"last_country": {Kind: logic.TypeString, S: "DE"}}
	out := make([]map[string]logic.Value, len(keys))
	for i := range out {
		out[i] = m
	}
	return out, nil
}

// BenchmarkIngest100: requests of 100 orders through the ingest use case
// into a real JetStream log, without decisions and with the four rules of
// decideCatalog (features answered in memory, so what is measured is the
// decisions' own cost: one lookup per request, the rules, the blocked and
// review records). One op is one request; events/s is reported.
func BenchmarkIngest100(b *testing.B) {
	ctx := context.Background()
	_, js := testenv.StartNATS(b).JetStream(b)
	l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(b), DedupWindow: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	s := decideStream(b)
	in := ingest.NewIngester(l, decideCatalog(b, s), nil, ingest.WithFeatures(fixedFeatures{}))
	rng := rand.New(rand.NewPCG(1, 2))
	for _, decide := range []bool{false, true} {
		b.Run(fmt.Sprintf("decide=%v", decide), func(b *testing.B) {
			run := in.IngestSeq
			if decide {
				run = in.DecideSeq
			}
			n := 0
			for b.Loop() {
				orders := randomOrders(rng, n, 100, time.Now().UnixMilli())
				raws := make([][]byte, len(orders))
				for i, o := range orders {
					o.id = fmt.Sprintf("b%v-%d-%d", decide, n, i)
					raws[i] = o.json()
				}
				n++
				if _, err := run(ctx, "orders", slices.Values(raws), "http"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
