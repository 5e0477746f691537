package eventlog_test

import (
	"context"
	"testing"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// Options left zero take the configuration's defaults: the streams a log
// opened without a configuration creates are the ones `braid up` creates
// from the default configuration.
func TestZeroOptionsTakeTheConfigurationDefaults(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	ns := testenv.Namespace(t)
	l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: ns, Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	def := config.Default().NATS
	for _, name := range []string{l.StreamName("orders", 0), ns + "_dlq", ns + "_late"} {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		cfg := st.CachedInfo().Config
		if cfg.Duplicates != def.DedupWindow.D() || cfg.Replicas != def.Replicas {
			t.Errorf("%s: dedup window %v, replicas %d; the configuration's defaults are %v and %d", name, cfg.Duplicates, cfg.Replicas, def.DedupWindow.D(), def.Replicas)
		}
	}
}
