package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/tests/testenv"
)

// The limits next to the packed-record consume (layerEnv.rawConsume): raw
// JetStream consume of one message per event, and parquet-go writing the
// same rows through the lake without the log.

// layerEvent is one event of a layerEnv's log, read back and decoded.
type layerEvent struct {
	id, rec []byte   // as packed into the log record
	row     lake.Row // decoded, as the archiver buffers it
}

// events reads every log record of e back, unpacks and decodes its events
// (untimed): the same events the layers consume.
func (e *layerEnv) events(t *testing.T) []layerEvent {
	ctx := context.Background()
	s := e.cat.Streams["orders"]
	c, err := e.log.Consumer(ctx, "orders", 0, "bench-decode", eventlog.Start{Seq: 1}, 8000)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := make([]layerEvent, 0, e.n)
	var got uint64
	for got < e.last {
		msgs, err := c.Fetch(ctx, 2000, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			err := eventlog.Unpack(m.Data, func(i int, id, rec []byte) error {
				id, rec = append([]byte(nil), id...), append([]byte(nil), rec...)
				ev, err := s.Decode(rec)
				if err != nil {
					return err
				}
				out = append(out, layerEvent{id: id, rec: rec, row: lake.Row{Seq: m.Seq, Index: i, Arrival: m.Arrival, Event: ev}})
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			got = m.Seq
		}
		if len(msgs) > 0 {
			if err := c.Ack(ctx, msgs[len(msgs)-1]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(out) != e.n {
		t.Fatalf("read back %d events, published %d", len(out), e.n)
	}
	return out
}

// perEventLimit is how many events rawConsumePerEvent publishes at most:
// one message each is slow to publish.
const perEventLimit = 300_000

// rawConsumePerEvent is the per-message limit: on a NATS of its own, n of
// the events (cycled when n > len(evs)) are published one message each (the
// event's record as data, its id as Nats-Msg-Id: the log's layout before
// packing), then a pull consumer (ack-all, fetching in batches, acking the
// last of each) reads them all, doing nothing else. It returns the
// consumer's events/s, the better of two consumers.
func rawConsumePerEvent(t *testing.T, evs []layerEvent, n int) float64 {
	srv := testenv.StartNATS(t)
	nc, js := srv.JetStream(t)
	ctx := context.Background()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "raw", Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage, Duplicates: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	var bytes int
	for i := 0; i < n; i++ {
		ev := evs[i%len(evs)]
		id := string(ev.id)
		if i >= len(evs) {
			id = fmt.Sprint(id, "#", i/len(evs))
		}
		bytes += len(ev.rec)
		m := &nats.Msg{Subject: "raw.orders", Data: ev.rec, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
		if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		t.Fatal("per-message publish did not complete")
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(n) {
		t.Fatalf("per-message stream holds %d messages, published %d", info.State.Msgs, n)
	}
	var rate float64
	for run := range 2 {
		rate = max(rate, consumeAll(t, st, fmt.Sprint("raw-per-event-", run), n))
	}
	nc.Close()
	srv.Stop() // idle from here: out of the way of what is measured next
	t.Logf("per-message consume: %d messages of %d bytes on average: %.0f/s", n, bytes/n, rate)
	return rate
}

// consumeAll times a new pull consumer (ack-all, fetching in batches,
// acking the last of each) reading the n messages of st, doing nothing else.
func consumeAll(t *testing.T, st jetstream.Stream, name string, n int) float64 {
	ctx := context.Background()
	c, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckAllPolicy,
		AckWait: 5 * time.Second, MaxAckPending: 8000, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for got := 0; got < n; {
		// No more than remain: a batch asking for more would wait out its
		// expiry at the end.
		batch, err := c.Fetch(min(2000, n-got), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var last jetstream.Msg
		for m := range batch.Messages() {
			last = m
			got++
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if last == nil {
			continue
		}
		if err := last.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// parquetWrite is the Parquet limit of the archiver: the events/s of
// writing the decoded rows through lake.Write (parquet-go) into a lake of
// its own, in chunks of maxRows (the archiver's MaxRows), without the log
// or decoding; the better of two runs.
func parquetWrite(t *testing.T, s *logic.Stream, evs []layerEvent, maxRows int) float64 {
	rows := make([]lake.Row, len(evs))
	for i := range evs {
		rows[i] = evs[i].row
	}
	// Best of two runs, each into a lake of its own, after a GC (the
	// decoded events are fresh garbage-collector work).
	var best float64
	for range 2 {
		lk, err := lake.OpenDir(filepath.Join(t.TempDir(), "lake"))
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		start := time.Now()
		for i := 0; i < len(rows); i += maxRows {
			if _, err := lk.Write(s, rows[i:min(i+maxRows, len(rows))]); err != nil {
				t.Fatal(err)
			}
		}
		best = max(best, float64(len(rows))/time.Since(start).Seconds())
	}
	return best
}
