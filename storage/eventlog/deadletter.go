package eventlog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/logic"
)

// Dead letters go the way clean events go. A stream's dead letters are a
// log of their own: the subject {ns}.dlq.{stream} of the shared JetStream
// stream {ns}_dlq, written by the same writer as a clean log (writer.go),
// so they are packed into log records (packed.go: a slot's id is the
// letter's id, its data the letter's JSON without the stream, id and
// place), deduplicated by their ids within the dedup window, and appended
// with a compare-and-set on the subject's last record. Each record says
// how many letters it holds (CountHeader), so they are counted from
// headers. A dead letter's place is (record sequence, index in the
// record); a record goes as a whole, when a replay has moved each of its
// letters on (DeadLetterRecord, DeleteDeadLetterRecord) or when the
// retention limits remove it (per subject: one stream's letters never
// evict another's).
//
// Records written before dead letters were packed hold one letter each
// as a JSON object (without CountHeader); they are read, counted,
// replayed and removed alike, as index 0 of their record.

// CountHeader is the header of a dead-letter record holding the number of
// letters it packs.
const CountHeader = "Braid-Count"

// DeadLetter is a rejected event with why, when and where from.
type DeadLetter struct {
	// Seq is the dead-letter record holding it and Index its place in
	// the record (both set when read): Cursor() addresses it.
	Seq   uint64 `json:"seq,omitempty"`
	Index int    `json:"index"`
	// ID is the dead letter's id: dead letters with the same id within
	// the dedup window are stored once ("": never deduplicated).
	ID      string          `json:"id,omitempty"`
	Stream  string          `json:"stream"`
	Reason  string          `json:"reason"`
	Field   string          `json:"field,omitempty"`
	Source  string          `json:"source"` // http, nats, file:<name>, replay
	Time    time.Time       `json:"time"`
	Payload json.RawMessage `json:"payload"` // the original event, PII masked
	// Unreplayable says why the letter can never become an event ("":
	// a replay runs it through the stream's logic again), see
	// NotReplayable and UnreplayableCut.
	Unreplayable string `json:"unreplayable,omitempty"`
}

// Why a dead letter can never be replayed.
const (
	// UnreplayableNotObject: the event was not a JSON object (invalid
	// JSON, or an array, string, number or null), which no configuration
	// accepts; on a stream with PII fields its payload is withheld.
	UnreplayableNotObject = "the event is not a JSON object: no configuration makes it an event"
	// UnreplayableCut: the event was larger than one log message, so only
	// the head of its payload is kept.
	UnreplayableCut = "the event is larger than one log message: only the head of its payload is kept"
)

// NotReplayable says why a dead letter's payload can never become an
// event: UnreplayableNotObject when it is not a JSON object, "" when it is
// one (a replay may accept it).
func NotReplayable(payload []byte) string {
	p := bytes.TrimLeft(payload, " \t\r\n")
	if len(p) == 0 || p[0] != '{' {
		return UnreplayableNotObject
	}
	return ""
}

// cutPrefix starts the payload of a letter cut to its head (by ingest,
// when the event is larger than one message).
const cutPrefix = `{"truncated":true,"bytes":`

// WhyUnreplayable is why d can never be replayed ("": a replay runs it
// through the stream's logic again): as recorded, else (a letter written
// before it was recorded) from its payload.
func (d *DeadLetter) WhyUnreplayable() string {
	switch {
	case d.Unreplayable != "":
		return d.Unreplayable
	case bytes.HasPrefix(d.Payload, []byte(cutPrefix)):
		return UnreplayableCut
	}
	return NotReplayable(d.Payload)
}

// Cursor is a place in a stream's dead-letter queue: a listing starts
// after the letter Index of record Seq; Index AllOfRecord means after
// every letter of record Seq (the zero Cursor: from the start).
type Cursor struct {
	Seq   uint64
	Index int
}

// AllOfRecord as a Cursor's Index stands for the record's last letter.
const AllOfRecord = math.MaxInt

// Cursor is the place of a letter read from the queue.
func (d *DeadLetter) Cursor() Cursor { return Cursor{d.Seq, d.Index} }

