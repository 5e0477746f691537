package speed

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// In-memory fakes of the speed layer's interfaces, for the unit tests of
// the stream loop's steps. They keep the contracts the steps rely on (the
// store's compare-and-set, ack-all); the tests against nats-server and
// redis-server guard the whole loop over the real ones.

// journal records the calls that must come in order (publish late,
// commit, ack) across the fakes.
type journal struct {
	mu  sync.Mutex
	ops []string
}

func (j *journal) add(format string, a ...any) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.ops = append(j.ops, fmt.Sprintf(format, a...))
}

func (j *journal) list() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]string(nil), j.ops...)
}

// fakeConsumer delivers the batches queued with deliver, one per Fetch.
type fakeConsumer struct {
	j       *journal
	mu      sync.Mutex
	batches [][]eventlog.Msg
	acks    []uint64 // Ack and AckNoWait, in order
	naks    []uint64
	info    eventlog.Info
	closed  bool
}

func (c *fakeConsumer) deliver(msgs ...eventlog.Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches = append(c.batches, msgs)
}

func (c *fakeConsumer) Fetch(ctx context.Context, max int, wait time.Duration) ([]eventlog.Msg, error) {
	c.mu.Lock()
	if len(c.batches) > 0 {
		b := c.batches[0]
		c.batches = c.batches[1:]
		c.mu.Unlock()
		return b, nil
	}
	c.mu.Unlock()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(wait):
		return nil, nil
	}
}

func (c *fakeConsumer) ack(m eventlog.Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.acks = append(c.acks, m.Seq)
	c.j.add("ack %d", m.Seq)
}

func (c *fakeConsumer) Ack(_ context.Context, m eventlog.Msg) error { c.ack(m); return nil }
func (c *fakeConsumer) AckNoWait(m eventlog.Msg) error              { c.ack(m); return nil }

func (c *fakeConsumer) Nak(m eventlog.Msg, _ time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.naks = append(c.naks, m.Seq)
	return nil
}

func (c *fakeConsumer) Info(context.Context) (eventlog.Info, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info, nil
}

func (c *fakeConsumer) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
}

func (c *fakeConsumer) acked() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.acks...)
}

// fakeLog hands out one consumer and records where it was opened from.
type fakeLog struct {
	j      *journal
	c      *fakeConsumer
	mu     sync.Mutex
	info   eventlog.StreamInfo
	starts []eventlog.Start
	late   []eventlog.EventRef
	data   [][]byte
}

func (l *fakeLog) Consumer(_ context.Context, _ string, _ int, name string, start eventlog.Start, _ int) (*fakeConsumer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if name != "speed" {
		return nil, fmt.Errorf("fake log: unexpected consumer %q", name)
	}
	l.starts = append(l.starts, start)
	return l.c, nil
}

func (l *fakeLog) opened() []eventlog.Start {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]eventlog.Start(nil), l.starts...)
}

func (l *fakeLog) DeleteConsumer(context.Context, string, int, string) error { return nil }

func (l *fakeLog) Info(context.Context, string, int) (eventlog.StreamInfo, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.info, nil
}

func (l *fakeLog) PublishLate(_ context.Context, _ string, refs []eventlog.EventRef, data [][]byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.late = append(l.late, refs...)
	for _, d := range data {
		l.data = append(l.data, append([]byte(nil), d...))
	}
	l.j.add("late %d", len(refs))
	return nil
}

func (l *fakeLog) LateEvents(context.Context, string, int) ([]eventlog.EventRef, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]eventlog.EventRef(nil), l.late...), nil
}

// fakeCommit is one successful Commit: the position moved from prev to
// next, and the events the deltas counted per view (the "n" count slot).
type fakeCommit struct {
	prev      uint64
	next      speedstore.Position
	freshFrom int64
	counts    []float64
}

// fakeStore keeps one stream's position with the compare-and-set of
// speedstore.Store.Commit.
type fakeStore struct {
	j      *journal
	gate   chan struct{} // when set, each Commit waits for a value from it
	mu     sync.Mutex
	pos    *speedstore.Position // nil: absent
	commit []fakeCommit
	resets [][]string
	legacy [][]string // the keys of each DropLegacy
	// beforeCommit, when set, runs (under the lock) before the
	// compare-and-set of each Commit: another writer moving the position.
	beforeCommit func(s *fakeStore)
}

func (s *fakeStore) Position(context.Context, string, int) (speedstore.Position, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pos == nil {
		return speedstore.Position{}, false, nil
	}
	return *s.pos, true, nil
}

func (s *fakeStore) Commit(ctx context.Context, _ string, _ int, prev uint64, next speedstore.Position, freshFrom int64, deltas []*logic.Delta, _ ...*logic.EntityDelta) error {
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.beforeCommit != nil {
		s.beforeCommit(s)
	}
	var cur uint64
	if s.pos != nil {
		cur = s.pos.Seq
	}
	if cur != prev || (s.pos == nil && prev > 0) {
		return fmt.Errorf("%w: fake: expected %d, at %d", speedstore.ErrConflict, prev, cur)
	}
	p := next
	p.Views = map[string]speedstore.ViewPosition{}
	for _, d := range deltas {
		p.Views[d.View.StateKey()] = speedstore.ViewPosition{Joined: next.Seq, JoinedOK: true}
	}
	if s.pos != nil {
		p.Target = s.pos.Target
	}
	s.pos = &p
	c := fakeCommit{prev: prev, next: next, freshFrom: freshFrom}
	for _, d := range deltas {
		var n float64
		for _, cell := range d.Cells {
			n += cell.Num[0]
		}
		c.counts = append(c.counts, n)
	}
	s.commit = append(s.commit, c)
	s.j.add("commit %d", next.Seq)
	return nil
}

