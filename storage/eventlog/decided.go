package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/logic"
)

// Events held back at ingest by a rule (serving/ingest with decide) go the
// way dead letters go. They are the shared JetStream stream {ns}_blocked,
// a subject per Braid stream and outcome: {ns}.blocked.{stream} for the
// blocked events (in no clean log: no view, lake or feature counts them)
// and {ns}.review.{stream} for those kept for review (also stored in the
// clean log). Each subject is written by the log's writer (writer.go):
// decided events are packed into log records (a slot's id is the event's
// id, its data the decision's JSON without the stream, id and place),
// deduplicated by their ids within the dedup window of the subject — never
// the clean log's, so a blocked event's id stays free there and a retry is
// blocked again, stored once — and appended with a compare-and-set on the
// subject's last record. Records carry CountHeader, so they are counted
// from headers, and a decided event's place is (record sequence, index in
// the record), a Cursor, as for dead letters. Retention is the dead
// letters' (Options.DLQMaxAge, DLQMaxRecords per subject).

// Decided is an event a rule held back at ingest: blocked, or kept for
// review.
type Decided struct {
	// Seq is the record holding it and Index its place in the record
	// (both set when read): Cursor() addresses it.
	Seq   uint64 `json:"seq,omitempty"`
	Index int    `json:"index"`
	// ID is its id: decided events of a subject with the same id within
	// the dedup window are stored once ("": never deduplicated).
	ID      string          `json:"id,omitempty"`
	Stream  string          `json:"stream"`
	Outcome string          `json:"outcome"` // block | review (logic.Outcome)
	Rules   []string        `json:"rules"`   // the rules that matched, in the stream's order
	Source  string          `json:"source"`  // http, ...
	Time    time.Time       `json:"time"`    // when it was decided
	Event   json.RawMessage `json:"event"`   // its canonical record: declared fields, PII masked
}

// Cursor is the place of a decided event read from the log.
func (d *Decided) Cursor() Cursor { return Cursor{d.Seq, d.Index} }

// blockedName is the JetStream stream of every stream's decided events.
func (l *Log) blockedName() string { return l.opts.Namespace + "_blocked" }

// DecidedSubject is the subject of a stream's decided events with outcome
// o: <ns>.blocked.<stream> (Block) or <ns>.review.<stream> (Review).
func (l *Log) DecidedSubject(stream string, o logic.Outcome) string {
	if o == logic.Review {
		return l.opts.Namespace + ".review." + stream
	}
	return l.opts.Namespace + ".blocked." + stream
}

// decidedWriter is the writer of a stream's decided events with outcome o.
func (l *Log) decidedWriter(stream string, o logic.Outcome) *writer {
	return l.writerOf(stream, target{name: l.blockedName(), subject: l.DecidedSubject(stream, o), perSubject: true, countHeader: true})
}

// decidedFixed bounds what a decided record adds to its event besides the
// source and the rule names: its keys, outcome and time.
const decidedFixed = 128

// DecidedOverhead is how many bytes a decided record adds at most to its
// event's id and canonical record, for a source and the names of rules
// (names as the configuration allows them: lowercase letters, digits and
// _, which JSON never escapes): an event of at most MaxEvent −
// DecidedOverhead bytes is kept with any decision of these rules.
func DecidedOverhead(source string, rules []string) int {
	n := decidedFixed + 6*len(source) // a source escaped at worst
	for _, r := range rules {
		n += len(r) + 3
	}
	return n
}

// appendDecided encodes a decided event as a record slot stores it: a JSON
// object of its outcome, rules, source, time and event; its stream is the
// subject's, its id the slot's.
func appendDecided(b []byte, d *Decided) []byte {
	b = append(b, `{"outcome":`...)
	b = logic.AppendJSONString(b, d.Outcome)
	b = append(b, `,"rules":[`...)
	for i, r := range d.Rules {
		if i > 0 {
			b = append(b, ',')
		}
		b = logic.AppendJSONString(b, r)
	}
	b = append(b, `],"source":`...)
	b = logic.AppendJSONString(b, d.Source)
	b = append(b, `,"time":"`...)
	b = d.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","event":`...)
	b = append(b, d.Event...)
	return append(b, '}')
}

