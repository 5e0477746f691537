package serving

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

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
// file:<name>, ...), the reason and the payload with PII masked. It returns
// only when both are stored; an error (eventlog.ErrFull, ErrUnavailable,
// ErrUnknownStream, ...) means the events may not be stored and the caller
// must retry or fail.
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
	recs := make([]eventlog.Record, 0, len(raws))
	var dls []eventlog.DeadLetter
	for i, raw := range raws {
		ev, rec, err := s.Prepare(raw, now.UnixMilli())
		if err != nil {
			var rej *logic.RejectError
			if !errors.As(err, &rej) {
				return IngestResult{Errors: []IngestError{}}, fmt.Errorf("serving: prepare event %d: %w", i, err)
			}
			dls = append(dls, eventlog.DeadLetter{Stream: stream, Reason: rej.Reason, Field: rej.Field, Source: source,
				Time: now.UTC(), Payload: json.RawMessage(s.MaskPayload(bytes.TrimSpace(raw)))})
			res.Errors = append(res.Errors, IngestError{Index: i, Error: rej.Error()})
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
