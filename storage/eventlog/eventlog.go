// Package eventlog is Braid's durable event log on NATS JetStream: one
// JetStream stream of clean events per partition of a Braid stream, one
// stream of dead letters, one of too-late records, one of the events
// rules held back at ingest (a subject per Braid stream in each; two, by
// outcome, in the last). Streams are created or updated idempotently at Open.
//
// A partition is a log of its own: its own sequences (contiguous, so a
// reader can tell a gap), its own writer and id window, its own leader in
// a NATS cluster. Partition 0 of a stream is the JetStream stream that
// held the whole stream before partitions existed, so an existing
// deployment keeps its log (StreamName, Subject).
//
// A clean stream's message (a log record) packs the events of one write
// (see packed.go); the writer drops an event whose id was stored within the
// dedup window, so duplicates are stored once (see writer.go). Dead
// letters are written the same way (see deadletter.go).
package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/logic/defaults"
)

// Options configures the log.
type Options struct {
	Namespace   string        // prefix of stream names and subjects
	Replicas    int           // JetStream replicas (1 for a single server)
	DedupWindow time.Duration // message-id dedup window of the clean streams (0: defaults.NATSDedupWindow)
	// MaxAge is how long the clean log keeps records (nats.max_age, 0:
	// forever). It is no JetStream limit, which would delete records
	// whether archived or not: the archiver trims the log (Trim) of the
	// records both this old and in the lake. Open removes the MaxAge of
	// clean streams created with one (by an earlier version), saying so.
	MaxAge   time.Duration
	MaxMsgs  int64 // limit of clean log records per partition (0: none); publishes beyond get ErrFull
	MaxBytes int64 // byte limit per partition (0: none)
	// Partitions is each Braid stream's number of partitions (absent or
	// below 1: one).
	Partitions map[string]int
	// Retention of dead letters and too-late records: by age, and per
	// stream (each stream's subject has its own budget, so one stream's
	// rejects never evict another's), in dead-letter records (each holds
	// the dead letters of one write) and in too-late records (one per
	// event); the oldest go first. 0: no limit.
	DLQMaxAge      time.Duration
	DLQMaxRecords  int64
	LateMaxMsgs    int64
	PublishTimeout time.Duration
	Memory         bool         // memory storage (tests only)
	Logger         *slog.Logger // nil: slog.Default()
}

// Errors callers branch on.
var (
	ErrFull        = errors.New("eventlog: stream is full")
	ErrUnavailable = errors.New("eventlog: log unavailable")
	// ErrPartitionsShrunk: Open was given fewer partitions for a stream
	// than its log has partitions holding records.
	ErrPartitionsShrunk = errors.New("partitions can only grow")
)

// Log is the event log. It is safe for concurrent use.
type Log struct {
	js   jetstream.JetStream
	opts Options

	wmu          sync.Mutex
	writers      map[string]*writer       // by subject
	letterCounts map[string]*letterCounts // by subject (dead letters, decided events)

	counts counts // EventCount's caches (counts.go)
}

