package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/braid-data/braid/logic"
)

// ReplayResult counts what a dead-letter replay did.
type ReplayResult struct {
	Replayed int `json:"replayed"` // now valid: moved into the stream
	Kept     int `json:"kept"`     // still invalid: kept with their new reason
}

// ReplayDeadLetters runs every dead letter of a stream through the stream's
// current schema again. Those that pass are appended to the clean log (with
// their event id, or "dlq-<seq>" when they have none, as the id the log
// deduplicates, so a crash between append and delete cannot double them)
// and removed from the queue; the others are re-queued with their new reason (with the id
// "requeue:<seq>"). Replaying twice, or again after a crash, does not
// duplicate anything.
func (l *Log) ReplayDeadLetters(ctx context.Context, s *logic.Stream, source string) (ReplayResult, error) {
	var res ReplayResult
	var after uint64
	st, err := l.js.Stream(ctx, l.opts.Namespace+"_dlq")
	if err != nil {
		return res, fmt.Errorf("eventlog: dlq stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return res, fmt.Errorf("eventlog: dlq info: %w", err)
	}
	last := info.State.LastSeq // letters re-queued by this replay come after it
	for {
		dls, err := l.DeadLetters(ctx, s.Name, after, 500)
		if err != nil {
			return res, err
		}
		if len(dls) == 0 {
			return res, nil
		}
		for _, d := range dls {
			if d.Seq > last {
				return res, nil
			}
			after = d.Seq
			ev, rec, err := s.PrepareMasked(d.Payload, time.Now().UnixMilli())
			if err == nil {
				id := ev.ID
				if id == "" {
					id = "dlq-" + strconv.FormatUint(d.Seq, 10)
				}
				if err := l.Publish(ctx, s.Name, []Record{{ID: id, Data: rec}}); err != nil {
					return res, fmt.Errorf("eventlog: replay %d: %w", d.Seq, err)
				}
				res.Replayed++
			} else {
				var rej *logic.RejectError
				if !errors.As(err, &rej) {
					return res, err
				}
				// Re-queued under an id naming the letter it replaces, so a
				// crash before the delete below cannot double it.
				nd := DeadLetter{ID: "requeue:" + strconv.FormatUint(d.Seq, 10), Stream: s.Name, Reason: rej.Reason, Field: rej.Field, Source: source, Time: time.Now().UTC(), Payload: d.Payload}
				if err := l.PublishDeadLetters(ctx, s.Name, []DeadLetter{nd}); err != nil {
					return res, err
				}
				res.Kept++
			}
			if err := l.DeleteDeadLetter(ctx, d.Seq); err != nil {
				return res, err
			}
		}
	}
}
