package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/tests/testenv"
)

// TestOpenLogWhileClusterStarts: processes started with a NATS cluster
// that is itself starting (its nodes one after the other, all at once, or
// two of them and the third later: electing leaders, too few nodes for R3
// streams) wait and open the event log: every partition's stream, R3, on
// the cluster given as several URLs.
func TestOpenLogWhileClusterStarts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start func(t *testing.T, c *testenv.NATSCluster)
	}{
		{"one after the other", func(t *testing.T, c *testenv.NATSCluster) {
			for i := range c.Nodes {
				time.Sleep(2 * time.Second)
				c.Start(t, i)
			}
		}},
		{"together", func(t *testing.T, c *testenv.NATSCluster) { c.StartAll(t) }},
		{"two, then the third", func(t *testing.T, c *testenv.NATSCluster) {
			time.Sleep(5 * time.Second)
			c.Start(t, 2)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testenv.NewNATSCluster(t, 3)
			cfg, err := config.Parse([]byte(fmt.Sprintf(`
data_dir: %s
namespace: %s
nats: { url: %q, replicas: 3 }
streams:
  orders:
    time: ts
    id: id
    partitions: 4
    fields: { ts: time, id: string }
views:
  v:
    stream: orders
    window: 10s
    measures: { c: count() }
`, t.TempDir(), testenv.Namespace(t), strings.ReplaceAll(c.URLs(), ",", ", "))), nil)
			if err != nil {
				t.Fatal(err)
			}
			// Three processes (say serve, speed and archive) start with it.
			apps := make([]*app, 3)
			for i := range apps {
				a, err := newApp(cfg, config.PIIKeyShared)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = a.Close() })
				apps[i] = a
			}
			if tc.name == "two, then the third" {
				c.Start(t, 0)
				c.Start(t, 1)
				c.WaitReady(t)
			}
			var wg sync.WaitGroup
			wg.Go(func() { tc.start(t, c) })
			errs := make([]error, len(apps))
			for i, a := range apps {
				wg.Go(func() { errs[i] = a.connectNATS(context.Background(), false) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("process %d: open the log: %v", i, err)
				}
			}
			a := apps[0]
			if got := a.log.Partitions("orders"); got != 4 {
				t.Fatalf("the log has %d partitions, want 4", got)
			}
			for p := range 4 {
				s, err := a.js.Stream(context.Background(), a.log.StreamName("orders", p))
				if err != nil {
					t.Fatal(err)
				}
				if r := s.CachedInfo().Config.Replicas; r != 3 {
					t.Fatalf("partition %d: %d replicas, want 3", p, r)
				}
			}
		})
	}
}
