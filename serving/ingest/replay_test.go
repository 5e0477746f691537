package ingest_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// replay replays the dead letters of s's stream with s's logic (a
// configuration fixed since they were rejected).
func replay(ctx context.Context, l *eventlog.Log, s *logic.Stream) (ingest.ReplayResult, error) {
	return ingest.NewIngester(l, testCatalog(s), nil).ReplayDeadLetters(ctx, s.Name, "replay")
}

func TestReplayDeadLetters(t *testing.T) {
	ctx := context.Background()
	l := testenv.OpenLog(t, eventlog.Options{}, "orders")
	def := logic.StreamDef{Time: "ts", ID: "id", Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "n": logic.TypeInt}, Required: []string{"n"}}
	payloads := []string{`{"ts":1000,"id":"a"}`, `{"ts":1000,"id":"b","n":"x"}`, `{"ts":1000,"id":"c","n":3}`}
	var dls []eventlog.DeadLetter
	for _, p := range payloads {
		dls = append(dls, eventlog.DeadLetter{Stream: "orders", Reason: "old schema", Source: "http", Time: time.Now(), Payload: []byte(p)})
	}
	if err := l.PublishDeadLetters(ctx, "orders", dls); err != nil {
		t.Fatal(err)
	}
	// The fix: n is no longer required; "x" is still not an int.
	def.Required = nil
	fixed, err := logic.NewStream("orders", def, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := replay(ctx, l, fixed)
	if err != nil || res.Replayed != 2 || res.Kept != 1 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	res, err = replay(ctx, l, fixed)
	if err != nil || res.Replayed != 0 || res.Kept != 1 {
		t.Fatalf("second replay: %+v %v", res, err)
	}
	if n := len(testenv.StoredEvents(t, l.JetStream(), l.StreamName("orders", 0))); n != 2 {
		t.Fatalf("stream holds %d events after two replays, want 2", n)
	}
	left, _ := l.DeadLetters(ctx, "orders", eventlog.Cursor{}, 10)
	if len(left) != 1 || left[0].Field != "n" || left[0].Source != "replay" {
		t.Fatalf("left: %+v", left)
	}
}

