package speedstore_test

import (
	"testing"

	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

var _ storagetest.SpeedStore = (*speedstore.Store)(nil)

// TestConformance holds the Redis store to the speed store's contract, on
// a redis-server of its own.
func TestConformance(t *testing.T) {
	r := testenv.StartRedis(t)
	storagetest.RunSpeedStore(t, func(t *testing.T) func() storagetest.SpeedStore {
		ns := testenv.Namespace(t)
		return func() storagetest.SpeedStore { return speedstore.New(r.Client(t), ns) }
	})
}

// TestConformanceCluster holds the store to the same contract on a Redis
// Cluster of its own (three masters, three replicas), through cluster
// clients: every script and pipeline keeps to the slots it may touch.
func TestConformanceCluster(t *testing.T) {
	c := testenv.StartRedisCluster(t)
	storagetest.RunSpeedStore(t, func(t *testing.T) func() storagetest.SpeedStore {
		ns := testenv.Namespace(t)
		return func() storagetest.SpeedStore { return speedstore.New(c.Client(t), ns) }
	})
}
