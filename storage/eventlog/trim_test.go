package eventlog_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// storedTimes reads the time the server stored each record of the
// orders log at, by sequence.
func storedTimes(t *testing.T, l *eventlog.Log) map[uint64]time.Time {
	t.Helper()
	ctx := context.Background()
	s, err := l.JetStream().Stream(ctx, l.StreamName("orders", 0))
	if err != nil {
		t.Fatal(err)
	}
	info, err := l.Info(ctx, "orders", 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[uint64]time.Time{}
	for seq := info.FirstSeq; seq <= info.LastSeq && info.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("record %d: %v", seq, err)
		}
		out[seq] = m.Time
	}
	return out
}

// TestTrim: the log loses only records that are both stored before the
// time given and at or below the sequence given (the lake's checkpoint):
// old records the archiver has not written stay, young archived ones too.
func TestTrim(t *testing.T) {
	ctx := context.Background()
	l := open(t)
	publishN(t, l, 10)
	times := storedTimes(t, l)
	if len(times) != 10 {
		t.Fatalf("%d records stored", len(times))
	}
	// Independently of Trim: the first record stored at or after a time.
	firstFrom := func(before time.Time) uint64 {
		for seq := uint64(1); seq <= 10; seq++ {
			if !times[seq].Before(before) {
				return seq
			}
		}
		return 11
	}
	mid := times[6]
	check := func(what string, before time.Time, upTo uint64, wantFirst, wantMsgs uint64) {
		t.Helper()
		was, err := l.Info(ctx, "orders", 0)
		if err != nil {
			t.Fatal(err)
		}
		n, err := l.Trim(ctx, "orders", 0, before, upTo)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		info, err := l.Info(ctx, "orders", 0)
		if err != nil {
			t.Fatal(err)
		}
		if info.Msgs != wantMsgs || (wantMsgs > 0 && info.FirstSeq != wantFirst) || n != was.Msgs-info.Msgs {
			t.Fatalf("%s: trimmed %d, log %+v; want first %d, %d records, %d trimmed", what, n, info, wantFirst, wantMsgs, was.Msgs-wantMsgs)
		}
	}
	// Nothing is older than the first record: nothing goes.
	check("nothing old", times[1], 10, 1, 10)
	// Old but not archived past 3: records 4.. stay however old.
	check("archived up to 3", time.Now().Add(time.Hour), 3, 4, 7)
	// Archived up to 10, old before mid: the records from mid's on stay.
	f := firstFrom(mid)
	if f < 4 {
		f = 4
	}
	check("old before mid", mid, 10, f, 11-f)
	// Again: idempotent.
	check("again", mid, 10, f, 11-f)
	// Archived up to 8, everything old: 9 and 10 stay.
	check("archived up to 8", time.Now().Add(time.Hour), 8, 9, 2)
	// Everything old and archived: the log is empty; an empty log trims
	// nothing; a new record is kept.
	check("all", time.Now().Add(time.Hour), 10, 0, 0)
	check("empty", time.Now().Add(time.Hour), 10, 0, 0)
	publishN(t, l, 1)
	check("a new record not archived", time.Now().Add(time.Hour), 10, 11, 1)
	// A sequence past the log's end trims it to its end, no further: the
	// next record takes the next sequence.
	check("past the end", time.Now().Add(time.Hour), 1<<40, 0, 0)
	publishN(t, l, 1)
	if info, err := l.Info(ctx, "orders", 0); err != nil || info.FirstSeq != 12 || info.LastSeq != 12 {
		t.Fatalf("after trimming past the end: %+v, %v", info, err)
	}
	if _, err := l.Trim(ctx, "nope", 0, time.Now(), 5); err == nil {
		t.Error("trim of an unknown stream: no error")
	}
}

// TestOpenRemovesJetStreamMaxAge: a clean stream created with a JetStream
// MaxAge (as earlier versions did from nats.max_age) loses it at Open, with
// a log line, and keeps its records; the clean streams Open creates have
// none, whatever nats.max_age is.
func TestOpenRemovesJetStreamMaxAge(t *testing.T) {
	ctx := context.Background()
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	ns := testenv.Namespace(t)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: ns + "_events_orders", Subjects: []string{ns + ".events.orders"}, MaxAge: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, ns+".events.orders", []byte("old")); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	opts := eventlog.Options{Namespace: ns, MaxAge: 2 * time.Hour, Logger: logger}
	l, err := eventlog.Open(ctx, js, []string{"orders", "pageviews"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"orders", "pageviews"} {
		st, err := js.Stream(ctx, l.StreamName(s, 0))
		if err != nil {
			t.Fatal(err)
		}
		if age := st.CachedInfo().Config.MaxAge; age != 0 {
			t.Errorf("%s: JetStream max age %v after Open", s, age)
		}
	}
	if info, err := l.Info(ctx, "orders", 0); err != nil || info.Msgs != 1 {
		t.Errorf("orders after Open: %+v, %v", info, err)
	}
	out := buf.String()
	if strings.Count(out, "removing the log's JetStream max age") != 1 || !strings.Contains(out, "stream="+ns+"_events_orders") || !strings.Contains(out, "jetstream_max_age=1h0m0s") {
		t.Errorf("log:\n%s", out)
	}
	// A second Open has nothing to say.
	buf.Reset()
	if _, err := eventlog.Open(ctx, js, []string{"orders"}, opts); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "max age") {
		t.Errorf("second Open logged:\n%s", buf.String())
	}
}
