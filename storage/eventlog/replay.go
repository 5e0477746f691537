package eventlog

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/logic"
)

// ReplayResult counts what a dead-letter replay did.
type ReplayResult struct {
	Replayed int `json:"replayed"` // now valid: moved into the stream
	Kept     int `json:"kept"`     // still invalid: re-queued with their new reason
	// Unreplayable: letters that can never become events (see
	// DeadLetter.Unreplayable), left in the queue unchanged.
	Unreplayable int `json:"unreplayable"`
}

// ReplayDeadLetters runs every dead letter of a stream (those stored when
// it starts) through the stream's current logic again, a record at a
// time. Those that pass are appended to the clean log, with their event
// id, or "dlq-<seq>:<index>" when they have none, as the id the log
// deduplicates; those still invalid are re-queued with their new reason
// under the id "requeue:<seq>:<index>"; then the record is deleted. A
// record holding only letters that can never be replayed is left as it
// is; in a record with others they are re-queued unchanged.
//
// So replaying twice replays nothing twice, and a replay that died between
// its appends and the delete doubles nothing when run again within the
// dedup window: the appends repeat under the same ids and are dropped.
// (Letters of records written before dead letters were packed keep the
// ids "dlq-<seq>" and "requeue:<seq>" they always had.)
func (l *Log) ReplayDeadLetters(ctx context.Context, s *logic.Stream, source string) (ReplayResult, error) {
	var res ReplayResult
	st, err := l.js.Stream(ctx, l.dlqName())
	if err != nil {
		return res, fmt.Errorf("eventlog: dlq stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("eventlog: dlq info: %w", err)
	}
	last := info.State.LastSeq // letters re-queued by this replay come after it
	subj := l.DLQSubject(s.Name)
	for seq := uint64(1); seq <= last; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return res, nil
		}
		if err != nil {
			return res, fmt.Errorf("eventlog: read %s: %w", l.dlqName(), err)
		}
		if m.Sequence > last {
			return res, nil
		}
		seq = m.Sequence + 1
		dls, err := decodeLetters(s.Name, m, 0, math.MaxInt)
		if err != nil {
			return res, err
		}
		if err := l.replayRecord(ctx, s, source, m.Sequence, packedRecord(m.Data), dls, &res); err != nil {
			return res, err
		}
	}
	return res, nil
}

// replayRecord replays the letters of one record and deletes it.
func (l *Log) replayRecord(ctx context.Context, s *logic.Stream, source string, seq uint64, packed bool, dls []DeadLetter, res *ReplayResult) error {
	never := 0
	for i := range dls {
		if dls[i].unreplayable() != "" {
			never++
		}
	}
	if never == len(dls) {
		res.Unreplayable += never // nothing would change: the record stays
		return nil
	}
	now := time.Now()
	maxEvent := l.MaxEvent()
	var clean []Record
	var requeue []DeadLetter
	var got ReplayResult
	for _, d := range dls {
		place := strconv.FormatUint(seq, 10)
		if packed {
			place += ":" + strconv.Itoa(d.Index)
		}
		if why := d.unreplayable(); why != "" {
			d.ID, d.Unreplayable = "requeue:"+place, why
			requeue = append(requeue, d)
			got.Unreplayable++
			continue
		}
		ev, rec, err := s.PrepareMasked(d.Payload, now.UnixMilli())
		if err == nil && len(rec)+len(ev.ID) > maxEvent {
			err = &logic.RejectError{Reason: fmt.Sprintf("event record of %d bytes is larger than the log's message limit of %d bytes", len(rec), maxEvent)}
		}
		if err == nil {
			id := ev.ID
			if id == "" {
				id = "dlq-" + place
			}
			clean = append(clean, Record{ID: id, Data: rec})
			got.Replayed++
			continue
		}
		var rej *logic.RejectError
		if !errors.As(err, &rej) {
			return fmt.Errorf("eventlog: replay %s: %w", place, err)
		}
		// Re-queued under an id naming the letter it replaces, so a crash
		// before the delete below cannot double it.
		requeue = append(requeue, DeadLetter{ID: "requeue:" + place, Stream: s.Name, Reason: rej.Reason, Field: rej.Field,
			Source: source, Time: now.UTC(), Payload: d.Payload})
		got.Kept++
	}
	if err := l.Publish(ctx, s.Name, clean); err != nil {
		return fmt.Errorf("eventlog: replay record %d: %w", seq, err)
	}
	if err := l.PublishDeadLetters(ctx, s.Name, requeue); err != nil {
		return fmt.Errorf("eventlog: replay record %d: %w", seq, err)
	}
	if err := l.deleteRecord(ctx, seq); err != nil {
		return err
	}
	res.Replayed += got.Replayed
	res.Kept += got.Kept
	res.Unreplayable += got.Unreplayable
	return nil
}
