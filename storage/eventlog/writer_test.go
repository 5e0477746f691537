package eventlog_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// stored unpacks every event of the orders log, in log order, as "id|data".
func stored(t *testing.T, l *eventlog.Log) (events []string, records int) {
	t.Helper()
	for _, data := range testenv.StoredMessages(t, l.JetStream(), l.StreamName("orders", 0)) {
		records++
		if err := eventlog.Unpack(data, func(_ int, id, rec []byte) error {
			events = append(events, string(id)+"|"+string(rec))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return events, records
}

// TestWriterPacksAndDeduplicates: a write is one log record; ids repeated
// within it or stored before are dropped, events without one never are.
func TestWriterPacksAndDeduplicates(t *testing.T) {
	ctx := context.Background()
	l := open(t)
	rng := rand.New(rand.NewPCG(3, 4))
	w1, w2 := storagetest.RandomWrite(rng, 1000, 600), storagetest.RandomWrite(rng, 1000, 1200)
	for _, w := range [][]eventlog.Record{w1, w2, w1} {
		if err := l.Publish(ctx, "orders", w); err != nil {
			t.Fatal(err)
		}
	}
	got, records := stored(t, l)
	want := storagetest.KeepFirst(w1, w2, w1)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log holds %d events, want %d (first occurrence of each id, every event without one)", len(got), len(want))
	}
	if records != 3 {
		t.Fatalf("%d log records for 3 writes, want 3", records)
	}
}

// TestWriterSplitsAtTheMessageLimit: a write larger than the server's
// message limit becomes several records, in order.
func TestWriterSplitsAtTheMessageLimit(t *testing.T) {
	l := open(t)
	big := strings.Repeat("x", 10_000)
	recs := make([]eventlog.Record, 300) // about 3 MB; the limit is 1 MB
	for i := range recs {
		recs[i] = eventlog.Record{ID: fmt.Sprint(i), Data: fmt.Appendf(nil, `{"i":%d,"s":%q}`, i, big)}
	}
	if err := l.Publish(context.Background(), "orders", recs); err != nil {
		t.Fatal(err)
	}
	got, records := stored(t, l)
	if strings.Join(got, "\n") != strings.Join(storagetest.KeepFirst(recs), "\n") || records < 3 || records > 4 {
		t.Fatalf("%d events in %d records; want 300 in order, in 3 or 4 records", len(got), records)
	}
}

// Deduplication across writers and after unknown outcomes is checked by
// storagetest's suite (conformance_test.go).

// TestWindowRebuiltAndExpired: a new writer (a restarted process) learns
// the ids of the window from the log; an id stored longer ago than the
// window is stored again.
func TestWindowRebuiltAndExpired(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	openLog := func() *eventlog.Log {
		_, js := n.JetStream(t)
		l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: ns, DedupWindow: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	a := []eventlog.Record{{ID: "a", Data: []byte(`{"v":1}`)}, {ID: "b", Data: []byte(`{"v":2}`)}}
	if err := openLog().Publish(ctx, "orders", a); err != nil {
		t.Fatal(err)
	}
	if err := openLog().Publish(ctx, "orders", append(a, eventlog.Record{ID: "c", Data: []byte(`{"v":3}`)})); err != nil {
		t.Fatal(err)
	}
	got, _ := stored(t, openLog())
	if strings.Join(got, " ") != `a|{"v":1} b|{"v":2} c|{"v":3}` {
		t.Fatalf("after a restart: %v", got)
	}
	// Once the window has passed, a is stored again. When exactly both the
	// writer and JetStream let it go is theirs to say: publish it until it
	// is stored (a publish within the window stores nothing), once.
	time.Sleep(2 * time.Second)
	l := openLog()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err := l.Publish(ctx, "orders", a[:1]); err != nil {
			t.Fatal(err)
		}
		if got, _ = stored(t, l); len(got) > 3 || time.Now().After(deadline) {
			break
		}
	}
	if len(got) != 4 || got[3] != `a|{"v":1}` {
		t.Fatalf("after the window: %v", got)
	}
}

func TestUnpackRejectsMalformedRecords(t *testing.T) {
	for _, data := range [][]byte{nil, []byte(`{"x":1}`), {0xB1}, {0xB1, 2, 0, 1, 'x'}, {0xB1, 1, 0, 1, 'x', 'y'}, {0xB1, 1, 5, 'a'}} {
		if err := eventlog.Unpack(data, func(int, []byte, []byte) error { return nil }); err == nil {
			t.Errorf("Unpack(%q): no error", data)
		}
	}
}
