package eventlog_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

// dlqRecords is the number of messages on a stream's dead-letter subject.
func dlqRecords(t *testing.T, l *eventlog.Log, stream string) uint64 {
	t.Helper()
	ctx := context.Background()
	s, err := l.JetStream().Stream(ctx, strings.TrimSuffix(l.DLQSubject(stream), ".dlq."+stream)+"_dlq")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(l.DLQSubject(stream)))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[l.DLQSubject(stream)]
}

// TestDeadLettersArePackedDeduplicatedAndCounted: dead letters are written
// like clean events: many to a log record, a repeated id stored once;
// they are listed oldest first through a cursor that addresses one
// letter, and counted as letters, not records.
func TestDeadLettersArePackedDeduplicatedAndCounted(t *testing.T) {
	ctx := context.Background()
	l := testenv.OpenLog(t, eventlog.Options{}, "orders")
	first := storagetest.DeadLetters("orders", "a", 20_000)
	if err := l.PublishDeadLetters(ctx, "orders", first); err != nil {
		t.Fatal(err)
	}
	// A retry of the same letters and new ones mixed with repeats.
	if err := l.PublishDeadLetters(ctx, "orders", first); err != nil {
		t.Fatal(err)
	}
	second := append(storagetest.DeadLetters("orders", "b", 500), first[:300]...)
	if err := l.PublishDeadLetters(ctx, "orders", second); err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(first), second[:500]...)
	records := dlqRecords(t, l, "orders")
	if records < 2 || records > 10 {
		t.Fatalf("%d letters in %d records: want them packed", len(want), records)
	}
	if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != uint64(len(want)) {
		t.Fatalf("count %d (%v), want %d", n, err, len(want))
	}
	for _, limit := range []int{1000, 333, 97} {
		got := storagetest.AllDeadLetters(t, l, "orders", limit)
		if len(got) != len(want) {
			t.Fatalf("limit %d: listed %d letters, want %d", limit, len(got), len(want))
		}
		for i, d := range got {
			if d.ID != want[i].ID || d.Reason != want[i].Reason || string(d.Payload) != string(want[i].Payload) || d.Stream != "orders" ||
				!d.Time.Equal(want[i].Time.UTC()) || d.Source != "http" || d.Unreplayable != "" {
				t.Fatalf("limit %d: letter %d is %+v, want %+v", limit, i, d, want[i])
			}
			if i > 0 && (d.Seq < got[i-1].Seq || d.Seq == got[i-1].Seq && d.Index != got[i-1].Index+1) {
				t.Fatalf("letter %d at %v after %v", i, d.Cursor(), got[i-1].Cursor())
			}
		}
	}
	// Counting reads the headers of new records through a consumer of its
	// own, deleted when done: counting often leaves none behind.
	for i := range 50 {
		if err := l.PublishDeadLetters(ctx, "orders", storagetest.DeadLetters("orders", fmt.Sprintf("c%d", i), 1)); err != nil {
			t.Fatal(err)
		}
		if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != uint64(len(want)+i+1) {
			t.Fatalf("count %d (%v), want %d", n, err, len(want)+i+1)
		}
	}
	dlq, err := l.JetStream().Stream(ctx, strings.TrimSuffix(l.DLQSubject("orders"), ".dlq.orders")+"_dlq")
	if err != nil {
		t.Fatal(err)
	}
	// (A consumer the client replaced after a missed heartbeat is deleted
	// by the client shortly after: wait for that, a while at most.)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		info, err := dlq.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Consumers == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d consumers left on the dead-letter stream", info.State.Consumers)
		}
	}
	// After a whole record (SEQ alone): the next record's letters.
	all := storagetest.AllDeadLetters(t, l, "orders", 10_000)
	firstSeq := all[0].Seq
	rest, err := l.DeadLetters(ctx, "orders", eventlog.Cursor{Seq: firstSeq, Index: eventlog.AllOfRecord}, 1)
	if err != nil || len(rest) != 1 || rest[0].Seq <= firstSeq || rest[0].Index != 0 {
		t.Fatalf("after record %d: %+v %v", firstSeq, rest, err)
	}
}

