// Package ingest is Braid's ingest use case: raw events of a stream are
// prepared with the stream's logic, the rejected ones stored in the
// dead-letter queue with their reason, the accepted ones appended to the
// event log (path.go) — with decisions, after the stream's rules decided
// each (decide.go). The HTTP API, `braid ingest` and the dead-letter
// replay (replay.go) all take that one path. The log is reached through
// the small interfaces declared here (interfaces.go).
package ingest

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/metrics"
)

// Result is what an ingest did with a batch of raw events.
type Result struct {
	Accepted int `json:"accepted"`
	Rejected int `json:"rejected"`
	// Errors lists the first MaxErrors rejected events, in order; never
	// nil. ErrorsOmitted counts the rejected events beyond them (each is
	// in the dead-letter queue all the same).
	Errors        []EventError `json:"errors"`
	ErrorsOmitted int          `json:"errors_omitted,omitempty"`
	// With decisions only (DecideSeq): Blocked counts the valid events
	// blocked (kept aside, not in Accepted), Decisions has the outcome of
	// every valid event, in order.
	Blocked   *int       `json:"blocked,omitempty"`
	Decisions []Decision `json:"decisions,omitzero"`
}

// MaxErrors is how many rejected events an ingest answer lists at most:
// the answer to a request of a million rejects stays small.
const MaxErrors = 1000

// EventError says why the event at Index (0-based, in the batch) was
// rejected.
type EventError struct {
	Index int    `json:"index"`
	Error string `json:"error"`
}

// Ingester runs raw events through the streams' logic and stores them: the
// accepted ones in the clean log, the rejected ones in the dead-letter
// queue with their reason. It is shared by the HTTP API and `braid ingest`,
// and safe for concurrent use.
type Ingester struct {
	cat      *config.Catalog
	log      Log
	now      func() time.Time
	counts   map[string]*streamCounts
	events   *prometheus.CounterVec
	features Features // nil: features read null
	dm       decideMetrics
}

// Option configures an Ingester.
type Option func(*Ingester)

// WithFeatures gives decisions the entities' features (without it, or
// with nil, a rule's features.<name> reads null).
func WithFeatures(f Features) Option { return func(in *Ingester) { in.features = f } }

type streamCounts struct{ accepted, rejected atomic.Uint64 }

// NewIngester returns an ingester for the catalog's streams writing to log
// (a nil Log, not a Log holding a nil pointer: every ingest and replay
// fails with eventlog.ErrUnavailable).
// reg may be nil; it receives braid_ingest_events_total{stream,result}
// and the decisions' metrics (decide.go; a collector already registered
// there under its name is reused).
func NewIngester(log Log, cat *config.Catalog, reg prometheus.Registerer, opts ...Option) *Ingester {
	in := &Ingester{cat: cat, log: log, now: time.Now, counts: map[string]*streamCounts{}}
	for _, o := range opts {
		o(in)
	}
	in.dm = newDecideMetrics(reg)
	if cat != nil {
		for name := range cat.Streams {
			in.counts[name] = &streamCounts{}
		}
	}
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "braid_ingest_events_total", Help: "Events received, by stream and result (accepted, rejected, blocked)."}, []string{"stream", "result"})
	if c, err := metrics.Register(reg, events); err == nil {
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

// Ingest prepares raw events (one JSON object each) of a stream: IngestSeq
// of a slice.
func (in *Ingester) Ingest(ctx context.Context, stream string, raws [][]byte, source string) (Result, error) {
	return in.IngestSeq(ctx, stream, slices.Values(raws), source)
}

// IngestSeq prepares raw events (one JSON object each) of a stream, as the
// sequence yields them. Accepted ones are appended to the log (duplicate
// ids within the dedup window are stored once), rejected ones to the
// dead-letter queue with source (http, file:<name>, ...), the reason and
// the payload with PII masked, under an id of their own (DeadLetterID), so
// a retried request stores them once too.
//
// Rejects are stored as they come, a log record's worth at a time with a
// few records in flight (eventlog.DeadLetterWriter): a request of a
// million rejects holds a few MiB of them, and its answer lists the first
// MaxErrors. The accepted events are held and appended together after
// every dead letter is stored (path.go), so no event can fail the batch by
// its size: a valid event too large for a record on its own (NATS
// max_payload) is rejected like an invalid one, and a dead letter too
// large for one keeps only the head of its payload.
//
// It returns only when both are stored; an error (eventlog.ErrFull,
// ErrUnavailable, ErrUnknownStream, ...) means the events may not be stored
// and the caller must retry or fail.
func (in *Ingester) IngestSeq(ctx context.Context, stream string, events iter.Seq[[]byte], source string) (Result, error) {
	s, err := in.stream(stream)
	if err != nil {
		return Result{Errors: []EventError{}}, err
	}
	return in.ingest(ctx, s, events, source, 0, in.log.DeadLetterWriter(stream), true, false)
}

// DecideSeq is IngestSeq with decisions: the stream's rules decide every
// valid event, with the features of its entities (one Features lookup per
// entity for the whole batch) before any is stored. Allowed events are
// stored as IngestSeq stores them; those for review are stored too and
// kept on the stream's review subject; blocked ones only on its blocked
// subject (DecidedLog), with the rules that matched and the time. The
// result adds each valid event's decision and the number blocked
// (Accepted counts the events stored in the clean log). It returns once
// all of them and the dead letters are stored; an error matching
// ErrFeatures means the features could not be read and no event was
// stored (dead letters may be: a retry stores them once).
func (in *Ingester) DecideSeq(ctx context.Context, stream string, events iter.Seq[[]byte], source string) (Result, error) {
	s, err := in.stream(stream)
	if err != nil {
		return Result{Errors: []EventError{}}, err
	}
	return in.ingest(ctx, s, events, source, 0, in.log.DeadLetterWriter(stream), true, true)
}

// stream is the stream of a name, with the log to write it to.
func (in *Ingester) stream(name string) (*logic.Stream, error) {
	var s *logic.Stream
	if in.cat != nil {
		s = in.cat.Streams[name]
	}
	if s == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownStream, name)
	}
	if in.log == nil {
		return nil, fmt.Errorf("ingest: %s: %w", name, eventlog.ErrUnavailable)
	}
	return s, nil
}

