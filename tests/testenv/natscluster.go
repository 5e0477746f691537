package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSCluster is a JetStream cluster of nats-server processes
// (NatsServerBin) on one machine, each with its own client and route
// ports and store directory, so a test can kill -9 a node and start it
// again while clients stay connected to the others.
type NATSCluster struct {
	Nodes []*NATSProc
}

// natsClusterName is the cluster's name; node i is the server n<i>.
const natsClusterName = "braid"

// StartNATSCluster starts an n-node JetStream cluster and waits until it
// answers JetStream requests (its meta leader elected); the nodes are
// killed at the end of the test.
func StartNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	c := NewNATSCluster(t, n)
	c.StartAll(t)
	c.WaitReady(t)
	return c
}

// NewNATSCluster configures an n-node cluster without starting it: Start
// or Restart each node (in any order), WaitReady for JetStream. The
// running nodes are killed at the end of the test.
func NewNATSCluster(t testing.TB, n int) *NATSCluster {
	t.Helper()
	c := &NATSCluster{Nodes: make([]*NATSProc, n)}
	routes := make([]int, n)
	for i := range n {
		routes[i] = FreePort(t)
		p := &NATSProc{Port: FreePort(t), Dir: t.TempDir()}
		p.URL = fmt.Sprintf("nats://127.0.0.1:%d", p.Port)
		c.Nodes[i] = p
	}
	for i, p := range c.Nodes {
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, fmt.Sprintf("nats-route://127.0.0.1:%d", r))
			}
		}
		conf := fmt.Sprintf(`server_name: %s
listen: "127.0.0.1:%d"
jetstream { store_dir: %q }
cluster {
  name: %s
  listen: "127.0.0.1:%d"
  routes: [%s]
}
`, nodeName(i), p.Port, filepath.Join(p.Dir, "js"), natsClusterName, routes[i], strings.Join(others, ", "))
		file := filepath.Join(p.Dir, "nats.conf")
		if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		p.args = []string{"-c", file}
	}
	t.Cleanup(func() {
		for i, p := range c.Nodes {
			p.Kill()
			if t.Failed() {
				t.Logf("nats-server %s output:\n%s", nodeName(i), p.Output())
			}
		}
	})
	return c
}

func nodeName(i int) string { return fmt.Sprintf("n%d", i) }

// StartAll starts every node at once and waits until each accepts
// connections (not until the cluster is ready: see WaitReady).
func (c *NATSCluster) StartAll(t testing.TB) {
	t.Helper()
	bin := NatsServerBin(t)
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, p := range c.Nodes {
		wg.Go(func() { errs[i] = p.start(bin) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("nats-server %s: %v", nodeName(i), err)
		}
	}
}

// Start starts node i (again), on its ports and store directory, and
// waits until it accepts connections (not until the cluster is ready:
// see WaitReady).
func (c *NATSCluster) Start(t testing.TB, i int) {
	t.Helper()
	c.Nodes[i].Start(t)
}

// Kill sends SIGKILL to node i and waits for it to end (idempotent).
func (c *NATSCluster) Kill(i int) { c.Nodes[i].Kill() }

// Restart starts node i again after Kill (or kills it first when it is
// running), on its ports and store directory.
func (c *NATSCluster) Restart(t testing.TB, i int) {
	t.Helper()
	c.Nodes[i].Kill()
	c.Nodes[i].Start(t)
}

// URLs are the client URLs of every node, comma-separated (the form of
// nats.url).
func (c *NATSCluster) URLs() string {
	urls := make([]string, len(c.Nodes))
	for i, p := range c.Nodes {
		urls[i] = p.URL
	}
	return strings.Join(urls, ",")
}

// Conn connects to the cluster (any node, reconnecting to another when
// its node goes away, forever); the connection closes with the test.
func (c *NATSCluster) Conn(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatalf("nats connect %s: %v", c.URLs(), err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	return nc, js
}

// WaitReady waits until the cluster answers JetStream requests (a meta
// leader is elected), failing the test after a generous deadline.
func (c *NATSCluster) WaitReady(t testing.TB) {
	t.Helper()
	_, js := c.Conn(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("NATS cluster not ready after 60s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StreamLeader is the index of the node leading a JetStream stream,
// waiting (generously) while it has none.
func (c *NATSCluster) StreamLeader(t testing.TB, stream string) int {
	t.Helper()
	_, js := c.Conn(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		var leader string
		s, err := js.Stream(ctx, stream)
		if err == nil {
			var info *jetstream.StreamInfo
			if info, err = s.Info(ctx); err == nil && info.Cluster != nil {
				leader = info.Cluster.Leader
			}
		}
		cancel()
		for i := range c.Nodes {
			if leader == nodeName(i) {
				return i
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s: no leader after 60s (leader %q, %v)", stream, leader, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
