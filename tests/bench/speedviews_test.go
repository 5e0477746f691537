package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/speed"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// speedViewVariants are the views of the speed curve, in the order they are
// added: windows 1m..1d crossed with four groupings, 5 measures each, over
// layersCatalog's orders stream (50 countries, 3 channels, 24 h of event time).
func speedViewVariants() []testenv.View {
	windows := []string{"1m", "5m", "15m", "1h", "1d"}
	groupings := [][]string{{"country"}, {"channel"}, {}, {"country", "channel"}}
	var out []testenv.View
	for g, grouping := range groupings {
		for w := range windows {
			out = append(out, testenv.View{Name: fmt.Sprintf("v%02d", len(out)), Stream: "orders", Window: windows[(w+g)%len(windows)], GroupBy: grouping,
				Measures: []string{"n: count()", "rev: sum(amount)", "avg: avg(amount)", "lo: min(amount)", "hi: max(items)"}})
		}
	}
	return out
}

// TestBenchSpeedViews: the speed layer's events/s folding the same records
// into 1, 5 and 20 views (5 measures each), committed to Redis, next to the
// raw consume of those records (and of the same events one message each,
// the log's layout before packing): how the speed layer's cost grows with the
// views of a stream. Twice: with event times spread over 24 h in random
// order (layers_test.go's records: nearly every event its own cell, the
// worst case) and with live traffic (event times in the last 5 minutes).
func TestBenchSpeedViews(t *testing.T) {
	benchOnly(t)
	// Spread records cost a Redis cell each (slow): fewer of them.
	nLive := envInt(t, "BRAID_BENCH_SPEED_EVENTS", 200_000)
	nSpread := envInt(t, "BRAID_BENCH_SPEED_SPREAD_EVENTS", 50_000)
	counts := envInts(t, "BRAID_BENCH_SPEED_VIEWS", []int{1, 5, 20})
	variants := speedViewVariants()
	for _, k := range counts {
		if k > len(variants) {
			t.Fatalf("BRAID_BENCH_SPEED_VIEWS: at most %d views", len(variants))
		}
	}
	catalog := layersCatalog()
	ctx := context.Background()
	redis := testenv.StartRedis(t)
	rdb := redis.Client(t)
	var perMessage float64 // raw consume of the events one message each
	for _, set := range []struct {
		suffix, what string
		env          func() *layerEnv
	}{
		{"", "event times over 24 h", func() *layerEnv { return setupLayers(t, nSpread, 24*time.Hour) }},
		{"_live", "event times in the last 5 min", func() *layerEnv { return setupLayers(t, nLive, 5*time.Minute) }},
	} {
		e := set.env()
		n := e.n
		limit := e.rawConsume(t, "raw-speed-views")
		if perMessage == 0 {
			// Once, on the first set's events (cycled to the larger set's count).
			perMessage = rawConsumePerEvent(t, e.events(t), min(max(nLive, nSpread), perEventLimit))
		}
		var curve []string
		for _, k := range counts {
			catalog.Views = variants[:k]
			cfg, err := config.Parse([]byte(catalog.YAML()), nil)
			if err != nil {
				t.Fatal(err)
			}
			cat, err := cfg.Compile([]byte("k"))
			if err != nil {
				t.Fatal(err)
			}
			if err := rdb.FlushDB(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			store := speedstore.New(rdb, testenv.Namespace(t))
			sp := speed.New(speed.Config{BatchSize: 2000, MaxWait: 25 * time.Millisecond, Epoch: 10 * time.Second, MaxCells: 50000}, e.log, store, zeroCutoff{}, nil, cat, nil, nil)
			d := runUntil(t, sp.Run, func() bool { p, _, _ := store.Position(ctx, "orders", 0); return p.Seq >= e.last })
			rate := float64(n) / d.Seconds()
			report(t, fmt.Sprintf("speed_%dviews_5measures%s", k, set.suffix), rate, "events/s", limit)
			report(t, fmt.Sprintf("speed_%dviews_5measures%s_vs_per_message", k, set.suffix), rate, "events/s", perMessage)
			curve = append(curve, fmt.Sprintf("%d=%.0f", k, rate))
		}
		fmt.Printf("bench: speed_views_curve%s events/s by views (%s): %s (raw consume %.0f, per-message consume %.0f)\n", set.suffix, set.what, strings.Join(curve, " "), limit, perMessage)
	}
}