// TestDeadLetterWritersShareOneLog: two processes write the same dead
// letters at once; the compare-and-set on the stream's dead-letter subject
// makes each learn the other's, so each is stored once, and the count of
// either process is the number stored.
func TestDeadLetterWritersShareOneLog(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	ns := testenv.Namespace(t)
	var logs []*eventlog.Log
	for range 2 {
		_, js := n.JetStream(t)
		l, err := eventlog.Open(ctx, js, []string{"orders", "clicks"}, eventlog.Options{Namespace: ns, DedupWindow: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, l)
	}
	all := storagetest.DeadLetters("orders", "x", 3000)
	var wg sync.WaitGroup
	for g := range 6 {
		rng := rand.New(rand.NewPCG(uint64(g), 1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				from := rng.IntN(len(all) - 300)
				if err := logs[g%2].PublishDeadLetters(ctx, "orders", all[from:from+300]); err != nil {
					t.Error(err)
					return
				}
				// Another stream's letters in the same JetStream stream
				// move its last sequence: the subject's is what counts.
				if err := logs[g%2].PublishDeadLetters(ctx, "clicks", storagetest.DeadLetters("clicks", fmt.Sprintf("c%d", g), 3)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	got := storagetest.AllDeadLetters(t, logs[0], "orders", 10_000)
	seen := map[string]bool{}
	for _, d := range got {
		if seen[d.ID] {
			t.Fatalf("letter %s stored twice", d.ID)
		}
		seen[d.ID] = true
	}
	for _, l := range logs {
		if c, err := l.DeadLetterCount(ctx, "orders"); err != nil || c != uint64(len(got)) {
			t.Fatalf("count %d (%v), listed %d", c, err, len(got))
		}
	}
	if c, err := logs[1].DeadLetterCount(ctx, "clicks"); err != nil || c != 6*3 {
		t.Fatalf("clicks count %d (%v), want 18", c, err)
	}
}

// TestNoisyStreamKeepsToItsBudget: the dead letters and too-late records
// of each stream have a budget of their own, so a stream flooding the
// queue removes only its own oldest records, never another stream's.
func TestNoisyStreamKeepsToItsBudget(t *testing.T) {
	ctx := context.Background()
	l := testenv.OpenLog(t, eventlog.Options{DLQMaxRecords: 5, LateMaxMsgs: 5}, "payments", "junk")
	if err := l.PublishDeadLetters(ctx, "payments", storagetest.DeadLetters("payments", "p", 1)); err != nil {
		t.Fatal(err)
	}
	if err := l.PublishLate(ctx, "payments", []eventlog.EventRef{{Seq: 7, Index: 3}}, [][]byte{[]byte(`{"late":1}`)}); err != nil {
		t.Fatal(err)
	}
	for w := range 40 { // 40 writes of 50 rejects: 2,000 letters in 40 records
		if err := l.PublishDeadLetters(ctx, "junk", storagetest.DeadLetters("junk", fmt.Sprint(w), 50)); err != nil {
			t.Fatal(err)
		}
		if err := l.PublishLate(ctx, "junk", []eventlog.EventRef{{Seq: uint64(w + 1)}}, [][]byte{[]byte(`{"late":2}`)}); err != nil {
			t.Fatal(err)
		}
	}
	pay := storagetest.AllDeadLetters(t, l, "payments", 100)
	if len(pay) != 1 || pay[0].ID != "p-0" {
		t.Fatalf("payments' dead letters: %+v", pay)
	}
	if n, err := l.DeadLetterCount(ctx, "payments"); err != nil || n != 1 {
		t.Fatalf("payments count %d %v", n, err)
	}
	// junk keeps its last 5 records: the letters of its last 5 writes.
	junk := storagetest.AllDeadLetters(t, l, "junk", 10_000)
	if len(junk) != 5*50 || junk[0].ID != "35-0" || junk[len(junk)-1].ID != "39-49" || dlqRecords(t, l, "junk") != 5 {
		t.Fatalf("junk keeps %d letters (%s..%s) in %d records, want its last 250 in 5", len(junk), junk[0].ID, junk[len(junk)-1].ID, dlqRecords(t, l, "junk"))
	}
	if n, err := l.DeadLetterCount(ctx, "junk"); err != nil || n != 250 {
		t.Fatalf("junk count %d %v", n, err)
	}
	if late, err := l.LateEvents(ctx, "payments", 10); err != nil || len(late) != 1 || late[0] != (eventlog.EventRef{Seq: 7, Index: 3}) {
		t.Fatalf("payments' too-late records: %+v %v", late, err)
	}
	if n, err := l.LateCount(ctx, "junk"); err != nil || n != 5 {
		t.Fatalf("junk too-late records %d %v, want 5", n, err)
	}
}

// TestLettersWrittenBeforePacking: a dead-letter stream as an earlier
// version made it (one budget for all, a message per letter) is taken
// over at Open; its letters are listed, counted, read record by record
// and removed like the others (serving/ingest replays them).
func TestLettersWrittenBeforePacking(t *testing.T) {
	ctx := context.Background()
	_, js := testenv.StartNATS(t).JetStream(t)
	l := storagetest.OpenPrePackingLog(t, js, testenv.Namespace(t))
	got := storagetest.AllDeadLetters(t, l, "orders", 2)
	if len(got) != 5 || got[0].ID != "dl:0" || got[0].Field != "n" || got[0].Index != 0 || got[2].Seq != 3 || got[3].ID != "new-0" {
		t.Fatalf("listed %+v", got)
	}
	if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != 5 {
		t.Fatalf("count %d %v, want 5", n, err)
	}
	// Read record by record: each old letter is a record of its own,
	// not packed, the new ones share one; the records hold the letters
	// listed, in order, with their places.
	last, err := l.LastDeadLetterSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var recs []eventlog.LetterRecord
	var letters []eventlog.DeadLetter
	for seq := uint64(0); ; {
		rec, found, err := l.DeadLetterRecord(ctx, "orders", seq)
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			break
		}
		if rec.Seq < seq {
			t.Fatalf("asked for a record from %d, got %d", seq, rec.Seq)
		}
		recs, letters, seq = append(recs, rec), append(letters, rec.Letters...), rec.Seq+1
	}
	if len(recs) != 4 || recs[3].Seq != last || !recs[3].Packed || len(recs[3].Letters) != 2 {
		t.Fatalf("records %+v, last %d", recs, last)
	}
	for _, rec := range recs[:3] {
		if rec.Packed || len(rec.Letters) != 1 || rec.Letters[0].Seq != rec.Seq || rec.Letters[0].Index != 0 {
			t.Fatalf("old record %+v", rec)
		}
	}
	if len(letters) != len(got) {
		t.Fatalf("records hold %d letters, the listing %d", len(letters), len(got))
	}
	for i := range got {
		if letters[i].Cursor() != got[i].Cursor() || letters[i].ID != got[i].ID || letters[i].Reason != got[i].Reason {
			t.Fatalf("letter %d: record %+v, listing %+v", i, letters[i], got[i])
		}
	}
	if why := letters[1].WhyUnreplayable(); why != eventlog.UnreplayableNotObject {
		t.Fatalf("old withheld letter: unreplayable %q", why)
	}
	if why := letters[0].WhyUnreplayable(); why != "" {
		t.Fatalf("old letter of an object: unreplayable %q", why)
	}
	// Records are removed whole.
	for _, seq := range []uint64{recs[0].Seq, recs[3].Seq} {
		if err := l.DeleteDeadLetterRecord(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	left := storagetest.AllDeadLetters(t, l, "orders", 10)
	if len(left) != 2 || left[0].Cursor() != got[1].Cursor() || left[1].Cursor() != got[2].Cursor() {
		t.Fatalf("left %+v", left)
	}
	if n, err := l.DeadLetterCount(ctx, "orders"); err != nil || n != 2 {
		t.Fatalf("count %d %v, want 2", n, err)
	}
}

// TestParseCursor: a cursor is SEQ:INDEX (after that letter) or SEQ
// (after every letter of the record), and reads back as it is written.
func TestParseCursor(t *testing.T) {
	for s, want := range map[string]eventlog.Cursor{"175:3": {Seq: 175, Index: 3}, "175:0": {Seq: 175}, "175": {Seq: 175, Index: eventlog.AllOfRecord}, "0": {Index: eventlog.AllOfRecord}} {
		c, err := eventlog.ParseCursor(s)
		if err != nil || c != want || c.String() != s {
			t.Errorf("ParseCursor(%q) = %+v (%v), %q; want %+v", s, c, err, c.String(), want)
		}
	}
	for _, s := range []string{"", "x", "-1", "3:", "3:-1", "3:x", "3:1:2", "1.5"} {
		if c, err := eventlog.ParseCursor(s); err == nil {
			t.Errorf("ParseCursor(%q) = %+v, want an error", s, c)
		}
	}
}
