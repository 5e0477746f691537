package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/leases"
	"github.com/braid-data/braid/tests/testenv"
)

// TestSharedSpeedKill9: two `braid speed` processes share the 4 partitions
// of the orders stream (2 each) behind one `braid serve`; one is killed
// with SIGKILL while events are ingested over HTTP; the survivor takes its
// partitions (within the lease's 3 s and a tick) and the merged answer
// equals the events accepted, exactly.
func TestSharedSpeedKill9(t *testing.T) {
	c := faultCatalog()
	c.Streams[0].Partitions = 4
	st := testenv.NewStack(t, c.YAML(), testenv.WithNATS())
	ctx := context.Background()
	rdb := st.Redis.Client(t)
	_, js := st.NATS.JetStream(t)
	parts := []leases.Partition{{Stream: "orders", P: 0}, {Stream: "orders", P: 1}, {Stream: "orders", P: 2}, {Stream: "orders", P: 3}}

	st.Start("serve")
	speeds := []*testenv.Proc{st.Spawn("speed"), st.Spawn("speed")}
	// pidOf names the speed process (0 or 1) holding a lease (owner
	// host-pid-hex), -1 for none.
	pidOf := func(owner string) int {
		f := strings.Split(owner, "-")
		if len(f) < 3 {
			return -1
		}
		pid, _ := strconv.Atoi(f[len(f)-2])
		return slices.IndexFunc(speeds, func(p *testenv.Proc) bool { return p.Cmd.Process.Pid == pid })
	}
	// shares returns the partitions each speed process holds the lease of.
	shares := func() ([2][]int, error) {
		var out [2][]int
		owners, err := leases.Owners(ctx, rdb, st.Namespace, "speed", parts)
		if err != nil {
			return out, err
		}
		for _, p := range parts {
			if i := pidOf(owners[p]); i >= 0 {
				out[i] = append(out[i], p.P)
			}
		}
		return out, nil
	}
	position := func(p int) (seq uint64, owner string) {
		m, _ := rdb.HGetAll(ctx, fmt.Sprintf("%s:pos:{orders.%d}", st.Namespace, p)).Result()
		seq, _ = strconv.ParseUint(m["seq"], 10, 64)
		return seq, m["owner"]
	}

	rng := rand.New(rand.NewPCG(2026, 17))
	start := time.Now().UTC().Truncate(time.Minute).Add(-90 * time.Minute)
	from, to := start, start.Add(60*time.Minute)
	orders := genOrders(rng, start, 3000, 0)
	var batches [][]order
	for i := 0; i < len(orders); i += 50 {
		batches = append(batches, orders[i:min(i+50, len(orders))])
	}
	prod := &producer{base: st.Base, done: make(chan struct{})}
	go prod.run(batches, 25*time.Millisecond)

	eventually(t, "the speed processes share the partitions 2:2 and commit", settleTimeout, func() string {
		sh, err := shares()
		if err != nil {
			return err.Error()
		}
		if len(sh[0]) != 2 || len(sh[1]) != 2 {
			return fmt.Sprintf("leases %v", sh)
		}
		for _, p := range parts {
			if seq, owner := position(p.P); seq == 0 || pidOf(owner) < 0 {
				return fmt.Sprintf("partition %d: position %d by %q", p.P, seq, owner)
			}
		}
		return ""
	})
	prod.waitFor(int64(len(orders) / 2))
	sh, err := shares()
	if err != nil {
		t.Fatal(err)
	}
	victim := rng.IntN(2)
	survivor := 1 - victim
	seqs := map[int]uint64{}
	for _, p := range sh[victim] {
		seqs[p], _ = position(p)
	}
	speeds[victim].Kill(t)
	killed := time.Now()
	t.Logf("SIGKILL of speed #%d (partitions %v) after %d accepted events", victim+1, sh[victim], prod.n.Load())

	// The survivor takes the victim's partitions and commits on them.
	var took time.Duration
	eventually(t, "the survivor commits on the killed process's partitions", settleTimeout, func() string {
		for _, p := range sh[victim] {
			seq, owner := position(p)
			if pidOf(owner) != survivor || seq <= seqs[p] {
				return fmt.Sprintf("partition %d: position %d by %q (was %d)", p, seq, owner, seqs[p])
			}
		}
		took = time.Since(killed)
		return ""
	})
	t.Logf("the survivor committed on every partition of the killed process %s after the kill", took.Round(time.Millisecond))

	select {
	case <-prod.done:
	case <-time.After(5 * time.Minute):
		t.Fatalf("producer not done after 5 minutes (%d events accepted)", prod.n.Load())
	}
	if prod.err != nil {
		t.Fatalf("producer: %v", prod.err)
	}
	accepted := prod.acceptedOrders()
	want := expect(accepted)

	// Every partition's position reaches its log's last record, by the
	// survivor, which holds every lease.
	eventually(t, "every partition committed through its log's end by the survivor", settleTimeout, func() string {
		if sh, err := shares(); err != nil || len(sh[survivor]) != 4 {
			return fmt.Sprintf("leases %v %v", sh, err)
		}
		for _, p := range parts {
			name := st.Namespace + "_events_orders"
			if p.P > 0 {
				name += "-" + strconv.Itoa(p.P)
			}
			s, err := js.Stream(ctx, name)
			if err != nil {
				return err.Error()
			}
			info, err := s.Info(ctx)
			if err != nil {
				return err.Error()
			}
			if seq, owner := position(p.P); seq != info.State.LastSeq || pidOf(owner) != survivor {
				return fmt.Sprintf("partition %d: position %d by %q, log at %d", p.P, seq, owner, info.State.LastSeq)
			}
		}
		return ""
	})
	eventually(t, "the exact answer", settleTimeout, func() string {
		url := fmt.Sprintf("%s/v1/views/orders_by_country?from=%s&to=%s", st.Base, from.Format(time.RFC3339), to.Format(time.RFC3339))
		resp, err := faultClient.Get(url)
		if err != nil {
			return err.Error()
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Sprintf("query status %d: %s", resp.StatusCode, raw)
		}
		var q queryResp
		if err := json.Unmarshal(raw, &q); err != nil {
			return fmt.Sprintf("query answer %q: %v", raw, err)
		}
		return compare(q, want, "speed")
	})
	t.Logf("%d events accepted in %d POSTs; the answer's %d rows are exact", len(accepted), prod.posts.Load(), len(want))
}