// String renders c as ParseCursor reads it: "SEQ:INDEX", or "SEQ" for a
// whole record.
func (c Cursor) String() string {
	if c.Index == AllOfRecord {
		return strconv.FormatUint(c.Seq, 10)
	}
	return strconv.FormatUint(c.Seq, 10) + ":" + strconv.Itoa(c.Index)
}

// ParseCursor reads "SEQ:INDEX" (after that letter) or "SEQ" (after every
// letter of record SEQ, as a queue of one letter per record was paged).
func ParseCursor(s string) (Cursor, error) {
	seq, idx, found := strings.Cut(s, ":")
	c := Cursor{Index: AllOfRecord}
	var err error
	if c.Seq, err = strconv.ParseUint(seq, 10, 64); err == nil && found {
		if c.Index, err = strconv.Atoi(idx); err == nil && c.Index < 0 {
			err = errors.New("negative index")
		}
	}
	if err != nil {
		return Cursor{}, fmt.Errorf("eventlog: bad cursor %q (want SEQ or SEQ:INDEX): %w", s, err)
	}
	return c, nil
}

// dlqName is the JetStream stream of every stream's dead letters.
func (l *Log) dlqName() string { return l.opts.Namespace + "_dlq" }

// dlqWriter is the writer of a stream's dead letters.
func (l *Log) dlqWriter(stream string) *writer {
	return l.writerOf(stream, target{name: l.dlqName(), subject: l.DLQSubject(stream), perSubject: true, countHeader: true})
}

// appendLetter encodes a dead letter as a record stores it: a JSON object
// of its reason, field, source, time and payload (and why it cannot be
// replayed); its stream is the subject's, its id the record slot's. time
// is d.Time as RFC 3339 (shared by the letters of one request).
func appendLetter(b []byte, d *DeadLetter, time []byte) []byte {
	b = append(b, `{"reason":`...)
	b = logic.AppendJSONString(b, d.Reason)
	if d.Field != "" {
		b = append(b, `,"field":`...)
		b = logic.AppendJSONString(b, d.Field)
	}
	b = append(b, `,"source":`...)
	b = logic.AppendJSONString(b, d.Source)
	b = append(b, `,"time":"`...)
	b = append(b, time...)
	b = append(b, `","payload":`...)
	b = append(b, d.Payload...)
	if d.Unreplayable != "" {
		b = append(b, `,"unreplayable":`...)
		b = logic.AppendJSONString(b, d.Unreplayable)
	}
	return append(b, '}')
}

// DeadLetterWriter stores a stream's dead letters as they come (the
// rejects of an ingest request, one by one) in log records: it hands the
// log's writer a chunk of about one record at a time and keeps at most
// dlqInFlight chunks unanswered, so a request with a million rejects
// holds a few MiB of them at any time, not all of them. Not safe for
// concurrent use; every DeadLetterWriter of a stream in a process shares
// that stream's one writer (and its records).
type DeadLetterWriter struct {
	l        *Log
	w        *writer
	target   int      // a chunk's packed bytes at most
	chunk    []Record // letters not yet handed over
	size     int      // their packed bytes
	buf      []byte   // their encoded letters (a new one per chunk: the writer holds the old)
	scratch  []byte
	maxEvent int   // a letter's packed bytes at most
	timeNs   int64 // the time text below is of this time
	timeText []byte
	inflight []*writeReq // handed over, oldest first
	err      error
}

// dlqInFlight is how many chunks of a DeadLetterWriter may wait for the
// log at once.
const dlqInFlight = 4

// DeadLetterWriter returns a writer of a stream's dead letters; Close it.
func (l *Log) DeadLetterWriter(stream string) *DeadLetterWriter {
	return &DeadLetterWriter{l: l, w: l.dlqWriter(stream), target: l.maxRecord() - 64, maxEvent: l.MaxEvent(), timeNs: math.MinInt64}
}

const (
	// dlqHeadBytes is how much of an oversized dead letter's payload is
	// kept at most (enough to find the event; the rest cannot be stored).
	dlqHeadBytes = 4 << 10
	// dlqTextBytes is how much of a reason or field name is kept at most
	// when even the head of the payload does not make a dead letter fit.
	dlqTextBytes = 1 << 10
)