func (s *fakeStore) commits() []fakeCommit {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]fakeCommit(nil), s.commit...)
}

func (s *fakeStore) setPos(p *speedstore.Position) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pos = p
}

// DropLegacy records the call: the store has no state from before
// partitions.
func (s *fakeStore) DropLegacy(_ context.Context, _ string, keys []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.legacy = append(s.legacy, keys)
	return nil
}

func (s *fakeStore) Reset(_ context.Context, _ string, _ int, keys []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pos = nil
	s.resets = append(s.resets, keys)
	return nil
}

func (s *fakeStore) StateKeys(context.Context) ([]string, error)          { return nil, nil }
func (s *fakeStore) DropState(context.Context, string, int, string) error { return nil }
func (s *fakeStore) BeginRebuild(context.Context, string, int, string, int64) (speedstore.Rebuild, error) {
	return speedstore.Rebuild{}, speedstore.ErrJoined
}
func (s *fakeStore) CommitRebuild(context.Context, string, int, uint64, uint64, uint64, *logic.Delta) (bool, error) {
	return false, errors.New("fake store: no rebuild expected")
}

// OrdersYAML declares the stream every test catalog of the package has
// (the unit tests' here, the integration tests' in speed_test): a
// configuration's streams section, its views to follow.
const OrdersYAML = `
streams:
  orders:
    time: ts
    id: id
    allowed_lateness: 1h
    fields: { ts: time, id: string, country: string, amount: float }
    required: [ts, country]
`

// unitYAML: two views whose first measure is a count.
const unitYAML = OrdersYAML + `views:
  by_country:
    stream: orders
    window: 1m
    group_by: [country]
    measures: { n: count(), rev: sum(amount) }
  total:
    stream: orders
    window: 10m
    measures: { n: count() }
`

// unit is a layer over the fakes, and one stream loop of it.
type unit struct {
	j     *journal
	log   *fakeLog
	c     *fakeConsumer
	store *fakeStore
	layer *Layer
	s     *logic.Stream
	views []*logic.View
}

func newUnit(t *testing.T, cutoffs CutoffSource) *unit {
	t.Helper()
	cfg, err := config.Parse([]byte(unitYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	j := &journal{}
	c := &fakeConsumer{j: j}
	u := &unit{j: j, c: c, log: &fakeLog{j: j, c: c}, store: &fakeStore{j: j}, s: cat.Streams["orders"], views: cat.ViewsOf("orders")}
	u.layer = New(Config{BatchSize: 100, MaxWait: 10 * time.Millisecond, Epoch: time.Second, MaxCells: 1 << 20}, u.log, u.store, cutoffs, nil, cat, testenv.Logger(t), nil)
	return u
}

// loop returns a new stream loop of the stream.
func (u *unit) loop() *streamLoop { return u.layer.newLoop(u.s, 0, u.views) }

// joinedAt is a stored position at seq every view has joined.
func (u *unit) joinedAt(seq uint64, wm int64) *speedstore.Position {
	p := &speedstore.Position{Seq: seq, Watermark: wm, Owner: "earlier", Views: map[string]speedstore.ViewPosition{}}
	for _, v := range u.views {
		p.Views[v.StateKey()] = speedstore.ViewPosition{Joined: seq, JoinedOK: true}
	}
	return p
}

// record is a log record of the events (ts unix ms each) that arrived at
// arrival, packed as the log packs them (eventlog's documented layout),
// and the canonical records of its events.
func (u *unit) record(t *testing.T, seq uint64, arrival int64, ts ...int64) (eventlog.Msg, [][]byte) {
	t.Helper()
	b := []byte{0xB1}
	b = binary.AppendUvarint(b, uint64(len(ts)))
	var recs [][]byte
	for i, x := range ts {
		raw, _ := json.Marshal(map[string]any{"ts": x, "id": fmt.Sprintf("%d-%d", seq, i), "country": []string{"DE", "FR"}[i%2], "amount": 1.0})
		pe, rec, err := u.s.Prepare(raw, arrival)
		if err != nil {
			t.Fatal(err)
		}
		b = binary.AppendUvarint(b, uint64(len(pe.ID)))
		b = append(b, pe.ID...)
		b = binary.AppendUvarint(b, uint64(len(rec)))
		b = append(b, rec...)
		recs = append(recs, rec)
	}
	return eventlog.Msg{Seq: seq, Arrival: arrival, Data: b}, recs
}

// records returns records from..to, one event each, arrived now.
func (u *unit) records(t *testing.T, from, to uint64) []eventlog.Msg {
	t.Helper()
	now := time.Now().UnixMilli()
	var out []eventlog.Msg
	for seq := from; seq <= to; seq++ {
		m, _ := u.record(t, seq, now, now-int64(seq))
		out = append(out, m)
	}
	return out
}