// ingest takes events (the first is number first of its source) along
// the path, handing the rejects to dls; when closeDLS, every one is stored
// before the accepted events are appended. With decide, the stream's
// rules decide the accepted events first.
func (in *Ingester) ingest(ctx context.Context, s *logic.Stream, events iter.Seq[[]byte], source string, first int, dls *eventlog.DeadLetterWriter, closeDLS, decide bool) (Result, error) {
	res := Result{Errors: []EventError{}}
	p := newPass(in.log, s, in.now(), dls)
	var rules []*logic.Rule
	if decide {
		// An event a rule may hold back must fit a decided record.
		if rules = in.cat.Rules[s.Name]; len(rules) > 0 {
			p.maxEvent -= eventlog.DecidedOverhead(source, ruleNames(rules))
		}
	}
	var err error
	i := first - 1
	for raw := range events {
		i++
		ev, rec, rej, perr := p.prepare(raw, false)
		if perr != nil {
			err = fmt.Errorf("ingest: prepare event %d: %w", i, perr)
			break
		}
		if rej == nil {
			if decide {
				p.hold(ev, rec, i)
			} else {
				p.accept(rec)
			}
			continue
		}
		if err = p.reject(ctx, DeadLetterID(s, source, i, rej, raw), rej, source, s.MaskPayload(bytes.TrimSpace(raw))); err != nil {
			break
		}
		res.Rejected++
		if len(res.Errors) < MaxErrors {
			res.Errors = append(res.Errors, EventError{Index: i, Error: rej.Error()})
		} else {
			res.ErrorsOmitted++
		}
	}
	var dec decisions
	if err == nil && decide {
		dec, err = in.decide(ctx, s, rules, p, source)
	}
	if err == nil {
		res.Accepted, err = p.store(ctx, closeDLS)
	}
	if err != nil {
		return Result{Errors: []EventError{}}, err
	}
	c := in.counts[s.Name]
	c.accepted.Add(uint64(res.Accepted))
	c.rejected.Add(uint64(res.Rejected))
	in.events.WithLabelValues(s.Name, "accepted").Add(float64(res.Accepted))
	in.events.WithLabelValues(s.Name, "rejected").Add(float64(res.Rejected))
	if decide {
		res.Decisions, res.Blocked = dec.list, &dec.blocked
		in.events.WithLabelValues(s.Name, "blocked").Add(float64(dec.blocked))
		in.dm.count(s.Name, dec, rules)
	}
	return res, nil
}

// Load ingests one source (a file, for `braid ingest`) batch after batch.
// It is Ingest, except that the dead letters of consecutive batches share
// log records, so a load with rejects in every batch writes a few records
// of them, not one per batch, and that events are numbered (in errors and
// in dead-letter ids) by their place in the whole load. A batch's events
// are stored when Ingest returns, its dead letters by Close at the
// latest. A load that failed is run again as a whole: the ids make the
// second run store nothing twice within the dedup window (events without
// an id excepted).
type Load struct {
	in     *Ingester
	s      *logic.Stream
	source string
	dls    *eventlog.DeadLetterWriter
	next   int // the number of the load's next event
}

// NewLoad starts a load of a stream from a source; Close it.
func (in *Ingester) NewLoad(stream, source string) (*Load, error) {
	s, err := in.stream(stream)
	if err != nil {
		return nil, err
	}
	return &Load{in: in, s: s, source: source, dls: in.log.DeadLetterWriter(stream)}, nil
}

// Ingest ingests the load's next batch.
func (ld *Load) Ingest(ctx context.Context, raws [][]byte) (Result, error) {
	res, err := ld.in.ingest(ctx, ld.s, slices.Values(raws), ld.source, ld.next, ld.dls, false, false)
	ld.next += len(raws)
	return res, err
}

// Close returns once every dead letter of the load is stored.
func (ld *Load) Close(ctx context.Context) error {
	if err := ld.dls.Close(ctx); err != nil {
		return fmt.Errorf("ingest: dead-letter to %s: %w", ld.s.Name, err)
	}
	return nil
}

// DeadLetterID names a rejected event by where it came from (source), its
// index in the request (or load), why it was rejected and its raw bytes (a
// keyed digest: they may hold PII), so that a retried request stores its
// dead letters once (within the log's dedup window) while two identical
// events of one request stay two.
func DeadLetterID(s *logic.Stream, source string, index int, rej *logic.RejectError, raw []byte) string {
	var b [3 + 32]byte
	var n [20]byte
	id := append(b[:0], "dl:"...)
	id = s.AppendDigest(id, []byte(source), strconv.AppendInt(n[:0], int64(index), 10), []byte(rej.Reason), []byte(rej.Field), raw)
	return string(id)
}