// encode encodes d into dw.scratch and returns its packed size, made to
// fit one log record: when it would not, its payload becomes its head
// ({"truncated": true, "bytes": N, "head": "..."}, UnreplayableCut); when
// it still would not (a huge reason or field name), the reason and field
// are cut too. The head and the texts are bounded by fractions of the
// limit, so the result fits any limit of 16 KiB or more.
func (dw *DeadLetterWriter) encode(d *DeadLetter) int {
	dw.scratch = appendLetter(dw.scratch[:0], d, dw.timeText)
	size := packedSize(Record{ID: d.ID, Data: dw.scratch})
	if size <= dw.maxEvent {
		return size
	}
	d.Payload, d.Unreplayable = payloadHead(d.Payload, min(dlqHeadBytes, dw.maxEvent/16)), UnreplayableCut
	dw.scratch = appendLetter(dw.scratch[:0], d, dw.timeText)
	if size = packedSize(Record{ID: d.ID, Data: dw.scratch}); size <= dw.maxEvent {
		return size
	}
	n := min(dlqTextBytes, dw.maxEvent/32)
	d.Reason, d.Field, d.Source = cutText(d.Reason, n), cutText(d.Field, n), cutText(d.Source, n)
	dw.scratch = appendLetter(dw.scratch[:0], d, dw.timeText)
	return packedSize(Record{ID: d.ID, Data: dw.scratch})
}

// payloadHead keeps the head of a payload that is too large to be stored
// whole: {"truncated": true, "bytes": N, "head": "..."} (see cutPrefix).
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

// Add queues a dead letter (its Seq and Index are ignored; an invalid
// JSON payload is kept as a JSON string; Unreplayable, when empty, is set
// from the payload; a letter too large for one log record is cut, see
// encode). It waits while dlqInFlight chunks are unanswered; an error
// means the letters added so far may or may not be stored.
func (dw *DeadLetterWriter) Add(ctx context.Context, d DeadLetter) error {
	if dw.err != nil {
		return dw.err
	}
	if !json.Valid(d.Payload) {
		d.Payload, _ = json.Marshal(string(d.Payload))
	}
	if d.Unreplayable == "" {
		d.Unreplayable = NotReplayable(d.Payload)
	}
	if ns := d.Time.UnixNano(); ns != dw.timeNs {
		dw.timeNs, dw.timeText = ns, d.Time.UTC().AppendFormat(dw.timeText[:0], time.RFC3339Nano)
	}
	size := dw.encode(&d)
	if len(dw.chunk) > 0 && dw.size+size > dw.target {
		if err := dw.flush(ctx); err != nil {
			return err
		}
	}
	if cap(dw.buf)-len(dw.buf) < len(dw.scratch) {
		dw.buf = make([]byte, 0, max(min(dw.target, 256<<10), len(dw.scratch)))
	}
	start := len(dw.buf)
	dw.buf = append(dw.buf, dw.scratch...)
	dw.chunk = append(dw.chunk, Record{ID: d.ID, Data: dw.buf[start:len(dw.buf):len(dw.buf)]})
	dw.size += size
	return nil
}

