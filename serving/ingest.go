package serving

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/eventlog"
)

// IngestResult is what an ingest did with a batch of raw events.
type IngestResult struct {
	Accepted int           `json:"accepted"`
	Rejected int           `json:"rejected"`
	Errors   []IngestError `json:"errors"` // one per rejected event; never nil
}

// IngestError says why the event at Index (0-based, in the batch) was rejected.
type IngestError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// Ingester runs raw events through the streams' logic and stores them: the
// accepted ones in the clean log, the rejected ones in the dead-letter
// queue with their reason. It is shared by the HTTP API and `braid ingest`,
// and safe for concurrent use.
type Ingester struct {
	cat    *config.Catalog
	log    *eventlog.Log
	now    func() time.Time
	counts map[string]*streamCounts
	events *prometheus.CounterVec
}

type streamCounts struct{ accepted, rejected atomic.Uint64 }

// NewIngester returns an ingester for the catalog's streams writing to log.
// reg may be nil; it receives braid_ingest_events_total{stream,result} (a
// collector already registered there under that name is reused).
func NewIngester(log *eventlog.Log, cat *config.Catalog, reg prometheus.Registerer) *Ingester {
	in := &Ingester{cat: cat, log: log, now: time.Now, counts: map[string]*streamCounts{}}
	if cat != nil {
		for name := range cat.Streams {
			in.counts[name] = &streamCounts{}
		}
	}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_ingest_events_total", Help: "Events received, by stream and result (accepted, rejected)."}, []string{"stream", "result"})
	if c, err := register(reg, events); err == nil {
		events = c
	}
	in.events = events
	return in
}

// Counts returns the events accepted and rejected on a stream since start.
func (in *Ingester) Counts(stream string) (accepted, rejected uint64) {
	if c := in.counts[stream]; c != nil {
		return c.accepted.Load(), c.rejected.Load()
	}
	return 0, 0
}

// Ingest prepares raw events (one JSON object each) of a stream. Accepted
// ones are appended to the log (duplicate ids within the dedup window are
// stored once), rejected ones to the dead-letter queue with source (http,
// file:<name>, ...), the reason and the payload with PII masked.
//
// The accepted events are appended together (the log packs them into as
// few records as the server's message limit allows), so no event can fail
// the batch by its size: a valid event too large for a record on its own
// (NATS max_payload) is rejected like an invalid one, and a dead letter
// too large for one message keeps only the head of its payload (see
// fitDeadLetter).
//
// It returns only when both are stored; an error (eventlog.ErrFull,
// ErrUnavailable, ErrUnknownStream, ...) means the events may not be stored
// and the caller must retry or fail.
func (in *Ingester) Ingest(ctx context.Context, stream string, raws [][]byte, source string) (IngestResult, error) {
	res := IngestResult{Errors: []IngestError{}}
	var s *logic.Stream
	if in.cat != nil {
		s = in.cat.Streams[stream]
	}
	if s == nil {
		return res, fmt.Errorf("%w: %q", ErrUnknownStream, stream)
	}
	if in.log == nil {
		return res, fmt.Errorf("serving: ingest %s: %w", stream, eventlog.ErrUnavailable)
	}
	now := in.now()
	maxMsg := in.log.MaxMessage()
	maxEvent := in.log.MaxEvent()
	recs := make([]eventlog.Record, 0, len(raws))
	var dls []eventlog.DeadLetter
	for i, raw := range raws {
		ev, rec, err := s.Prepare(raw, now.UnixMilli())
		if err == nil && len(rec)+len(ev.ID) > maxEvent {
			err = &logic.RejectError{Reason: fmt.Sprintf("event record of %d bytes is larger than the log's message limit of %d bytes", len(rec), maxEvent)}
		}
		if err != nil {
			var rej *logic.RejectError
			if !errors.As(err, &rej) {
				return IngestResult{Errors: []IngestError{}}, fmt.Errorf("serving: prepare event %d: %w", i, err)
			}
			d := fitDeadLetter(eventlog.DeadLetter{Stream: stream, Reason: rej.Reason, Field: rej.Field, Source: source,
				Time: now.UTC(), Payload: s.MaskPayload(bytes.TrimSpace(raw))}, maxMsg)
			d.ID = deadLetterID(s, source, i, rej, raw)
			dls = append(dls, d)
			res.Errors = append(res.Errors, IngestError{Index: i, Error: (&logic.RejectError{Field: d.Field, Reason: d.Reason}).Error()})
			continue
		}
		recs = append(recs, eventlog.Record{ID: ev.ID, Data: rec})
	}
	// Dead letters first: if a write fails the client retries the whole
	// request, and a retry may then double only dead letters, never events
	// of a stream without ids.
	if len(dls) > 0 {
		if err := in.log.PublishDeadLetters(ctx, stream, dls); err != nil {
			return IngestResult{Errors: []IngestError{}}, fmt.Errorf("serving: dead-letter to %s: %w", stream, err)
		}
	}
	if len(recs) > 0 {
		if err := in.log.Publish(ctx, stream, recs); err != nil {
			return IngestResult{Errors: []IngestError{}}, fmt.Errorf("serving: publish to %s: %w", stream, err)
		}
	}
	res.Accepted, res.Rejected = len(recs), len(dls)
	c := in.counts[stream]
	c.accepted.Add(uint64(res.Accepted))
	c.rejected.Add(uint64(res.Rejected))
	in.events.WithLabelValues(stream, "accepted").Add(float64(res.Accepted))
	in.events.WithLabelValues(stream, "rejected").Add(float64(res.Rejected))
	return res, nil
}

