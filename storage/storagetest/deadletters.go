package storagetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/storage/eventlog"
)

// DeadLetters makes n dead letters of a stream, each with its own id
// (prefix-i), reason and payload ({"n":i}), from source "http".
func DeadLetters(stream, prefix string, n int) []eventlog.DeadLetter {
	out := make([]eventlog.DeadLetter, n)
	for i := range out {
		out[i] = eventlog.DeadLetter{ID: fmt.Sprintf("%s-%d", prefix, i), Stream: stream, Reason: fmt.Sprintf("reason %s %d", prefix, i),
			Source: "http", Time: time.Now(), Payload: fmt.Appendf(nil, `{"n":%d}`, i)}
	}
	return out
}

// AllDeadLetters pages through a stream's dead letters, limit at a time,
// with the cursor of the last letter of each page, and returns them all.
// It fails the test on an error, a page longer than limit or a cursor that
// does not read back as itself.
func AllDeadLetters(t testing.TB, l *eventlog.Log, stream string, limit int) []eventlog.DeadLetter {
	t.Helper()
	var all []eventlog.DeadLetter
	var after eventlog.Cursor
	for {
		page, err := l.DeadLetters(context.Background(), stream, after, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return all
		}
		if len(page) > limit {
			t.Fatalf("page of %d letters, limit %d", len(page), limit)
		}
		all = append(all, page...)
		after = page[len(page)-1].Cursor()
		c, err := eventlog.ParseCursor(after.String())
		if err != nil || c != after {
			t.Fatalf("cursor %v reads back as %v (%v)", after, c, err)
		}
	}
}

// OpenPrePackingLog makes, on js in namespace ns, a dead-letter stream as
// an earlier version made it (one budget for all, a message per letter)
// holding three letters of stream "orders" (ids dl:0, dl:1, dl:2: a wrong
// type of field n, a withheld payload, a missing n), opens a log of
// "orders" over it (DLQMaxRecords 100) and checks that Open took the
// stream over (a per-subject budget). It then publishes dl:1 again (a
// retry across the upgrade, to be stored once) and two new letters,
// new-0 and new-1, with payloads {"ts":1000,"n":i}: the log holds five
// letters, the old ones a record each, the new ones packed in one.
func OpenPrePackingLog(t testing.TB, js jetstream.JetStream, ns string) *eventlog.Log {
	t.Helper()
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: ns + "_dlq", Subjects: []string{ns + ".dlq.*"}, MaxAge: 7 * 24 * time.Hour,
		MaxMsgs: 1_000_000, Duplicates: time.Minute, Storage: jetstream.FileStorage, Discard: jetstream.DiscardOld}); err != nil {
		t.Fatal(err)
	}
	old := []string{
		`{"stream":"orders","reason":"want an integer","field":"n","source":"http","time":"2026-11-01T10:00:00Z","payload":{"ts":1000,"n":"x"}}`,
		`{"stream":"orders","reason":"invalid JSON","source":"http","time":"2026-11-01T10:00:01Z","payload":"[payload withheld: not a JSON object and the stream has PII fields]"}`,
		`{"stream":"orders","reason":"required field is missing","field":"n","source":"http","time":"2026-11-01T10:00:02Z","payload":{"ts":1000}}`,
	}
	for i, o := range old {
		m := &nats.Msg{Subject: ns + ".dlq.orders", Data: []byte(o), Header: nats.Header{jetstream.MsgIDHeader: []string{fmt.Sprintf("dl:%d", i)}}}
		if _, err := js.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	l, err := eventlog.Open(ctx, js, []string{"orders"}, eventlog.Options{Namespace: ns, DedupWindow: time.Minute, DLQMaxRecords: 100})
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, ns+"_dlq")
	if err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxMsgs != -1 || c.MaxMsgsPerSubject != 100 {
		t.Fatalf("dead-letter stream limits: max_msgs %d, per subject %d", c.MaxMsgs, c.MaxMsgsPerSubject)
	}
	// The same letters again (a retry across the upgrade) are known by
	// their ids: stored once.
	again := DeadLetters("orders", "again", 1)
	again[0].ID = "dl:1"
	if err := l.PublishDeadLetters(ctx, "orders", again); err != nil {
		t.Fatal(err)
	}
	fresh := DeadLetters("orders", "new", 2)
	for i := range fresh {
		fresh[i].Payload = fmt.Appendf(nil, `{"ts":1000,"n":%d}`, i)
	}
	if err := l.PublishDeadLetters(ctx, "orders", fresh); err != nil {
		t.Fatal(err)
	}
	return l
}
