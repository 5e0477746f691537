package eventlog_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// openOn opens the log of stream orders under namespace ns on its own
// connection to n, as another process would.
func openOn(t *testing.T, n *testenv.NATS, ns string) (*eventlog.Log, jetstream.JetStream) {
	t.Helper()
	_, js := n.JetStream(t)
	l, err := eventlog.Open(context.Background(), js, []string{"orders"}, eventlog.Options{Namespace: ns, DedupWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	return l, js
}

// oldRecord encodes events the way a log record was written before event
// counts existed: the plain packed layout, no count headers.
func oldRecord(ids ...string) []byte {
	b := []byte{0xB1}
	b = binary.AppendUvarint(b, uint64(len(ids)))
	for _, id := range ids {
		data := fmt.Sprintf(`{"id":%q}`, id)
		b = binary.AppendUvarint(b, uint64(len(id)))
		b = append(b, id...)
		b = binary.AppendUvarint(b, uint64(len(data)))
		b = append(b, data...)
	}
	return b
}

func eventCount(t *testing.T, l *eventlog.Log) uint64 {
	t.Helper()
	var n uint64
	var err error
	deadline := time.Now().Add(time.Minute)
	for {
		n, err = l.EventCount(context.Background(), "orders")
		if err == nil || time.Now().After(deadline) {
			break
		}
		t.Logf("event count: %v", err) // ErrCounting: ask again
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEventCountAcrossWriters: two writers (processes) append concurrently,
// repeating each other's ids; every process's EventCount is the number of
// distinct events sent, and after the first record is removed, that
// number less the removed record's events.
func TestEventCountAcrossWriters(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	a, js := openOn(t, n, ns)
	b, _ := openOn(t, n, ns)
	reader, _ := openOn(t, n, ns)
	if got := eventCount(t, reader); got != 0 {
		t.Fatalf("empty log: %d events", got)
	}
	distinct := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w, l := range []*eventlog.Log{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 40 {
				var recs []eventlog.Record
				for range 1 + rng.IntN(20) {
					id := fmt.Sprintf("e%d", rng.IntN(500)) // both writers draw from the same ids
					recs = append(recs, eventlog.Record{ID: id, Data: []byte(`{"id":"` + id + `"}`)})
				}
				if err := l.Publish(ctx, "orders", recs); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, r := range recs {
					distinct[r.ID] = true
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	want := uint64(len(distinct))
	if stored := len(testenv.StoredEvents(t, js, reader.StreamName("orders", 0))); uint64(stored) != want {
		t.Fatalf("the log holds %d events, %d distinct ids were sent", stored, want)
	}
	for i, l := range []*eventlog.Log{a, b, reader} {
		if got := eventCount(t, l); got != want {
			t.Fatalf("process %d counts %d events, want %d", i, got, want)
		}
	}

	// The first record leaves the log (as by nats.max_age).
	s, err := js.Stream(ctx, reader.StreamName("orders", 0))
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	want -= uint64(eventlog.Count(first.Data))
	if got := eventCount(t, reader); got != want {
		t.Fatalf("after the first record left: %d events, want %d", got, want)
	}
}

// TestEventCountOldRecords: records written before event counts (no
// count headers) are counted by reading them: before the count begins,
// and one appended by an earlier writer in the middle of it.
func TestEventCountOldRecords(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	l, js := openOn(t, n, ns)
	subj := strings.TrimSuffix(l.Subject("orders", 0), ".0") // the subject before partitions
	publishOld := func(ids ...string) {
		t.Helper()
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: oldRecord(ids...)}); err != nil {
			t.Fatal(err)
		}
	}
	publishOld("o1", "o2", "o3")
	publishOld("o4")
	if got := eventCount(t, l); got != 4 {
		t.Fatalf("old records only: %d events, want 4", got)
	}
	// A writer of this version appends after them: the count begins.
	if err := l.Publish(ctx, "orders", []eventlog.Record{{ID: "n1", Data: []byte(`{}`)}, {ID: "n2", Data: []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	if got := eventCount(t, l); got != 6 {
		t.Fatalf("old and new records: %d events, want 6", got)
	}
	// An earlier version's writer appends in the middle of the count; this
	// writer learns it at its next append.
	publishOld("o5", "o6")
	if err := l.Publish(ctx, "orders", []eventlog.Record{{ID: "n3", Data: []byte(`{}`)}}); err != nil {
		t.Fatal(err)
	}
	other, _ := openOn(t, n, ns)
	for _, x := range []*eventlog.Log{l, other} {
		if got := eventCount(t, x); got != 9 {
			t.Fatalf("with an old record inside the count: %d events, want 9", got)
		}
	}
	// The old records before the count leave the log: the first retained
	// record is then a counted one, then an old one inside the count.
	s, err := js.Stream(ctx, l.StreamName("orders", 0))
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		seq  uint64
		want uint64
	}{{1, 6}, {2, 5}, {3, 3}, {4, 1}} {
		if err := s.DeleteMsg(ctx, step.seq); err != nil {
			t.Fatal(err)
		}
		if got := eventCount(t, other); got != step.want {
			t.Fatalf("records up to %d removed: %d events, want %d", step.seq, got, step.want)
		}
	}
}
