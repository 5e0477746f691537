package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisCluster is a Redis Cluster of six redis-server processes on
// 127.0.0.1: three masters, each with one replica. A node's timeout is
// clusterNodeTimeout, so a SIGKILLed master's replica takes its slots over
// a few seconds later. Each node writes an append-only file (fsync every
// second) and its cluster configuration in a directory of its own, so a
// node restarted on its port and directory (Restart) rejoins the cluster,
// as a replica of the node that took its slots over.
type RedisCluster struct {
	Nodes []*RedisNode
}

// RedisNode is one redis-server of a RedisCluster.
type RedisNode struct {
	Addr    string
	Port    int
	BusPort int // the cluster bus (--cluster-port)
	Dir     string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// clusterNodeTimeout is the cluster's cluster-node-timeout: how long a
// node is unreachable before the others fail it over.
const clusterNodeTimeout = 2 * time.Second

// StartRedisCluster starts six redis-server processes with cluster mode on
// free ports, joins them into one cluster (redis-cli --cluster create,
// one replica per master) and waits until every node says the cluster is
// ok and every replica is in sync with its master. The processes are
// killed and their directories removed at the end of the test.
func StartRedisCluster(t testing.TB) *RedisCluster {
	t.Helper()
	c := &RedisCluster{}
	used := map[int]bool{}
	port := func() int { // free, and not taken by another node of the cluster
		for {
			if p := FreePort(t); !used[p] {
				used[p] = true
				return p
			}
		}
	}
	for range 6 {
		n := &RedisNode{Port: port(), BusPort: port(), Dir: t.TempDir()}
		n.Addr = "127.0.0.1:" + strconv.Itoa(n.Port)
		c.Nodes = append(c.Nodes, n)
	}
	// Registered after the directories, so it runs before they are removed.
	t.Cleanup(func() {
		for _, n := range c.Nodes {
			n.kill()
		}
	})
	for _, n := range c.Nodes {
		n.start(t)
	}
	for _, n := range c.Nodes {
		n.waitPing(t)
	}
	args := []string{"--cluster", "create"}
	for _, n := range c.Nodes {
		args = append(args, n.Addr)
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command(redisCLIPath(t), args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy(t, 60*time.Second)
	return c
}

// redisCLIPath finds redis-cli (it comes with redis-server) or fails the test.
func redisCLIPath(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redis-cli not found on PATH: install redis-server (apt-get install redis-server); scripts/provision (make test) does")
	}
	return p
}

func (n *RedisNode) start(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		t.Fatalf("redis-server %s already running", n.Addr)
	}
	cmd := exec.Command(RedisServerPath(t), "--port", strconv.Itoa(n.Port), "--bind", "127.0.0.1", "--protected-mode", "no",
		"--dir", n.Dir, "--logfile", filepath.Join(n.Dir, "redis.log"),
		"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", strconv.Itoa(n.BusPort),
		"--cluster-node-timeout", strconv.FormatInt(clusterNodeTimeout.Milliseconds(), 10),
		// A replica fails its master over however long it was cut off.
		"--cluster-replica-validity-factor", "0",
		"--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	n.cmd, n.done = cmd, done
}

// waitPing waits until the node answers PING.
func (n *RedisNode) waitPing(t testing.TB) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: n.Addr})
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("redis-server %s not ready:\n%s", n.Addr, n.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process (idempotent).
func (n *RedisNode) kill() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	n.cmd, n.done = nil, nil
}

// Log is the node's log file so far.
func (n *RedisNode) Log() string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "redis.log"))
	return string(b)
}

// Seeds returns the nodes' addresses as redis:// URLs separated by commas
// (the form of redis.url with redis.cluster: true).
func (c *RedisCluster) Seeds() string {
	urls := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		urls[i] = "redis://" + n.Addr
	}
	return strings.Join(urls, ",")
}

// Client returns a cluster client over every node that reloads its slot
// map every second (as braid's does); it is closed at the end of the test.
func (c *RedisCluster) Client(t testing.TB) *redis.ClusterClient {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, ClusterStateReloadInterval: time.Second,
		DialTimeout: 2 * time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = rc.Close() })
	return rc
}

// MasterOf returns the index (in Nodes) of the master that serves key's
// slot now, as the first running node that answers CLUSTER SLOTS says.
func (c *RedisCluster) MasterOf(t testing.TB, key string) int {
	t.Helper()
	ctx := context.Background()
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: n.Addr})
		slot, err := rc.ClusterKeySlot(ctx, key).Result()
		var slots []redis.ClusterSlot
		if err == nil {
			slots, err = rc.ClusterSlots(ctx).Result()
		}
		_ = rc.Close()
		if err != nil {
			continue
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) && len(s.Nodes) > 0 {
				for i, m := range c.Nodes {
					if m.Addr == s.Nodes[0].Addr {
						return i
					}
				}
			}
		}
	}
	t.Fatalf("no node serves the slot of %q", key)
	return -1
}

// running reports whether the node was started and not killed; exited
// tells one that died by itself.
func (n *RedisNode) running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

func (n *RedisNode) exited() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// Kill sends SIGKILL to node i and waits for it to exit. The other nodes
// notice after the node timeout; a killed master's replica then takes its
// slots over.
func (c *RedisCluster) Kill(i int) { c.Nodes[i].kill() }

// Restart starts node i again on its port and directory and waits until
// the cluster is healthy again (WaitHealthy): it rejoins, a master that
// was failed over as a replica of its successor.
func (c *RedisCluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.Nodes[i].start(t)
	c.Nodes[i].waitPing(t)
	c.WaitHealthy(t, 60*time.Second)
}

// WaitHealthy waits until every running node says cluster_state:ok, knows
// every other running node as connected, and every running replica's link
// to its master is up (so a master's writes reach its replica).
func (c *RedisCluster) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	var why string
	for {
		why = c.unhealthy(ctx)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis cluster not healthy after %v: %s", timeout, why)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// unhealthy says why the cluster is not healthy yet ("" when it is).
func (c *RedisCluster) unhealthy(ctx context.Context) string {
	running := 0
	for _, n := range c.Nodes {
		if n.running() {
			running++
		}
	}
	for _, n := range c.Nodes {
		if !n.running() {
			continue
		}
		if n.exited() {
			return n.Addr + " exited:\n" + n.Log()
		}
		rc := redis.NewClient(&redis.Options{Addr: n.Addr})
		why := nodeUnhealthy(ctx, rc, running)
		_ = rc.Close()
		if why != "" {
			return n.Addr + ": " + why
		}
	}
	return ""
}

func nodeUnhealthy(ctx context.Context, rc *redis.Client, running int) string {
	info, err := rc.ClusterInfo(ctx).Result()
	if err != nil {
		return err.Error()
	}
	if !strings.Contains(info, "cluster_state:ok") {
		return "cluster_state not ok"
	}
	nodes, err := rc.ClusterNodes(ctx).Result()
	if err != nil {
		return err.Error()
	}
	connected := 0
	for _, line := range strings.Split(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && f[7] == "connected" && !strings.Contains(f[2], "fail") {
			connected++
		}
	}
	if connected != running {
		return fmt.Sprintf("%d nodes connected, %d running:\n%s", connected, running, nodes)
	}
	repl, err := rc.Info(ctx, "replication").Result()
	if err != nil {
		return err.Error()
	}
	if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
		return "replica not in sync"
	}
	return ""
}
