package speed_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/speed"
)

// tierYAML is cfgYAML with the tier of each view.
func tierYAML(byCountry, total string) string {
	return speed.OrdersYAML + "views:" + strings.Replace(byCountryYAML, "    window: 1m\n", "    window: 1m\n    tier: "+byCountry+"\n", 1) + `  total:
    stream: orders
    window: 10m
    tier: ` + total + `
    measures: { n: count() }
`
}

// TestTierSwitches runs the speed layer over one log and one Redis with
// the views' tiers switched between runs: a batch-tier view keeps no speed
// state (its keys and its part of the position are deleted, nothing is
// folded into it, also while events arrive), the live views of the stream
// stay exact; switched back to live it is rebuilt from the log and exact;
// a stream whose views are all batch-tier keeps nothing in Redis (no
// position either), and a live view after that starts it afresh. The tier
// is no part of a view's definition: its state key stays.
func TestTierSwitches(t *testing.T) {
	ctx := context.Background()
	e := setup(t)
	rdb := e.redis.Client(t)
	compile := func(yaml string) *config.Catalog {
		t.Helper()
		cfg, err := config.Parse([]byte(yaml), nil)
		if err != nil {
			t.Fatal(err)
		}
		cat, err := cfg.Compile([]byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		return cat
	}
	keysOf := func(pattern string) []string {
		keys, err := rdb.Keys(ctx, pattern).Result()
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	byCountryOnly := func() string {
		return e.verifyViews(e.sent, 0, []viewCheck{{"by_country", 60000, true, func(f []any, a *agg) bool { return f[0] == int64(a.n) }}})
	}
	// noState says what the speed store still holds of state key key.
	noState := func(key string) string {
		if ks := keysOf(e.ns + ":v:*:" + key + ":*"); len(ks) > 0 {
			return fmt.Sprintf("%d keys of %s left, e.g. %s", len(ks), key, ks[0])
		}
		pos, _, err := e.store.Position(ctx, "orders", 0)
		if err != nil {
			return err.Error()
		}
		if _, ok := pos.Views[key]; ok {
			return key + " is still in the position"
		}
		return ""
	}
	run := func(cat *config.Catalog) func() {
		e.cat = cat
		_, stop, _ := e.layer(t)
		return stop
	}

	live := compile(tierYAML("live", "live"))
	totalKey := live.Views["total"].StateKey()
	stop := run(live)
	e.publish(t, 800, 40)
	eventually(t, "both views live", e.verify)
	stop()

	// total becomes batch-tier: its state goes, by_country stays exact.
	batchTotal := compile(tierYAML("live", "batch"))
	if batchTotal.Views["total"].StateKey() != totalKey {
		t.Fatal("the tier changed the view's definition")
	}
	stop = run(batchTotal)
	e.publish(t, 300, 10)
	eventually(t, "total dropped, by_country exact", func() string {
		if msg := noState(totalKey); msg != "" {
			return msg
		}
		return byCountryOnly()
	})
	e.publish(t, 300, 10)
	eventually(t, "by_country exact while events arrive", byCountryOnly)
	if msg := noState(totalKey); msg != "" {
		t.Fatalf("a batch-tier view got speed state: %s", msg)
	}
	stop()

	// Back to live: total is rebuilt from the log beside by_country.
	stop = run(live)
	e.publish(t, 200, 0)
	eventually(t, "total rebuilt", e.verify)
	stop()

	// Every view batch-tier: the stream keeps nothing in Redis.
	stop = run(compile(tierYAML("batch", "batch")))
	e.publish(t, 100, 0)
	eventually(t, "the stream's speed state dropped", func() string {
		if ks := keysOf(e.ns + ":v:*"); len(ks) > 0 {
			return fmt.Sprintf("%d cell keys left, e.g. %s", len(ks), ks[0])
		}
		if _, found, err := e.store.Position(ctx, "orders", 0); err != nil || found {
			return fmt.Sprintf("position found %v (%v)", found, err)
		}
		return ""
	})
	stop()

	// Live again: a fresh start from the log (the cutoff is 0 here).
	stop = run(live)
	e.publish(t, 100, 0)
	eventually(t, "both views live again", e.verify)
	stop()
}
