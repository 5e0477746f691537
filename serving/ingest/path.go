package ingest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
)

// The one path every event takes into the log, whether it comes from a
// request, a file or the dead-letter queue: prepare it with the stream's
// logic (an event too large for a log record is rejected like an invalid
// one); hand a reject to the dead-letter queue with its reason as it
// comes; hold the accepted ones; then, once every dead letter is stored,
// append the accepted ones together (the log packs them into as few
// records as its message limit allows).
//
// Dead letters first: if a write fails the caller retries the whole, and
// a retry may then double only dead letters (not even those within the
// dedup window), never events of a stream without ids.
//
// With decisions (decide.go) the accepted events are held with their
// logic.Event as well; once all are prepared the stream's rules decide
// each, the blocked ones leave the clean records, and the events held
// back (blocked, and those for review) are stored after the dead letters.
// Every one of them has an id (its own, or one naming its place in the
// request), so a retry stores them once too: they are written beside the
// clean events when those all have ids (a retry after a failure of
// either doubles nothing), else before them, like the dead letters.

// pass is one run of the path over events of one stream, prepared at one
// time.
type pass struct {
	log      Log
	s        *logic.Stream
	now      time.Time
	maxEvent int
	dls      *eventlog.DeadLetterWriter
	recs     []eventlog.Record // accepted, not yet appended
	rr       int               // the next partition of an event without a partition key

	// With decisions: the accepted events (as recs) and their indexes in
	// the request, then the decided ones to keep.
	held    []logic.Event
	heldIdx []int
	decided []eventlog.Decided
}

func newPass(log Log, s *logic.Stream, now time.Time, dls *eventlog.DeadLetterWriter) *pass {
	return &pass{log: log, s: s, now: now, maxEvent: log.MaxEvent(), dls: dls, rr: rand.IntN(s.Partitions)}
}

// partition is the partition of an accepted event: its key's
// (logic.Stream.PartitionOf), else the next one round robin.
func (p *pass) partition(ev *logic.Event) int {
	if n := p.s.PartitionOf(ev); n >= 0 {
		return n
	}
	p.rr = (p.rr + 1) % p.s.Partitions
	return p.rr
}

// prepare runs a raw event through the stream's logic: the event and its
// record, or why it is rejected (rej non-nil), or an error that is no
// verdict on the event and fails the whole. masked: raw is a dead
// letter's payload, its PII fields masked already.
func (p *pass) prepare(raw []byte, masked bool) (ev logic.Event, rec eventlog.Record, rej *logic.RejectError, err error) {
	prepare := p.s.Prepare
	if masked {
		prepare = p.s.PrepareMasked
	}
	ev, data, err := prepare(raw, p.now.UnixMilli())
	if err == nil && len(data)+len(ev.ID) > p.maxEvent {
		err = &logic.RejectError{Reason: fmt.Sprintf("event record of %d bytes is larger than the log's message limit of %d bytes", len(data), p.maxEvent)}
	}
	if err == nil {
		return ev, eventlog.Record{ID: ev.ID, Data: data, Part: p.partition(&ev)}, nil, nil
	}
	if errors.As(err, &rej) {
		return logic.Event{}, eventlog.Record{}, rej, nil
	}
	return logic.Event{}, eventlog.Record{}, nil, err
}

// accept holds an accepted event until store.
func (p *pass) accept(rec eventlog.Record) { p.recs = append(p.recs, rec) }

// hold holds an accepted event until store, with its event and its index
// in the request, for decisions.
func (p *pass) hold(ev logic.Event, rec eventlog.Record, index int) {
	p.recs = append(p.recs, rec)
	p.held = append(p.held, ev)
	p.heldIdx = append(p.heldIdx, index)
}

// reject hands a rejected event to the dead-letter queue under id, with
// its reason, source and payload (PII masked), at the pass's time.
func (p *pass) reject(ctx context.Context, id string, rej *logic.RejectError, source string, payload []byte) error {
	return p.deadLetter(ctx, eventlog.DeadLetter{ID: id, Stream: p.s.Name, Reason: rej.Reason, Field: rej.Field,
		Source: source, Time: p.now.UTC(), Payload: payload})
}

// deadLetter hands a dead letter to the queue as it is.
func (p *pass) deadLetter(ctx context.Context, d eventlog.DeadLetter) error {
	if err := p.dls.Add(ctx, d); err != nil {
		return fmt.Errorf("ingest: dead-letter to %s: %w", p.s.Name, err)
	}
	return nil
}

// store returns once the accepted events are appended, after every dead
// letter handed over is stored when closeDLS (else their writer stores
// them later: see Load) and every decided event is kept. It returns how
// many events were appended.
func (p *pass) store(ctx context.Context, closeDLS bool) (int, error) {
	if closeDLS {
		if err := p.dls.Close(ctx); err != nil {
			return 0, fmt.Errorf("ingest: dead-letter to %s: %w", p.s.Name, err)
		}
	}
	var decided chan error // the decided events' write, when beside the clean one
	if len(p.decided) > 0 {
		if !allHaveIDs(p.recs) {
			if err := p.log.PublishDecided(ctx, p.s.Name, p.decided); err != nil {
				return 0, fmt.Errorf("ingest: keep decided events of %s: %w", p.s.Name, err)
			}
		} else {
			decided = make(chan error, 1)
			go func() { decided <- p.log.PublishDecided(ctx, p.s.Name, p.decided) }()
		}
	}
	var err error
	if len(p.recs) > 0 {
		if err = p.log.Publish(ctx, p.s.Name, p.recs); err != nil {
			err = fmt.Errorf("ingest: publish to %s: %w", p.s.Name, err)
		}
	}
	if decided != nil {
		if derr := <-decided; derr != nil {
			err = errors.Join(err, fmt.Errorf("ingest: keep decided events of %s: %w", p.s.Name, derr))
		}
	}
	if err != nil {
		return 0, err
	}
	return len(p.recs), nil
}

// allHaveIDs reports whether every record has an id: a retry of them
// stores none twice.
func allHaveIDs(recs []eventlog.Record) bool {
	for i := range recs {
		if recs[i].ID == "" {
			return false
		}
	}
	return true
}