// ErrNotDecided: a decided event's Outcome is neither block nor review.
var ErrNotDecided = errors.New("eventlog: a decided event is blocked or kept for review")

// PublishDecided stores decided events of a stream, each on the subject
// of its outcome, and returns once every one is stored (or reports a
// failure: then some may be stored). A decided event whose id was stored
// on its subject within the dedup window is stored once and counts as
// stored. Each must fit one record (see DecidedOverhead); the events
// of one call are written to the two subjects in parallel.
func (l *Log) PublishDecided(ctx context.Context, stream string, ds []Decided) error {
	if len(ds) == 0 {
		return nil
	}
	var by [2][]Record // block, review
	size := 0
	for i := range ds {
		size += len(ds[i].Event) + decidedFixed
	}
	buf := make([]byte, 0, size)
	for i := range ds {
		d := &ds[i]
		o, err := logic.ParseOutcome(d.Outcome)
		if err != nil || o == logic.Allow {
			return fmt.Errorf("%w: %q", ErrNotDecided, d.Outcome)
		}
		start := len(buf)
		buf = appendDecided(buf, d)
		k := 0
		if o == logic.Review {
			k = 1
		}
		by[k] = append(by[k], Record{ID: d.ID, Data: buf[start:len(buf):len(buf)]})
	}
	ctx, cancel := context.WithTimeout(ctx, l.opts.PublishTimeout)
	defer cancel()
	var reqs [2]*writeReq
	for k, o := range []logic.Outcome{logic.Block, logic.Review} {
		if len(by[k]) > 0 {
			reqs[k] = l.decidedWriter(stream, o).submit(by[k])
		}
	}
	var errs []error
	for _, r := range reqs {
		if r == nil {
			continue
		}
		if err := r.wait(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("eventlog: decided events of %s: %w", stream, err)
	}
	return nil
}

// DecidedEvents reads up to limit decided events of a stream with outcome
// o (Block or Review), oldest first, starting after the cursor.
func (l *Log) DecidedEvents(ctx context.Context, stream string, o logic.Outcome, after Cursor, limit int) ([]Decided, error) {
	return readSlots(ctx, l, l.blockedName(), l.DecidedSubject(stream, o), after, limit, func(m *jetstream.RawStreamMsg, from, limit int) ([]Decided, error) {
		return decodeDecided(stream, m, from, limit)
	})
}

// DecidedCount is the number of decided events of a stream with outcome o
// (Block or Review) the log holds, counted from the records' headers as
// DeadLetterCount counts dead letters.
func (l *Log) DecidedCount(ctx context.Context, stream string, o logic.Outcome) (uint64, error) {
	return l.slotCount(ctx, l.blockedName(), l.DecidedSubject(stream, o))
}

// decodeDecided reads the decided events of one record (at most limit of
// them, from index from on), with their places.
func decodeDecided(stream string, m *jetstream.RawStreamMsg, from, limit int) ([]Decided, error) {
	var out []Decided
	err := Unpack(m.Data, func(i int, id, data []byte) error {
		if i < from {
			return nil
		}
		if len(out) == limit {
			return errEnough
		}
		d := Decided{}
		if err := json.Unmarshal(data, &d); err != nil {
			return fmt.Errorf("eventlog: decided event %d:%d: %w", m.Sequence, i, err)
		}
		if d.Rules == nil {
			d.Rules = []string{}
		}
		d.Seq, d.Index, d.ID, d.Stream = m.Sequence, i, string(id), stream
		out = append(out, d)
		return nil
	})
	if errors.Is(err, errEnough) {
		err = nil
	}
	return out, err
}