// Open ensures the JetStream streams for the given Braid streams exist with
// the configured settings.
func Open(ctx context.Context, js jetstream.JetStream, streams []string, opts Options) (*Log, error) {
	if opts.Replicas < 1 {
		opts.Replicas = defaults.NATSReplicas
	}
	if opts.PublishTimeout <= 0 {
		opts.PublishTimeout = defaults.NATSPublishTimeout
	}
	if opts.DedupWindow <= 0 {
		opts.DedupWindow = defaults.NATSDedupWindow
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	l := &Log{js: js, opts: opts, writers: map[string]*writer{}, letterCounts: map[string]*letterCounts{}}
	storage := jetstream.FileStorage
	if opts.Memory {
		storage = jetstream.MemoryStorage
	}
	for _, s := range streams {
		if err := l.checkPartitions(ctx, s); err != nil {
			return nil, err
		}
	}
	for _, s := range streams {
		for p := range l.Partitions(s) {
			cfg := jetstream.StreamConfig{
				Name:       l.StreamName(s, p),
				Subjects:   l.subjects(s, p),
				Storage:    storage,
				Replicas:   opts.Replicas,
				Duplicates: opts.DedupWindow,
				MaxAge:     0, // the archiver trims the log (Trim)
				MaxMsgs:    orNeg(opts.MaxMsgs),
				MaxBytes:   orNeg(opts.MaxBytes),
				Discard:    jetstream.DiscardNew,
				Retention:  jetstream.LimitsPolicy,
			}
			if old, err := js.Stream(ctx, cfg.Name); err == nil && old.CachedInfo().Config.MaxAge > 0 {
				opts.Logger.Info("removing the log's JetStream max age: Braid now trims the log itself, only of records in the lake (nats.max_age)",
					"stream", cfg.Name, "jetstream_max_age", old.CachedInfo().Config.MaxAge, "max_age", opts.MaxAge)
			}
			if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
				return nil, fmt.Errorf("eventlog: create stream %s: %w", cfg.Name, err)
			}
		}
	}
	// One subject per stream in each, each with its own budget.
	side := []jetstream.StreamConfig{
		{Name: l.dlqName(), Subjects: []string{opts.Namespace + ".dlq.*"}, MaxAge: opts.DLQMaxAge, MaxMsgsPerSubject: orNeg(opts.DLQMaxRecords), Duplicates: opts.DedupWindow},
		{Name: opts.Namespace + "_late", Subjects: []string{opts.Namespace + ".late.*"}, MaxAge: opts.DLQMaxAge, MaxMsgsPerSubject: orNeg(opts.LateMaxMsgs), Duplicates: opts.DedupWindow},
		// Events held back by rules at ingest (decided.go): kept like dead letters.
		{Name: l.blockedName(), Subjects: []string{opts.Namespace + ".blocked.*", opts.Namespace + ".review.*"}, MaxAge: opts.DLQMaxAge, MaxMsgsPerSubject: orNeg(opts.DLQMaxRecords), Duplicates: opts.DedupWindow},
	}
	for _, cfg := range side {
		cfg.Storage, cfg.Replicas, cfg.Discard, cfg.MaxMsgs = storage, opts.Replicas, jetstream.DiscardOld, -1
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return nil, fmt.Errorf("eventlog: create stream %s: %w", cfg.Name, err)
		}
	}
	return l, nil
}

// checkPartitions refuses fewer partitions than the stream's log has
// partitions holding records: their events would be read by no one, and
// an event's id would no longer meet its earlier copies in one partition.
// A partition's JetStream stream beyond the count that holds no record is
// left alone; raising the count takes it back.
func (l *Log) checkPartitions(ctx context.Context, stream string) error {
	n := l.Partitions(stream)
	prefix := l.StreamName(stream, 0) + "-"
	names := l.js.StreamNames(ctx, jetstream.WithStreamListSubject(l.opts.Namespace+".events."+stream+".*"))
	have, beyond := n, ""
	for name := range names.Name() {
		p, err := strconv.Atoi(strings.TrimPrefix(name, prefix))
		if !strings.HasPrefix(name, prefix) || err != nil || p < n {
			continue
		}
		s, err := l.js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("eventlog: partitions of %s: %s: %w", stream, name, err)
		}
		if s.CachedInfo().State.Msgs > 0 && p+1 > have {
			have, beyond = p+1, name
		}
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("eventlog: partitions of %s: %w", stream, err)
	}
	if have > n {
		return fmt.Errorf("eventlog: streams.%s.partitions is %d, but the log has %d partitions with records (JetStream stream %s holds some): %w",
			stream, n, have, beyond, ErrPartitionsShrunk)
	}
	return nil
}

