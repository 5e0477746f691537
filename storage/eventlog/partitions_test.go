package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// idsOf unpacks delivered records into their events' ids, in order.
func idsOf(t *testing.T, msgs []eventlog.Msg) []string {
	t.Helper()
	var ids []string
	for _, m := range msgs {
		if err := eventlog.Unpack(m.Data, func(_ int, id, _ []byte) error {
			ids = append(ids, string(id))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	return ids
}

// TestLogFromBeforePartitions: a stream's log and its durable consumer as
// they were made before partitions (one JetStream stream on the subject
// <ns>.events.<s>, the consumer filtering on it) carry on when the stream
// gets partitions: partition 0 keeps the records, the writer knows their
// ids, and the consumer is made again where its owner's position says, so
// it delivers the old records after the position and the new ones, each
// once.
func TestLogFromBeforePartitions(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	ns := testenv.Namespace(t)
	old := ns + ".events.orders"
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: ns + "_events_orders", Subjects: []string{old}, Storage: jetstream.FileStorage,
		Duplicates: time.Minute, Discard: jetstream.DiscardNew})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []string{"a", "b", "c"} {
		data := eventlog.PackRecords([]eventlog.Record{{ID: id, Data: fmt.Appendf(nil, `{"v":%d}`, i)}})
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: old, Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{"old." + id}}}); err != nil {
			t.Fatal(err)
		}
	}
	// The speed layer of then: it folded record 1, acked it, stored position 1.
	oc, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "speed", AckPolicy: jetstream.AckAllPolicy, FilterSubject: old})
	if err != nil {
		t.Fatal(err)
	}
	first, err := oc.Fetch(1)
	if err != nil {
		t.Fatal(err)
	}
	for m := range first.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}

	l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: ns, DedupWindow: time.Minute, Partitions: map[string]int{"orders": 2}})
	if err != nil {
		t.Fatal(err)
	}
	// a is known (stored before, on the old subject); d and e are new.
	for _, id := range []string{"a", "d", "e"} {
		if err := l.Publish(ctx, "orders", []eventlog.Record{{ID: id, Data: []byte(`{"v":9}`), Part: 0}}); err != nil {
			t.Fatal(err)
		}
	}
	c, err := l.Consumer(ctx, "orders", 0, "speed", eventlog.Start{Seq: 2}, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := idsOf(t, fetchN(t, c, 4))
	if want := []string{"b", "c", "d", "e"}; !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
	// Nothing more comes (a was not stored again).
	if more, err := c.Fetch(ctx, 10, time.Second); err != nil || len(more) > 0 {
		t.Fatalf("after the four: %d more records, %v", len(more), err)
	}
	ci, err := s.Consumer(ctx, "speed")
	if err != nil {
		t.Fatal(err)
	}
	if cfg := ci.CachedInfo().Config; cfg.FilterSubject != "" || len(cfg.FilterSubjects) > 0 {
		t.Fatalf("the consumer still filters: %q %v", cfg.FilterSubject, cfg.FilterSubjects)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if subj := info.Config.Subjects; !slices.Contains(subj, old) || !slices.Contains(subj, l.Subject("orders", 0)) {
		t.Fatalf("partition 0's subjects %v: want the old one and %s", subj, l.Subject("orders", 0))
	}
}

// TestPartitionsOnlyGrow: Open refuses a stream fewer partitions than its
// log has partitions with records, naming the stream; a partition beyond
// the count that holds nothing is no reason to refuse, and raising the
// count again takes back the records.
func TestPartitionsOnlyGrow(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	ns := testenv.Namespace(t)
	open := func(parts int) (*eventlog.Log, error) {
		return eventlog.Open(ctx, js, []string{"orders", "clicks"}, eventlog.Options{Namespace: ns, DedupWindow: time.Minute,
			Partitions: map[string]int{"orders": parts, "clicks": 3}})
	}
	l, err := open(4)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Publish(ctx, "orders", []eventlog.Record{{ID: "x", Data: []byte(`{}`), Part: 2}}); err != nil {
		t.Fatal(err)
	}
	// Partition 3 is empty: three partitions are fine.
	if _, err := open(3); err != nil {
		t.Fatalf("three partitions (the fourth is empty): %v", err)
	}
	for _, parts := range []int{2, 1} {
		_, err := open(parts)
		if !errors.Is(err, eventlog.ErrPartitionsShrunk) || !strings.Contains(err.Error(), "streams.orders.partitions") ||
			!strings.Contains(err.Error(), "3 partitions with records") {
			t.Fatalf("%d partitions: want the refusal naming streams.orders.partitions and 3 partitions, got %v", parts, err)
		}
	}
	l, err = open(4)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := l.Info(ctx, "orders", 2); err != nil || info.Msgs != 1 {
		t.Fatalf("partition 2 after raising the count again: %+v %v", info, err)
	}
	if got, err := l.EventCount(ctx, "orders"); err != nil || got != 1 {
		t.Fatalf("EventCount %d, %v; want 1", got, err)
	}
}
