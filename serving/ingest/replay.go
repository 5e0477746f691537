package ingest

import (
	"context"
	"fmt"
	"strconv"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
)

// ReplayResult counts what a dead-letter replay did.
type ReplayResult struct {
	Replayed int `json:"replayed"` // now valid: moved into the stream
	Kept     int `json:"kept"`     // still invalid: re-queued with their new reason
	// Unreplayable: letters that can never become events (see
	// eventlog.DeadLetter.WhyUnreplayable), left in the queue unchanged.
	Unreplayable int `json:"unreplayable"`
}

// ReplayDeadLetters runs every dead letter of a stream (those stored when
// it starts) along the path again, with the stream's current logic, a
// record at a time. Those that pass are appended to the clean log, with
// their event id, or "dlq-<seq>:<index>" when they have none, as the id
// the log deduplicates; those still invalid are re-queued with their new
// reason and source under the id "requeue:<seq>:<index>"; then the record
// is deleted. A record holding only letters that can never be replayed is
// left as it is; in a record with others they are re-queued unchanged.
//
// So replaying twice replays nothing twice, and a replay that died between
// its appends and the delete doubles nothing when run again within the
// dedup window: the appends repeat under the same ids and are dropped.
// (Letters of records written before dead letters were packed keep the
// ids "dlq-<seq>" and "requeue:<seq>" they always had.) An error leaves
// the records not yet replayed in the queue; the result counts those that
// were.
func (in *Ingester) ReplayDeadLetters(ctx context.Context, stream, source string) (ReplayResult, error) {
	var res ReplayResult
	s, err := in.stream(stream)
	if err != nil {
		return res, err
	}
	last, err := in.log.LastDeadLetterSeq(ctx) // letters re-queued by this replay come after it
	if err != nil {
		return res, fmt.Errorf("ingest: replay %s: %w", stream, err)
	}
	for seq := uint64(1); seq <= last; {
		rec, found, err := in.log.DeadLetterRecord(ctx, stream, seq)
		if err != nil {
			return res, fmt.Errorf("ingest: replay %s: %w", stream, err)
		}
		if !found || rec.Seq > last {
			return res, nil
		}
		seq = rec.Seq + 1
		if err := in.replayRecord(ctx, s, source, rec, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// replayRecord replays the letters of one record and deletes it.
func (in *Ingester) replayRecord(ctx context.Context, s *logic.Stream, source string, rec eventlog.LetterRecord, res *ReplayResult) error {
	never := 0
	for i := range rec.Letters {
		if rec.Letters[i].WhyUnreplayable() != "" {
			never++
		}
	}
	if never == len(rec.Letters) {
		res.Unreplayable += never // nothing would change: the record stays
		return nil
	}
	p := newPass(in.log, s, in.now(), in.log.DeadLetterWriter(s.Name))
	var got ReplayResult
	for _, d := range rec.Letters {
		place := strconv.FormatUint(rec.Seq, 10)
		if rec.Packed {
			place += ":" + strconv.Itoa(d.Index)
		}
		// Re-queued under an id naming the letter it replaces, so a crash
		// before the delete below cannot double it.
		requeue := "requeue:" + place
		if why := d.WhyUnreplayable(); why != "" {
			d.ID, d.Unreplayable = requeue, why
			if err := p.deadLetter(ctx, d); err != nil {
				return fmt.Errorf("ingest: replay record %d: %w", rec.Seq, err)
			}
			got.Unreplayable++
			continue
		}
		_, r, rej, err := p.prepare(d.Payload, true)
		if err != nil {
			return fmt.Errorf("ingest: replay %s: %w", place, err)
		}
		if rej == nil {
			if r.ID == "" {
				r.ID = "dlq-" + place
			}
			p.accept(r)
			got.Replayed++
			continue
		}
		if err := p.reject(ctx, requeue, rej, source, d.Payload); err != nil {
			return fmt.Errorf("ingest: replay record %d: %w", rec.Seq, err)
		}
		got.Kept++
	}
	if _, err := p.store(ctx, true); err != nil {
		return fmt.Errorf("ingest: replay record %d: %w", rec.Seq, err)
	}
	if err := in.log.DeleteDeadLetterRecord(ctx, rec.Seq); err != nil {
		return fmt.Errorf("ingest: replay record %d: %w", rec.Seq, err)
	}
	res.Replayed += got.Replayed
	res.Kept += got.Kept
	res.Unreplayable += got.Unreplayable
	return nil
}
