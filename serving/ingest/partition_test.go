package ingest_test

import (
	"context"
	"fmt"
	"hash/fnv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// TestIngestPartitions: with partitions: 4, an event with an id is stored
// in the partition of its id (FNV-1a, as the configuration's reference
// says), once however often its batch is retried; events without a key
// spread evenly, round robin. Each partition's log has contiguous
// sequences, and EventCount counts every event once.
func TestIngestPartitions(t *testing.T) {
	ctx := context.Background()
	const parts = 4
	stream := func(name, id string) *logic.Stream {
		s, err := logic.NewStream(name, logic.StreamDef{Time: "ts", ID: id, Partitions: parts,
			Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "n": logic.TypeInt}}, []byte("k"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	orders, clicks := stream("orders", "id"), stream("clicks", "")
	_, js := testenv.StartNATS(t).JetStream(t)
	l, err := eventlog.Open(ctx, js, []string{"orders", "clicks"}, eventlog.Options{Namespace: testenv.Namespace(t), DedupWindow: time.Minute,
		Partitions: map[string]int{"orders": parts, "clicks": parts}})
	if err != nil {
		t.Fatal(err)
	}
	in := ingest.NewIngester(l, testCatalog(orders, clicks), prometheus.NewRegistry())
	batch := func(from, to int) [][]byte {
		var raws [][]byte
		for i := from; i < to; i++ {
			raws = append(raws, fmt.Appendf(nil, `{"ts":"2026-01-01T00:00:00Z","id":"o%d","n":%d}`, i, i))
		}
		return raws
	}
	// Three requests, the third a retry of the first, the second
	// overlapping it: ids o0..o299, each once.
	for _, b := range [][2]int{{0, 200}, {100, 300}, {0, 200}} {
		if res, err := in.Ingest(ctx, "orders", batch(b[0], b[1]), "test"); err != nil || res.Accepted != b[1]-b[0] {
			t.Fatalf("ingest %v: %+v %v", b, res, err)
		}
	}
	want := func(id string) int {
		h := fnv.New64a()
		_, _ = h.Write([]byte(id))
		return int(h.Sum64() % parts)
	}
	seen := map[string]int{}
	for p := range parts {
		for _, rec := range testenv.StoredEvents(t, js, l.StreamName("orders", p)) { // fails on a gap in the sequences
			ev, err := orders.Decode(rec)
			if err != nil {
				t.Fatal(err)
			}
			seen[ev.ID]++
			if w := want(ev.ID); w != p {
				t.Errorf("event %s in partition %d, want %d", ev.ID, p, w)
			}
		}
	}
	for i := range 300 {
		if n := seen[fmt.Sprint("o", i)]; n != 1 {
			t.Errorf("o%d stored %d times, want once", i, n)
		}
	}
	if len(seen) != 300 {
		t.Fatalf("%d ids stored, want 300", len(seen))
	}
	if n, err := l.EventCount(ctx, "orders"); err != nil || n != 300 {
		t.Fatalf("EventCount %d, %v; want 300", n, err)
	}

	// No id: round robin, a request's events spread evenly.
	for range 3 {
		if res, err := in.Ingest(ctx, "clicks", batch(0, 100), "test"); err != nil || res.Accepted != 100 {
			t.Fatalf("ingest clicks: %+v %v", res, err)
		}
	}
	for p := range parts {
		if got := len(testenv.StoredEvents(t, js, l.StreamName("clicks", p))); got != 75 {
			t.Errorf("clicks partition %d holds %d events, want 75 (a quarter of 300)", p, got)
		}
	}
	if n, err := l.EventCount(ctx, "clicks"); err != nil || n != 300 {
		t.Fatalf("clicks EventCount %d, %v; want 300", n, err)
	}
}
