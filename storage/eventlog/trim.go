package eventlog

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Trim removes from partition p of a stream's clean log the records that are both stored
// before the time before (by the server's clock) and at or below sequence
// upTo, and returns how many went. The archiver calls it with now minus
// nats.max_age and its lake checkpoint: a record leaves the log only once
// it is old and archived, whatever the order in which the two happen.
// It keeps every record from the first one stored at or after before, and
// every record above upTo; nothing else is touched. Safe for concurrent
// use (a purge below a sequence is idempotent).
func (l *Log) Trim(ctx context.Context, stream string, p int, before time.Time, upTo uint64) (uint64, error) {
	name := l.StreamName(stream, p)
	s, err := l.js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("eventlog: trim %s: %w", stream, err)
	}
	state := s.CachedInfo().State
	first := state.FirstSeq
	if upTo < first || state.Msgs == 0 {
		return 0, nil
	}
	// Never past the last record: a purge beyond it would move the
	// sequence of the next record on.
	keep := min(upTo, state.LastSeq) + 1
	young, found, err := l.firstStoredFrom(ctx, name, before)
	if err != nil {
		return 0, fmt.Errorf("eventlog: trim %s: %w", stream, err)
	}
	if found {
		keep = min(keep, young)
	}
	if keep <= first {
		return 0, nil
	}
	// Purge with a sequence removes every record below it.
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(keep)); err != nil {
		return 0, fmt.Errorf("eventlog: trim %s below %d: %w", stream, keep, err)
	}
	// The clean log has no deletes inside it (only purges of its head), so
	// the records below keep were its sequences from first on.
	return keep - first, nil
}

// msgGetRequest and msgGetResponse are JetStream's message-get API: by
// start time the server finds the first record stored at or after it in
// its index (nats.go has no option for it).
type msgGetRequest struct {
	StartTime time.Time `json:"start_time"`
	NextFor   string    `json:"next_by_subj"`
	NoHeaders bool      `json:"no_hdr"`
}

type msgGetResponse struct {
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
	Message *struct {
		Seq  uint64    `json:"seq"`
		Time time.Time `json:"time"`
	} `json:"message"`
}

// errCodeNoMessage is JetStream's error code for "no message found".
const errCodeNoMessage = 10037

// firstStoredFrom returns the sequence of the first record of a JetStream
// stream stored at or after t (found false: none is).
func (l *Log) firstStoredFrom(ctx context.Context, name string, t time.Time) (seq uint64, found bool, err error) {
	req, err := json.Marshal(msgGetRequest{StartTime: t.UTC(), NextFor: ">", NoHeaders: true})
	if err != nil {
		return 0, false, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.opts.PublishTimeout)
		defer cancel()
	}
	msg, err := l.js.Conn().RequestWithContext(ctx, jetstream.DefaultAPIPrefix+"STREAM.MSG.GET."+name, req)
	if err != nil {
		return 0, false, fmt.Errorf("find the first record from %s: %w", t.Format(time.RFC3339Nano), err)
	}
	var resp msgGetResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, false, fmt.Errorf("find the first record from %s: %w", t.Format(time.RFC3339Nano), err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == errCodeNoMessage:
		return 0, false, nil
	case resp.Error != nil:
		return 0, false, fmt.Errorf("find the first record from %s: %s (%d)", t.Format(time.RFC3339Nano), resp.Error.Description, resp.Error.ErrCode)
	case resp.Message == nil:
		return 0, false, fmt.Errorf("find the first record from %s: an empty answer", t.Format(time.RFC3339Nano))
	}
	return resp.Message.Seq, true, nil
}
