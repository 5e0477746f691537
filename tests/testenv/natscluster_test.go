package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/tests/testenv"
)

// TestNATSCluster: a three-node cluster keeps an R3 stream through the
// loss of its leader: another node leads it, what was acknowledged is
// there, and the killed node comes back.
func TestNATSCluster(t *testing.T) {
	ctx := context.Background()
	c := testenv.StartNATSCluster(t, 3)
	_, js := c.Conn(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "s", Subjects: []string{"s.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	publish := func(subj string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, err := js.Publish(ctx, subj, []byte("x"))
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("publish %s: %v", subj, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	publish("s.a")
	leader := c.StreamLeader(t, "s")
	c.Kill(leader)
	publish("s.b")
	if now := c.StreamLeader(t, "s"); now == leader {
		t.Fatalf("node %d still leads after it was killed", leader)
	}
	c.Restart(t, leader)
	c.WaitReady(t)
	s, err := js.Stream(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 || info.Config.Replicas != 3 {
		t.Fatalf("after the failover: %d records, %d replicas; want 2 and 3", info.State.Msgs, info.Config.Replicas)
	}
	if len(c.URLs()) == 0 || len(c.Nodes) != 3 {
		t.Fatalf("URLs %q", c.URLs())
	}
}