const (
	// msgOverhead is room left in a message for its headers (Nats-Msg-Id)
	// and a dead letter's envelope around its texts.
	msgOverhead = 1 << 10
	// dlqHeadBytes is how much of an oversized dead letter's masked payload
	// is kept at most (enough to find the event; the rest cannot be stored).
	dlqHeadBytes = 4 << 10
	// dlqTextBytes is how much of a reason or field name is kept at most
	// when even the head of the payload does not make a dead letter fit.
	dlqTextBytes = 1 << 10
)

// fitDeadLetter makes a dead letter fit one message of maxMsg bytes. A
// payload that is not JSON is kept as a JSON string. When the letter would
// not fit, its payload becomes {"truncated": true, "bytes": N, "head":
// "..."}; when it still would not (a huge reason or field name), the reason
// and field are cut too. The head and the texts are bounded by fractions
// of maxMsg, so the result fits any limit of 16 KiB or more.
func fitDeadLetter(d eventlog.DeadLetter, maxMsg int) eventlog.DeadLetter {
	if !json.Valid(d.Payload) {
		d.Payload, _ = json.Marshal(string(d.Payload))
	}
	if fits(d, maxMsg) {
		return d
	}
	d.Payload = payloadHead(d.Payload, min(dlqHeadBytes, maxMsg/16))
	if fits(d, maxMsg) {
		return d
	}
	n := min(dlqTextBytes, maxMsg/32)
	d.Reason, d.Field = cutText(d.Reason, n), cutText(d.Field, n)
	return d
}

// fits reports whether a dead letter's message stays within maxMsg bytes:
// by a cheap bound (JSON escapes a byte to at most 6) for the usual small
// letter, else by encoding it.
func fits(d eventlog.DeadLetter, maxMsg int) bool {
	if 6*(len(d.Payload)+len(d.Reason)+len(d.Field)+len(d.Source)+len(d.Stream))+msgOverhead <= maxMsg {
		return true
	}
	b, err := json.Marshal(d)
	return err == nil && len(b)+msgOverhead <= maxMsg
}

// payloadHead keeps the head of a (masked) payload that is too large to be
// stored whole: {"truncated": true, "bytes": N, "head": "..."}.
func payloadHead(p []byte, keep int) json.RawMessage {
	head := p
	if len(head) > keep {
		head = head[:keep]
	}
	b, _ := json.Marshal(struct {
		Truncated bool   `json:"truncated"`
		Bytes     int    `json:"bytes"`
		Head      string `json:"head"`
	}{true, len(p), strings.ToValidUTF8(string(head), "")})
	return b
}

// cutText keeps the first n bytes of s (whole runes) and marks the cut.
func cutText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// register registers c on reg (nil: not at all), reusing a collector that
// is already registered under the same name.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old, nil
			}
		}
		return c, fmt.Errorf("serving: register metrics: %w", err)
	}
	return c, nil
}

// deadLetterID names a rejected event by where it came from, its index in
// the request, why it was rejected and its raw bytes (a keyed digest: they
// may hold PII), so that a retried request stores its dead letters once
// (within the log's dedup window) while two identical events of one
// request stay two.
func deadLetterID(s *logic.Stream, source string, index int, rej *logic.RejectError, raw []byte) string {
	return "dl:" + s.Digest([]byte(source), strconv.AppendInt(nil, int64(index), 10), []byte(rej.Reason), []byte(rej.Field), raw)
}