// TestReplayAfterCrashDoesNotDoubleDeadLetters: a replay that re-queued a
// dead letter and died before deleting the old one leaves, after the next
// replay, one dead letter for that event.
func TestReplayAfterCrashDoesNotDoubleDeadLetters(t *testing.T) {
	ctx := context.Background()
	l := testenv.OpenLog(t, eventlog.Options{}, "orders")
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id", Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "n": logic.TypeInt}}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	d := eventlog.DeadLetter{Stream: "orders", Reason: "want an integer", Field: "n", Source: "http", Time: time.Now(), Payload: []byte(`{"ts":1000,"id":"a","n":"x"}`)}
	if err := l.PublishDeadLetters(ctx, "orders", []eventlog.DeadLetter{d}); err != nil {
		t.Fatal(err)
	}
	first, err := l.DeadLetters(ctx, "orders", eventlog.Cursor{}, 10)
	if err != nil || len(first) != 1 {
		t.Fatalf("%v %v", first, err)
	}
	// What the crashed replay did: re-queued it, did not delete it.
	requeued := d
	requeued.ID, requeued.Source = fmt.Sprintf("requeue:%d:0", first[0].Seq), "replay"
	if err := l.PublishDeadLetters(ctx, "orders", []eventlog.DeadLetter{requeued}); err != nil {
		t.Fatal(err)
	}
	res, err := replay(ctx, l, s)
	if err != nil || res.Kept != 2 || res.Replayed != 0 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	left, err := l.DeadLetters(ctx, "orders", eventlog.Cursor{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	// The original is gone, its re-queued copy stored once; the copy itself
	// was re-queued once more under its own place.
	if len(left) != 1 || left[0].Source != "replay" || left[0].ID != fmt.Sprintf("requeue:%d:0", first[0].Seq+1) {
		t.Fatalf("left %+v", left)
	}
	// Ids given by the caller are the message ids: the same letters again
	// are stored once; letters without one are stored each time.
	withID := []eventlog.DeadLetter{d, d}
	withID[0].ID, withID[1].ID = "dl:1", ""
	for range 2 {
		if err := l.PublishDeadLetters(ctx, "orders", withID); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != 1+1+2 {
		t.Fatalf("dead letters %d %v, want 4", n, err)
	}
}

// TestReplayPackedRecords: a replay moves each record's letters on (into
// the log, or re-queued with their new reason) and deletes the record; a
// letter that can never become an event stays as it is when its record
// holds nothing else, and moves unchanged when it shares one. The count
// follows, and a second replay replays nothing twice.
func TestReplayPackedRecords(t *testing.T) {
	ctx := context.Background()
	l := testenv.OpenLog(t, eventlog.Options{}, "orders")
	def := logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "n": logic.TypeInt}, Required: []string{"n"}}
	now := time.Now()
	dl := func(id, payload string) eventlog.DeadLetter {
		return eventlog.DeadLetter{ID: id, Stream: "orders", Reason: "old", Source: "http", Time: now, Payload: []byte(payload)}
	}
	mixed := []eventlog.DeadLetter{dl("m0", `{"ts":1000,"id":"a"}`), dl("m1", `[1,2]`), dl("m2", `{"ts":1000,"n":"x"}`), dl("m3", `{"ts":1000,"n":1}`),
		dl("m4", `{"ts":1000}`)}
	never := []eventlog.DeadLetter{dl("v0", `"withheld"`), dl("v1", `{"ts":1000,`)}
	for _, w := range [][]eventlog.DeadLetter{never, mixed} {
		if err := l.PublishDeadLetters(ctx, "orders", w); err != nil {
			t.Fatal(err)
		}
	}
	before := storagetest.AllDeadLetters(t, l, "orders", 100)
	// The fix: n is optional; "x" is still not an int.
	def.Required = nil
	fixed, err := logic.NewStream("orders", def, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := replay(ctx, l, fixed)
	if err != nil || res != (ingest.ReplayResult{Replayed: 3, Kept: 1, Unreplayable: 3}) {
		t.Fatalf("replay: %+v %v", res, err)
	}
	after := storagetest.AllDeadLetters(t, l, "orders", 100)
	// The record of letters that can never be replayed is where it was;
	// the mixed one is gone, its [1,2] moved unchanged, its "x" re-queued.
	if len(after) != 4 || after[0].Cursor() != before[0].Cursor() || after[1].Cursor() != before[1].Cursor() || after[0].Reason != "old" ||
		after[0].Unreplayable != eventlog.UnreplayableNotObject || after[1].Unreplayable != eventlog.UnreplayableNotObject {
		t.Fatalf("after the replay: %+v", after)
	}
	moved, requeued := after[2], after[3]
	if string(moved.Payload) != `[1,2]` || moved.Reason != "old" || moved.Source != "http" || moved.ID != fmt.Sprintf("requeue:%d:1", before[2].Seq) ||
		requeued.Field != "n" || requeued.Source != "replay" || requeued.ID != fmt.Sprintf("requeue:%d:2", before[2].Seq) || requeued.Seq != moved.Seq {
		t.Fatalf("moved %+v requeued %+v", moved, requeued)
	}
	if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != 4 {
		t.Fatalf("count %d %v, want 4", n, err)
	}
	events := testenv.StoredEvents(t, l.JetStream(), l.StreamName("orders", 0))
	if len(events) != 3 {
		t.Fatalf("%d events in the log, want 3", len(events))
	}
	res, err = replay(ctx, l, fixed)
	if err != nil || res != (ingest.ReplayResult{Kept: 1, Unreplayable: 3}) {
		t.Fatalf("second replay: %+v %v", res, err)
	}
	if n := len(testenv.StoredEvents(t, l.JetStream(), l.StreamName("orders", 0))); n != 3 {
		t.Fatalf("%d events in the log after a second replay, want 3", n)
	}
	if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != 4 {
		t.Fatalf("count %d %v after a second replay, want 4", n, err)
	}
}

// TestReplayLettersWrittenBeforePacking: a dead-letter stream as an earlier
// version made it (one budget for all, a message per letter) is taken
// over at Open; its letters are listed, counted, replayed and removed
// like the others.
func TestReplayLettersWrittenBeforePacking(t *testing.T) {
	ctx := context.Background()
	_, js := testenv.StartNATS(t).JetStream(t)
	l := storagetest.OpenPrePackingLog(t, js, testenv.Namespace(t))
	got := storagetest.AllDeadLetters(t, l, "orders", 100)
	if len(got) != 5 || got[0].ID != "dl:0" || got[0].Field != "n" || got[0].Index != 0 || got[2].Seq != 3 || got[3].ID != "new-0" {
		t.Fatalf("listed %+v", got)
	}
	if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != 5 {
		t.Fatalf("count %d %v, want 5", n, err)
	}
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "n": logic.TypeInt}}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := replay(ctx, l, s)
	// Replayed: the third old one (n is optional now) and the two new ones.
	if err != nil || res.Unreplayable != 1 || res.Kept != 1 || res.Replayed != 3 {
		t.Fatalf("replay %+v %v", res, err)
	}
	left := storagetest.AllDeadLetters(t, l, "orders", 100)
	if len(left) != 2 || left[0].Seq != 2 || left[1].ID != "requeue:1" || left[1].Field != "n" {
		t.Fatalf("left %+v", left)
	}
	if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != 2 {
		t.Fatalf("count %d %v, want 2", n, err)
	}
}