func orNeg(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// JetStream returns the underlying JetStream context.
func (l *Log) JetStream() jetstream.JetStream { return l.js }

// Partitions is the number of partitions of a Braid stream's log (1 for
// a stream Open was not told of).
func (l *Log) Partitions(stream string) int { return max(1, l.opts.Partitions[stream]) }

// StreamName is the JetStream stream holding partition p of a Braid
// stream's clean events: <ns>_events_<stream> for partition 0 (the name
// the whole stream had before partitions), <ns>_events_<stream>-<p> for
// the others.
func (l *Log) StreamName(stream string, p int) string {
	if p == 0 {
		return l.opts.Namespace + "_events_" + stream
	}
	return l.opts.Namespace + "_events_" + stream + "-" + strconv.Itoa(p)
}

// Subject is the subject events of partition p of a Braid stream are
// published on: <ns>.events.<stream>.<p>.
func (l *Log) Subject(stream string, p int) string {
	return l.opts.Namespace + ".events." + stream + "." + strconv.Itoa(p)
}

// subjects are the subjects of partition p's JetStream stream: partition
// 0 keeps the subject of the whole stream before partitions
// (<ns>.events.<stream>), whose records it holds.
func (l *Log) subjects(stream string, p int) []string {
	if p == 0 {
		return []string{l.opts.Namespace + ".events." + stream, l.Subject(stream, 0)}
	}
	return []string{l.Subject(stream, p)}
}

// DLQSubject is the subject of a stream's dead letters.
func (l *Log) DLQSubject(stream string) string { return l.opts.Namespace + ".dlq." + stream }

// LateSubject is the subject of a stream's too-late records.
func (l *Log) LateSubject(stream string) string { return l.opts.Namespace + ".late." + stream }

// Record is one clean event to append: its canonical bytes, its id (may
// be empty: then it is never deduplicated) and its partition
// (logic.Stream.PartitionOf; 0 when the stream has one).
type Record struct {
	ID   string
	Data []byte
	Part int
}

// Publish appends events to a stream's log, each to its partition
// (Record.Part), and returns once JetStream has stored all of them (or
// reports a failure: then some may be stored). An event whose id was
// stored within the dedup window of its partition, or that repeats an id
// earlier in recs, is dropped and counts as stored. Concurrent calls
// share log records (see writer); the partitions are written in
// parallel. Every event must fit one record on its own (MaxEvent). The
// writer holds recs until their write is settled, which may be after
// Publish returned an error: do not reuse them.
func (l *Log) Publish(ctx context.Context, stream string, recs []Record) error {
	if len(recs) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.opts.PublishTimeout)
	defer cancel()
	n := l.Partitions(stream)
	if n == 1 {
		return l.writerFor(stream, 0).write(ctx, recs)
	}
	parts := make([][]Record, n)
	for _, r := range recs {
		p := r.Part
		if p < 0 || p >= n {
			return fmt.Errorf("eventlog: publish to %s: partition %d of %d", stream, p, n)
		}
		parts[p] = append(parts[p], r)
	}
	reqs := make([]*writeReq, n)
	for p, rs := range parts {
		if len(rs) > 0 {
			reqs[p] = l.writerFor(stream, p).submit(rs)
		}
	}
	var errs []error
	for p, r := range reqs {
		if r == nil {
			continue
		}
		if err := r.wait(ctx); err != nil {
			errs = append(errs, fmt.Errorf("partition %d: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

// maxRecord is the most bytes a log record's events take: the server's
// message limit (max_payload) less room for the headers.
func (l *Log) maxRecord() int { return l.MaxMessage() - recordOverhead }

// MaxMessage is the largest message the log's server accepts, headers
// included: its max_payload (NATS's default of 1 MiB when the connection
// does not tell).
func (l *Log) MaxMessage() int {
	if js := l.js; js != nil {
		if nc := js.Conn(); nc != nil && nc.MaxPayload() > 0 {
			return int(nc.MaxPayload())
		}
	}
	return 1 << 20
}

// recordOverhead is room left in a message for its headers and framing.
const recordOverhead = 1 << 10

// MaxEvent is the largest event (id and canonical record) a log record can
// hold: Publish fails a batch holding a larger one.
func (l *Log) MaxEvent() int { return l.maxRecord() - 32 }

func classify(err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		if strings.Contains(apiErr.Description, "maximum") || strings.Contains(apiErr.Description, "resource limits") {
			return fmt.Errorf("%w: %v", ErrFull, err)
		}
	}
	if errors.Is(err, nats.ErrMaxMessages) {
		return fmt.Errorf("%w: %v", ErrFull, err)
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// EventRef is an event's place in the log: its partition, its record's
// sequence there and its index in the record.
type EventRef struct {
	Part  int    `json:"part,omitempty"`
	Seq   uint64 `json:"seq"`
	Index int    `json:"index"`
}

// lateID names a too-late event's place: "<stream>:<seq>:<index>" in
// partition 0 (as before partitions), "<stream>:<p>:<seq>:<index>" in the
// others.
func lateID(stream string, r EventRef) string {
	id := stream + ":"
	if r.Part != 0 {
		id += strconv.Itoa(r.Part) + ":"
	}
	return id + strconv.FormatUint(r.Seq, 10) + ":" + strconv.Itoa(r.Index)
}

// parseLateID reads lateID.
func parseLateID(stream, id string) (EventRef, error) {
	f := strings.Split(strings.TrimPrefix(id, stream+":"), ":")
	var r EventRef
	var err error
	switch len(f) {
	case 2:
	case 3:
		if r.Part, err = strconv.Atoi(f[0]); err != nil {
			return r, fmt.Errorf("late record id %q: %w", id, err)
		}
		f = f[1:]
	default:
		return r, fmt.Errorf("late record id %q: want stream:[part:]seq:index", id)
	}
	if r.Seq, err = strconv.ParseUint(f[0], 10, 64); err == nil {
		r.Index, err = strconv.Atoi(f[1])
	}
	if err != nil {
		return r, fmt.Errorf("late record id %q: %w", id, err)
	}
	return r, nil
}

// PublishLate records too-late events of a stream: their canonical bytes,
// under a message id naming their place (partition, sequence, index), so
// a replay stores each once.
func (l *Log) PublishLate(ctx context.Context, stream string, refs []EventRef, data [][]byte) error {
	recs := make([]Record, len(refs))
	for i, r := range refs {
		recs[i] = Record{ID: lateID(stream, r), Data: data[i]}
	}
	return l.publishTo(ctx, l.LateSubject(stream), recs)
}

func (l *Log) publishTo(ctx context.Context, subj string, recs []Record) error {
	ctx, cancel := context.WithTimeout(ctx, l.opts.PublishTimeout)
	defer cancel()
	for _, r := range recs {
		m := &nats.Msg{Subject: subj, Data: r.Data}
		if r.ID != "" {
			m.Header = nats.Header{jetstream.MsgIDHeader: []string{r.ID}}
		}
		if _, err := l.js.PublishMsg(ctx, m); err != nil {
			return classify(err)
		}
	}
	return nil
}

// LateEvents returns the places of the stream's too-late records still
// retained (at most limit): the events the speed layer skipped.
func (l *Log) LateEvents(ctx context.Context, stream string, limit int) ([]EventRef, error) {
	return readSide[EventRef](ctx, l, l.opts.Namespace+"_late", l.LateSubject(stream), 0, limit, func(m *jetstream.RawStreamMsg) (EventRef, error) {
		return parseLateID(stream, m.Header.Get(jetstream.MsgIDHeader))
	})
}

// LateCount is the number of too-late records of a stream.
func (l *Log) LateCount(ctx context.Context, stream string) (uint64, error) {
	return l.subjectCount(ctx, l.opts.Namespace+"_late", l.LateSubject(stream))
}

func (l *Log) subjectCount(ctx context.Context, name, subj string) (uint64, error) {
	s, err := l.js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("eventlog: %s: %w", name, err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, fmt.Errorf("eventlog: %s info: %w", name, err)
	}
	return info.State.Subjects[subj], nil
}

func readSide[T any](ctx context.Context, l *Log, name, subj string, after uint64, limit int, decode func(*jetstream.RawStreamMsg) (T, error)) ([]T, error) {
	s, err := l.js.Stream(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("eventlog: %s: %w", name, err)
	}
	var out []T
	seq := after + 1
	for len(out) < limit {
		m, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("eventlog: read %s: %w", name, err)
		}
		t, err := decode(m)
		if err != nil {
			return nil, fmt.Errorf("eventlog: decode %s %d: %w", name, m.Sequence, err)
		}
		out = append(out, t)
		seq = m.Sequence + 1
	}
	return out, nil
}

// StreamInfo is the state of a partition's clean log.
// Sequences and counts are of log records, each holding the events of one
// write.
type StreamInfo struct {
	FirstSeq, LastSeq uint64
	Msgs              uint64
	LastTime          time.Time
}

// Info returns the state of partition p of a stream's clean log.
func (l *Log) Info(ctx context.Context, stream string, p int) (StreamInfo, error) {
	s, err := l.js.Stream(ctx, l.StreamName(stream, p))
	if err != nil {
		return StreamInfo{}, fmt.Errorf("eventlog: %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return StreamInfo{}, fmt.Errorf("eventlog: %s info: %w", stream, err)
	}
	return StreamInfo{FirstSeq: info.State.FirstSeq, LastSeq: info.State.LastSeq, Msgs: info.State.Msgs, LastTime: info.State.LastTime}, nil
}
