package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// redisApp is an app over a configuration whose redis section is given,
// with stream s of three partitions.
func redisApp(t *testing.T, redisSection string) *app {
	t.Helper()
	cfg, err := config.Parse([]byte(redisSection+`
data_dir: `+t.TempDir()+`
namespace: `+testenv.Namespace(t)+`
streams:
  s:
    time: ts
    fields: { ts: time }
    partitions: 3
views:
  v:
    stream: s
    window: 1m
    measures: { n: count() }
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	a := &app{cfg: cfg, cat: cat, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// TestConnectRedis: one server's URL makes single-server clients whose
// store announces commits by PUBLISH; a cluster's seeds with cluster: true
// make cluster clients (sharded notices). Either way the commit notifier
// hears a commit of every partition, with its partition.
func TestConnectRedis(t *testing.T) {
	for _, c := range []struct {
		name    string
		section func(t *testing.T) string
		cluster bool
	}{
		{"Server", func(t *testing.T) string { return `redis: { url: "` + testenv.StartRedis(t).URL + `" }` }, false},
		{"Cluster", func(t *testing.T) string {
			return `redis: { url: "` + testenv.StartRedisCluster(t).Seeds() + `", cluster: true }`
		}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			a := redisApp(t, c.section(t))
			if err := a.connectRedis(ctx, false); err != nil {
				t.Fatal(err)
			}
			_, isCluster := a.rdb.(*redis.ClusterClient)
			_, qIsCluster := a.qrdb.(*redis.ClusterClient)
			if isCluster != c.cluster || qIsCluster != c.cluster || a.store.ShardedNotices() != c.cluster {
				t.Fatalf("cluster clients %v %v, sharded notices %v; want %v", isCluster, qIsCluster, a.store.ShardedNotices(), c.cluster)
			}
			if c.cluster {
				if o := a.rdb.(*redis.ClusterClient).Options(); o.ClusterStateReloadInterval != redisClusterReload || len(o.Addrs) != 6 {
					t.Fatalf("cluster options: reload %v, %d seeds", o.ClusterStateReloadInterval, len(o.Addrs))
				}
			}
			n := a.servingOptions(&layers{qstore: a.qstore}).Notifier
			if n == nil {
				t.Fatal("no commit notifier")
			}
			notices := n.Subscribe(ctx)
			v := a.cat.Views["v"]
			heard := map[int]uint64{}
			seq := make([]uint64, 3)
			deadline := time.Now().Add(30 * time.Second)
			for len(heard) < 3 { // the subscriptions are made in the background
				if time.Now().After(deadline) {
					t.Fatalf("notices of partitions %v only after 30s", heard)
				}
				for p := range 3 {
					if err := a.store.Commit(ctx, "s", p, seq[p], speedstore.Position{Seq: seq[p] + 1}, 0, []*logic.Delta{v.NewDelta()}); err != nil {
						t.Fatal(err)
					}
					seq[p]++
				}
				for drained := false; !drained; {
					select {
					case m := <-notices:
						if m.Stream != "s" || m.Part < 0 || m.Part > 2 || m.Seq == 0 || m.Seq > seq[m.Part] {
							t.Fatalf("notice %+v after commits up to %v", m, seq)
						}
						heard[m.Part] = m.Seq
					case <-time.After(200 * time.Millisecond):
						drained = true
					}
				}
			}
			cancel()
			for range notices { // closed once the subscriptions end
			}
		})
	}
}

// TestParseSeeds: a cluster's seeds share their credentials and use
// database 0; the options take the first's settings and every address.
func TestParseSeeds(t *testing.T) {
	seeds, err := parseSeeds("redis://u:p@a:7000?pool_size=5, redis://u:p@b:7001/0")
	if err != nil {
		t.Fatal(err)
	}
	o := clusterOptions(seeds, redisSpeedPool, redisSpeedPoolTimeout)
	if strings.Join(o.Addrs, ",") != "a:7000,b:7001" || o.Username != "u" || o.Password != "p" || o.PoolSize != 5 ||
		o.PoolTimeout != redisSpeedPoolTimeout || o.ReadTimeout != redisTimeout || o.ClusterStateReloadInterval != redisClusterReload {
		t.Fatalf("cluster options %+v", o)
	}
	for in, want := range map[string]string{
		"redis://a:7000,redis://b:7000/2":       "only database 0",
		"redis://u:p@a:7000,redis://u:q@b:7000": "different users or passwords",
		"redis://a:7000,http://b:7000":          "redis.url",
	} {
		if _, err := parseSeeds(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("parseSeeds(%q): %v, want %q", in, err, want)
		}
	}
}