// flush hands the chunk to the log's writer, then waits for the oldest
// chunks until at most dlqInFlight are unanswered.
func (dw *DeadLetterWriter) flush(ctx context.Context) error {
	if len(dw.chunk) > 0 {
		dw.inflight = append(dw.inflight, dw.w.submit(dw.chunk))
		n := len(dw.chunk)
		dw.chunk, dw.size, dw.buf = make([]Record, 0, n+n/8), 0, nil // the writer holds them now
	}
	for len(dw.inflight) > dlqInFlight {
		if err := dw.waitOldest(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (dw *DeadLetterWriter) waitOldest(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, dw.l.opts.PublishTimeout)
	defer cancel()
	err := dw.inflight[0].wait(wctx)
	dw.inflight[0] = nil
	dw.inflight = dw.inflight[1:]
	if err != nil {
		dw.err = fmt.Errorf("eventlog: dead letters of %s: %w", dw.w.stream, err)
	}
	return dw.err
}

// Close stores what is left and returns once every letter added is
// stored, or the first failure.
func (dw *DeadLetterWriter) Close(ctx context.Context) error {
	if dw.err != nil {
		return dw.err
	}
	if err := dw.flush(ctx); err != nil {
		return err
	}
	for len(dw.inflight) > 0 {
		if err := dw.waitOldest(ctx); err != nil {
			return err
		}
	}
	return nil
}

// PublishDeadLetters appends dead letters for a stream and waits until they
// are stored. A dead letter whose ID was stored within the dedup window is
// stored once and counts as stored.
func (l *Log) PublishDeadLetters(ctx context.Context, stream string, dls []DeadLetter) error {
	dw := l.DeadLetterWriter(stream)
	for _, d := range dls {
		if err := dw.Add(ctx, d); err != nil {
			return err
		}
	}
	return dw.Close(ctx)
}

// errEnough stops an Unpack early.
var errEnough = errors.New("enough")

// decodeLetters reads the dead letters of one record (at most limit of
// them, from index from on), with their places.
func decodeLetters(stream string, m *jetstream.RawStreamMsg, from, limit int) ([]DeadLetter, error) {
	if len(m.Data) == 0 || (m.Data[0] != packedV1 && m.Data[0] != packedS2) {
		// Written before dead letters were packed: one letter.
		if from > 0 {
			return nil, nil
		}
		d := DeadLetter{}
		if err := json.Unmarshal(m.Data, &d); err != nil {
			return nil, fmt.Errorf("eventlog: dead letter %d: %w", m.Sequence, err)
		}
		if d.ID == "" {
			d.ID = m.Header.Get(jetstream.MsgIDHeader)
		}
		d.Seq, d.Index, d.Stream = m.Sequence, 0, stream
		return []DeadLetter{d}, nil
	}
	var out []DeadLetter
	err := Unpack(m.Data, func(i int, id, data []byte) error {
		if i < from {
			return nil
		}
		if len(out) == limit {
			return errEnough
		}
		d := DeadLetter{}
		if err := json.Unmarshal(data, &d); err != nil {
			return fmt.Errorf("eventlog: dead letter %d:%d: %w", m.Sequence, i, err)
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

// packedRecord reports whether a dead-letter record packs letters (else
// it is one letter written before they were packed).
func packedRecord(data []byte) bool {
	return len(data) > 0 && (data[0] == packedV1 || data[0] == packedS2)
}

// DeadLetters reads up to limit dead letters of a stream, oldest first,
// starting after the cursor.
func (l *Log) DeadLetters(ctx context.Context, stream string, after Cursor, limit int) ([]DeadLetter, error) {
	return readSlots(ctx, l, l.dlqName(), l.DLQSubject(stream), after, limit, func(m *jetstream.RawStreamMsg, from, limit int) ([]DeadLetter, error) {
		return decodeLetters(stream, m, from, limit)
	})
}

// readSlots reads up to limit packed slots (letters, decided events) of a
// subject of a shared stream, oldest first, starting after the cursor;
// decode reads a record's slots from index from on, at most limit.
func readSlots[T any](ctx context.Context, l *Log, name, subj string, after Cursor, limit int, decode func(m *jetstream.RawStreamMsg, from, limit int) ([]T, error)) ([]T, error) {
	s, err := l.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("eventlog: %s: %w", name, err)
	}
	var out []T
	seq := after.Seq + 1
	if after.Index != AllOfRecord {
		seq = max(after.Seq, 1)
	}
	for len(out) < limit {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("eventlog: read %s: %w", name, err)
		}
		from := 0
		if m.Sequence == after.Seq {
			from = after.Index + 1
		}
		got, err := decode(m, from, limit-len(out))
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		seq = m.Sequence + 1
	}
	return out, nil
}

// LetterRecord is one record of a stream's dead-letter queue, read whole.
type LetterRecord struct {
	Seq uint64 // its sequence in the dead-letter stream
	// Packed: the record packs letters (false: it is one letter written
	// before they were packed).
	Packed  bool
	Letters []DeadLetter // every letter it holds, in order, with their places
}

// LastDeadLetterSeq is the sequence of the last dead-letter record stored,
// of any stream (0: none): the records stored later come after it.
func (l *Log) LastDeadLetterSeq(ctx context.Context) (uint64, error) {
	st, err := l.js.Stream(ctx, l.dlqName())
	if err != nil {
		return 0, fmt.Errorf("eventlog: dlq stream: %w", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("eventlog: dlq info: %w", err)
	}
	return info.State.LastSeq, nil
}

// DeadLetterRecord reads the first record of a stream's dead letters at
// sequence from or later, with all of its letters; found is false when
// there is none.
func (l *Log) DeadLetterRecord(ctx context.Context, stream string, from uint64) (rec LetterRecord, found bool, err error) {
	st, err := l.js.Stream(ctx, l.dlqName())
	if err != nil {
		return LetterRecord{}, false, fmt.Errorf("eventlog: dlq stream: %w", err)
	}
	m, err := st.GetMsg(ctx, max(from, 1), jetstream.WithGetMsgSubject(l.DLQSubject(stream)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return LetterRecord{}, false, nil
	}
	if err != nil {
		return LetterRecord{}, false, fmt.Errorf("eventlog: read %s: %w", l.dlqName(), err)
	}
	dls, err := decodeLetters(stream, m, 0, math.MaxInt)
	if err != nil {
		return LetterRecord{}, false, err
	}
	return LetterRecord{Seq: m.Sequence, Packed: packedRecord(m.Data), Letters: dls}, true, nil
}

// DeleteDeadLetterRecord removes a dead-letter record (all of its
// letters).
func (l *Log) DeleteDeadLetterRecord(ctx context.Context, seq uint64) error {
	s, err := l.js.Stream(ctx, l.dlqName())
	if err != nil {
		return fmt.Errorf("eventlog: dlq stream: %w", err)
	}
	if err := s.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("eventlog: delete dead-letter record %d: %w", seq, err)
	}
	return nil
}

// letterCounts is what a process knows of the records of a subject of
// packed slots (a stream's dead letters, its decided events):
// the letters of each, from their headers.
type letterCounts struct {
	mu     sync.Mutex
	counts map[uint64]int // record sequence → letters
	next   uint64         // the records before it were read
}

// DeadLetterCount is the number of dead letters (events) of a stream.
//
// It reads the letter count of each record from its header, once: the
// process keeps the counts of the records it has seen and reads only the
// records appended since. When the subject holds fewer records than that
// (a replay or the retention limits removed some) it reads the headers of
// every record again.
func (l *Log) DeadLetterCount(ctx context.Context, stream string) (uint64, error) {
	return l.slotCount(ctx, l.dlqName(), l.DLQSubject(stream))
}

// slotCount is the number of packed slots (letters, decided events) of a
// subject of a shared stream whose records carry CountHeader, counted as
// DeadLetterCount says.
func (l *Log) slotCount(ctx context.Context, name, subj string) (uint64, error) {
	l.wmu.Lock()
	c := l.letterCounts[subj]
	if c == nil {
		c = &letterCounts{counts: map[uint64]int{}}
		l.letterCounts[subj] = c
	}
	l.wmu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()

	s, err := l.js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("eventlog: %s: %w", name, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, fmt.Errorf("eventlog: %s info: %w", name, err)
	}
	records, last := info.State.Subjects[subj], info.State.LastSeq
	if records == 0 {
		clear(c.counts)
		c.next = last + 1
		return 0, nil
	}
	for seq := range c.counts {
		if seq < info.State.FirstSeq {
			delete(c.counts, seq)
		}
	}
	// Every record of the subject up to last is in counts after this read
	// (records removed meanwhile may be too): more than the subject holds
	// means some were removed.
	if err := c.read(ctx, s, subj, last); err != nil {
		return 0, err
	}
	if uint64(len(c.counts)) > records {
		clear(c.counts)
		c.next = 0
		if err := c.read(ctx, s, subj, last); err != nil {
			return 0, err
		}
	}
	var n uint64
	for _, k := range c.counts {
		n += uint64(k)
	}
	return n, nil
}

// read adds the counts of the records from c.next up to last.
func (c *letterCounts) read(ctx context.Context, s jetstream.Stream, subj string, last uint64) error {
	if c.next > last {
		return nil
	}
	err := eachRecord(ctx, s, subj, max(c.next, 1), last, true, func(r logRecord) error {
		n := 1 // a letter written before records were packed
		if h := r.header.Get(CountHeader); h != "" {
			k, err := strconv.Atoi(h)
			if err != nil {
				return fmt.Errorf("eventlog: dead-letter record %d: %s: %w", r.seq, CountHeader, err)
			}
			n = k
		}
		c.counts[r.seq] = n
		return nil
	})
	if err != nil {
		return err
	}
	c.next = last + 1
	return nil
}

// logRecord is a record as read from the log.
type logRecord struct {
	seq    uint64
	time   time.Time // when JetStream stored it
	header nats.Header
	data   []byte // nil when read for its headers only
}

// leaderReads is the most records eachRecord reads one by one from the
// stream's leader without a consumer.
const leaderReads = 64

// consumerIdle is how long eachRecord's consumer may deliver nothing
// before the rest is read from the leader.
const consumerIdle = 250 * time.Millisecond

// errStop ends an eachRecord early without an error.
var errStop = errors.New("eventlog: stop reading")

// eachRecord calls fn, in order, for every record of s (of subject, when
// not "") from sequence from up to sequence last, skipping those removed
// meanwhile; fn may return errStop to end early. A few records are read
// one by one from the stream's leader. More are read by an ordered
// consumer, and the rest, once it delivers nothing for a moment, from the
// leader: in a cluster the consumer sits on any replica of the stream,
// which may not hold the newest records yet (last came from the leader),
// or on a node that just died. A consumer that cannot be made is not
// retried (the caller is): every step is bounded by ctx, but for the
// making of the consumer (the client library's own 10 s).
func eachRecord(ctx context.Context, s jetstream.Stream, subject string, from, last uint64, headersOnly bool, fn func(logRecord) error) error {
	name := s.CachedInfo().Config.Name
	next := from
	if last >= from && last-from >= leaderReads {
		var err error
		next, err = consumeRecords(ctx, s, subject, from, last, headersOnly, fn)
		if errors.Is(err, errStop) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	filter := subject
	if filter == "" {
		filter = ">"
	}
	for next <= last {
		m, err := s.GetMsg(ctx, next, jetstream.WithGetMsgSubject(filter))
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			return nil // none left at or after next
		case err != nil:
			return fmt.Errorf("%w: read %s record %d: %v", ErrUnavailable, name, next, err)
		case m.Sequence > last:
			return nil
		}
		if err := fn(logRecord{seq: m.Sequence, time: m.Time, header: m.Header, data: m.Data}); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
		next = m.Sequence + 1
	}
	return nil
}

// consumeRecords is eachRecord's ordered consumer: it returns the
// sequence after the last record it delivered once it delivered the
// record at last or nothing for consumerIdle. An error of the consumer's
// ends it without one: the leader gives the rest.
func consumeRecords(ctx context.Context, s jetstream.Stream, subject string, from, last uint64, headersOnly bool, fn func(logRecord) error) (uint64, error) {
	name := s.CachedInfo().Config.Name
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
		HeadersOnly: headersOnly, InactiveThreshold: time.Minute, MaxResetAttempts: 1}
	if subject != "" {
		cfg.FilterSubjects = []string{subject}
	}
	c, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return from, fmt.Errorf("%w: read %s: %v", ErrUnavailable, name, err)
	}
	it, err := c.Messages(jetstream.PullMaxMessagesWithBytesLimit(1000, prefetchBytes))
	if err != nil {
		return from, nil
	}
	// The consumer is deleted when done (else the server drops it after
	// a minute unused): a process may read often.
	defer func() {
		it.Stop()
		if ci := c.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.DeleteConsumer(dctx, ci.Name)
			cancel()
		}
	}()
	next := from
	for next <= last {
		if err := ctx.Err(); err != nil {
			return next, fmt.Errorf("%w: read %s: %v", ErrUnavailable, name, err)
		}
		m, err := it.Next(jetstream.NextMaxWait(consumerIdle))
		if err != nil {
			return next, nil
		}
		md, err := m.Metadata()
		if err != nil {
			return next, fmt.Errorf("eventlog: read %s: %w", name, err)
		}
		seq := md.Sequence.Stream
		if seq < next {
			continue // delivered again after a reset
		}
		if seq > last {
			return seq, nil
		}
		if err := fn(logRecord{seq: seq, time: md.Timestamp, header: m.Headers(), data: m.Data()}); err != nil {
			return next, err
		}
		next = seq + 1
	}
	return next, nil
}
