// Package alertbox keeps the alerts' decisions, deliveries and dead
// letters in NATS JetStream: the outbox that makes a decision to fire
// durable (and from which an evaluator rebuilds its state), the shared
// consumer that delivery workers read, the dead-letter queue of each
// alert, the recent outcomes of deliveries and the rows firing now.
//
// Streams and bucket (created or updated idempotently at Open, with the
// configured replicas):
//
//	<ns>_alerts        limits, max age defaults.AlertOutboxMaxAge (or the evaluated span), deduplicated by
//	                   Nats-Msg-Id (the delivery id) within defaults.AlertDedupWindow:
//	  <ns>.alerts.out.<alert>    a delivery: the JSON body, its keys in headers (Record)
//	  <ns>.alerts.mark.<alert>   a baseline: the values of a fired window once it is
//	                             final, against which a batch run's correction is told
//	                             (never delivered)
//	<ns>_alerts_dlq    limits, max age defaults.AlertDLQMaxAge:
//	  <ns>.alerts.dlq.<alert>    a delivery that failed its last attempt, with why
//	<ns>_alerts_log    limits, defaults.AlertRecent messages per subject:
//	  <ns>.alerts.log.<alert>    the outcome of each delivery attempt that ended it
//	KV <ns>_alerts_state         key <alert>: the rows firing now, as the evaluator wrote them
//
// Every delivery worker reads the outbox's deliveries through one durable
// consumer ("deliver", explicit acknowledgement, redelivered after the
// ack wait): a delivery is acknowledged once it was delivered or moved to
// the dead-letter queue, so a worker that dies in between loses nothing
// (another one attempts it again, with the same id).
package alertbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/logic/defaults"
)

// Options configures a Box.
type Options struct {
	Namespace string        // prefix of stream names and subjects
	Replicas  int           // JetStream replicas (0: defaults.NATSReplicas)
	AckWait   time.Duration // how long a delivery stays with a worker that stops answering (0: a minute)
	// MaxAge is how long the outbox keeps decisions: at least the span of
	// windows an evaluator rebuilds its state for (0, or less than
	// defaults.AlertOutboxMaxAge: that).
	MaxAge time.Duration
	Logger *slog.Logger // nil: discarded
}

// Headers of the outbox's and dead-letter queue's messages.
const (
	hdrID      = "Braid-Id"
	hdrAlert   = "Braid-Alert"
	hdrWindow  = "Braid-Window"
	hdrGroup   = "Braid-Group"
	hdrState   = "Braid-State"
	hdrVersion = "Braid-Version"
	hdrFinal   = "Braid-Final"
	hdrDecided = "Braid-Decided"
	hdrArrival = "Braid-Arrival"
	hdrError   = "Braid-Error"
	hdrTries   = "Braid-Attempts"
	hdrFailed  = "Braid-Failed-At"
)

// Record kinds: where a record goes in the outbox.
const (
	KindDelivery = "out"  // delivered to the alert's action
	KindBaseline = "mark" // kept for the evaluator only
)

// Record is one decision of an alert's evaluator.
type Record struct {
	Kind    string // KindDelivery or KindBaseline
	ID      string // the delivery id; the outbox keeps one record per id within its dedup window
	Alert   string
	Window  int64  // window start, unix ms
	Group   string // the row's group key (logic.GroupKey)
	State   string // firing | resolved | corrected (a baseline: "baseline")
	Version string // the batch version the row's values were computed at ("": none)
	Final   bool   // the row's window was final
	Decided int64  // when it was decided, unix ms
	Arrival int64  // the arrival of the newest event in the row's answer, unix ms (0: unknown)
	Body    []byte // the delivery's body (JSON), sent as is
}

// Box is the alerts' JetStream storage. Safe for concurrent use.
type Box struct {
	nc       *nats.Conn
	js       jetstream.JetStream
	ns       string
	outbox   jetstream.Stream
	dlq      jetstream.Stream
	journal  jetstream.Stream
	state    jetstream.KeyValue
	consumer jetstream.Consumer
	logger   *slog.Logger
}

// consumerName is the durable consumer every delivery worker shares.
const consumerName = "deliver"

// Open ensures the streams, the bucket and the delivery consumer exist.
func Open(ctx context.Context, js jetstream.JetStream, o Options) (*Box, error) {
	if o.Replicas < 1 {
		o.Replicas = defaults.NATSReplicas
	}
	if o.AckWait <= 0 {
		o.AckWait = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.MaxAge = max(o.MaxAge, defaults.AlertOutboxMaxAge)
	b := &Box{nc: js.Conn(), js: js, ns: o.Namespace, logger: o.Logger}
	var err error
	if b.outbox, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: o.Namespace + "_alerts", Subjects: []string{b.subject(KindDelivery, "*"), b.subject(KindBaseline, "*")},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: o.Replicas,
		MaxAge: o.MaxAge, Duplicates: defaults.AlertDedupWindow, MaxMsgs: -1, MaxBytes: -1, Discard: jetstream.DiscardOld,
	}); err != nil {
		return nil, fmt.Errorf("alertbox: create the outbox: %w", err)
	}
	if b.dlq, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: o.Namespace + "_alerts_dlq", Subjects: []string{b.subject("dlq", "*")},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: o.Replicas,
		MaxAge: defaults.AlertDLQMaxAge, Duplicates: defaults.AlertDedupWindow, MaxMsgs: -1, MaxBytes: -1, Discard: jetstream.DiscardOld,
	}); err != nil {
		return nil, fmt.Errorf("alertbox: create the dead-letter queue: %w", err)
	}
	if b.journal, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: o.Namespace + "_alerts_log", Subjects: []string{b.subject("log", "*")},
		Retention: jetstream.LimitsPolicy, Storage: jetstream.FileStorage, Replicas: o.Replicas,
		MaxMsgsPerSubject: defaults.AlertRecent, MaxMsgs: -1, MaxBytes: -1, Discard: jetstream.DiscardOld,
	}); err != nil {
		return nil, fmt.Errorf("alertbox: create the delivery log: %w", err)
	}
	if b.state, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: o.Namespace + "_alerts_state", Storage: jetstream.FileStorage, Replicas: o.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("alertbox: create the state bucket: %w", err)
	}
	if b.consumer, err = b.outbox.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: consumerName, FilterSubject: b.subject(KindDelivery, ">"), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: o.AckWait, MaxDeliver: -1, MaxAckPending: 10_000, Replicas: o.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("alertbox: create the delivery consumer: %w", err)
	}
	return b, nil
}

// subject is <ns>.alerts.<kind>.<alert>.
func (b *Box) subject(kind, alert string) string { return b.ns + ".alerts." + kind + "." + alert }

// header renders a record's keys.
func (r Record) header() nats.Header {
	h := nats.Header{}
	h.Set(nats.MsgIdHdr, r.ID)
	h.Set(hdrID, r.ID)
	h.Set(hdrAlert, r.Alert)
	h.Set(hdrWindow, strconv.FormatInt(r.Window, 10))
	h.Set(hdrGroup, r.Group)
	h.Set(hdrState, r.State)
	h.Set(hdrVersion, r.Version)
	h.Set(hdrFinal, strconv.FormatBool(r.Final))
	h.Set(hdrDecided, strconv.FormatInt(r.Decided, 10))
	h.Set(hdrArrival, strconv.FormatInt(r.Arrival, 10))
	return h
}

// recordOf reads a record from a message's headers and body.
func recordOf(kind string, h nats.Header, body []byte) Record {
	r := Record{Kind: kind, ID: h.Get(hdrID), Alert: h.Get(hdrAlert), Group: h.Get(hdrGroup), State: h.Get(hdrState),
		Version: h.Get(hdrVersion), Body: body}
	r.Window, _ = strconv.ParseInt(h.Get(hdrWindow), 10, 64)
	r.Final, _ = strconv.ParseBool(h.Get(hdrFinal))
	r.Decided, _ = strconv.ParseInt(h.Get(hdrDecided), 10, 64)
	r.Arrival, _ = strconv.ParseInt(h.Get(hdrArrival), 10, 64)
	return r
}

// Publish stores a record in the outbox once JetStream acknowledged it. A
// record whose id the outbox took within its dedup window is not stored
// again (nil: it is there).
func (b *Box) Publish(ctx context.Context, r Record) error {
	if r.Kind != KindDelivery && r.Kind != KindBaseline {
		return fmt.Errorf("alertbox: record kind %q", r.Kind)
	}
	m := &nats.Msg{Subject: b.subject(r.Kind, r.Alert), Header: r.header(), Data: r.Body}
	if _, err := b.js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("alertbox: publish %s: %w", r.ID, err)
	}
	return nil
}

// Records calls fn, in the order they were stored, with the records of an
// alert (deliveries and baselines) stored since since. An error from fn
// stops the read and is returned.
func (b *Box) Records(ctx context.Context, alert string, since time.Time, fn func(Record) error) error {
	kinds := map[string]string{b.subject(KindDelivery, alert): KindDelivery, b.subject(KindBaseline, alert): KindBaseline}
	subjects := []string{b.subject(KindDelivery, alert), b.subject(KindBaseline, alert)}
	return readSubjects(ctx, b.outbox, subjects, since, 0, func(m *jetstream.RawStreamMsg) error {
		return fn(recordOf(kinds[m.Subject], m.Header, m.Data))
	})
}

// readIdle is how long a read waits for a message it expects.
const readIdle = 2 * time.Second

// readSubjects calls fn with the messages of stream s on subjects stored
// since since (zero: all), in order, at most limit of them (0: all), and
// returns once it read the last one stored when it began.
func readSubjects(ctx context.Context, s jetstream.Stream, subjects []string, since time.Time, limit int, fn func(*jetstream.RawStreamMsg) error) error {
	name := s.CachedInfo().Config.Name
	// The last message on the subjects bounds the read (nothing to read:
	// no consumer at all).
	var last uint64
	for _, subj := range subjects {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			continue
		case err != nil:
			return fmt.Errorf("alertbox: read %s: %w", name, err)
		}
		if !since.IsZero() && m.Time.Before(since) {
			continue
		}
		last = max(last, m.Sequence)
	}
	if last == 0 {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: subjects, DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: time.Minute}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	c, err := s.OrderedConsumer(ctx, cfg)
	if err != nil {
		return fmt.Errorf("alertbox: read %s: %w", name, err)
	}
	it, err := c.Messages()
	if err != nil {
		return fmt.Errorf("alertbox: read %s: %w", name, err)
	}
	// The consumer is deleted when done (else the server keeps it a
	// minute unused): evaluators and listings read often.
	defer func() {
		it.Stop()
		if ci := c.CachedInfo(); ci != nil {
			dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = s.DeleteConsumer(dctx, ci.Name)
			cancel()
		}
	}()
	n := 0
	for {
		// A message deleted meanwhile (a replayed dead letter) never
		// comes: a pause without one ends the read.
		nctx, cancel := context.WithTimeout(ctx, readIdle)
		m, err := it.Next(jetstream.NextContext(nctx))
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) {
				return nil
			}
			return fmt.Errorf("alertbox: read %s: %w", name, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return fmt.Errorf("alertbox: read %s: %w", name, err)
		}
		raw := &jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: md.Sequence.Stream, Header: m.Headers(), Data: m.Data(), Time: md.Timestamp}
		if err := fn(raw); err != nil {
			return err
		}
		n++
		if md.Sequence.Stream >= last || md.NumPending == 0 || (limit > 0 && n >= limit) {
			return nil
		}
	}
}

// Delivery is a record handed to a delivery worker: attempt Attempt
// (1 for the first) of the outbox's message Seq. The worker ends it with
// exactly one of Done, Retry or Dead.
type Delivery struct {
	Record
	Attempt int
	Seq     uint64
	msg     jetstream.Msg
	box     *Box
}

// Consume hands each delivery of the outbox to handle, in its own
// goroutine, at most parallel at once, until ctx ends; it returns then,
// once every handle returned. Deliveries are shared by every process's
// Consume: each goes to one of them at a time.
func (b *Box) Consume(ctx context.Context, parallel int, handle func(context.Context, *Delivery)) error {
	if parallel < 1 {
		parallel = 1
	}
	it, err := b.consumer.Messages(jetstream.PullMaxMessages(parallel))
	if err != nil {
		return fmt.Errorf("alertbox: read deliveries: %w", err)
	}
	// Once ctx ends the iterator drains: the deliveries it fetched ahead
	// are handed back at once (another process takes them now rather than
	// after the ack wait).
	stop := context.AfterFunc(ctx, it.Drain)
	defer stop()
	defer it.Stop()
	sem := make(chan struct{}, parallel)
	defer func() {
		for range parallel {
			sem <- struct{}{}
		}
	}()
	for {
		m, err := it.Next()
		if err == nil && ctx.Err() != nil {
			_ = m.Nak()
			continue
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			b.logger.Warn("alert deliveries: read failed; reading again", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
			}
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			b.logger.Warn("alert deliveries: a message without metadata", "err", err)
			_ = m.Term()
			continue
		}
		d := &Delivery{Record: recordOf(KindDelivery, m.Headers(), m.Data()), Attempt: int(md.NumDelivered), Seq: md.Sequence.Stream, msg: m, box: b}
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			handle(ctx, d)
		}()
	}
}

// Done acknowledges a delivery that reached its action.
func (d *Delivery) Done() error {
	if err := d.msg.Ack(); err != nil {
		return fmt.Errorf("alertbox: ack %s: %w", d.ID, err)
	}
	return nil
}

// Retry hands the delivery out again after delay.
func (d *Delivery) Retry(delay time.Duration) error {
	if err := d.msg.NakWithDelay(delay); err != nil {
		return fmt.Errorf("alertbox: retry %s: %w", d.ID, err)
	}
	return nil
}

// Dead moves the delivery to its alert's dead-letter queue with the
// reason of its last failure, then acknowledges it. A worker that dies in
// between leaves the delivery to be attempted again; the dead letter is
// stored once per outbox message.
func (d *Delivery) Dead(ctx context.Context, reason string) error {
	h := d.header()
	h.Set(nats.MsgIdHdr, "dlq/"+strconv.FormatUint(d.Seq, 10))
	h.Set(hdrError, reason)
	h.Set(hdrTries, strconv.Itoa(d.Attempt))
	h.Set(hdrFailed, strconv.FormatInt(time.Now().UnixMilli(), 10))
	if _, err := d.box.js.PublishMsg(ctx, &nats.Msg{Subject: d.box.subject("dlq", d.Alert), Header: h, Data: d.Body}); err != nil {
		return fmt.Errorf("alertbox: dead-letter %s: %w", d.ID, err)
	}
	return d.Done()
}

// DeadLetter is a delivery kept in its alert's dead-letter queue.
type DeadLetter struct {
	Record
	Seq      uint64 // its place in the dead-letter queue
	Error    string // why its last attempt failed
	Attempts int
	FailedAt int64 // unix ms
}

// DeadLetters lists up to limit (0: all) dead letters of an alert, oldest
// first.
func (b *Box) DeadLetters(ctx context.Context, alert string, limit int) ([]DeadLetter, error) {
	var out []DeadLetter
	err := readSubjects(ctx, b.dlq, []string{b.subject("dlq", alert)}, time.Time{}, limit, func(m *jetstream.RawStreamMsg) error {
		dl := DeadLetter{Record: recordOf(KindDelivery, m.Header, m.Data), Seq: m.Sequence, Error: m.Header.Get(hdrError)}
		dl.Attempts, _ = strconv.Atoi(m.Header.Get(hdrTries))
		dl.FailedAt, _ = strconv.ParseInt(m.Header.Get(hdrFailed), 10, 64)
		out = append(out, dl)
		return nil
	})
	return out, err
}

// Replay puts every dead letter of an alert back in the outbox, to be
// delivered again with the same id and body, and removes it from the
// dead-letter queue; it returns how many it put back. A replay cut short
// puts none back twice (the outbox deduplicates by the dead letter's
// place).
func (b *Box) Replay(ctx context.Context, alert string) (int, error) {
	dls, err := b.DeadLetters(ctx, alert, 0)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, dl := range dls {
		h := dl.header()
		h.Set(nats.MsgIdHdr, "replay/"+strconv.FormatUint(dl.Seq, 10))
		if _, err := b.js.PublishMsg(ctx, &nats.Msg{Subject: b.subject(KindDelivery, alert), Header: h, Data: dl.Body}); err != nil {
			return n, fmt.Errorf("alertbox: replay %s: %w", dl.ID, err)
		}
		if err := b.dlq.DeleteMsg(ctx, dl.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, fmt.Errorf("alertbox: replay %s: remove the dead letter: %w", dl.ID, err)
		}
		n++
	}
	return n, nil
}

// DeadLetterCounts returns how many dead letters each alert has (alerts
// without any are absent).
func (b *Box) DeadLetterCounts(ctx context.Context) (map[string]uint64, error) {
	info, err := b.dlq.Info(ctx, jetstream.WithSubjectFilter(b.subject("dlq", ">")))
	if err != nil {
		return nil, fmt.Errorf("alertbox: dead-letter counts: %w", err)
	}
	prefix := b.subject("dlq", "")
	out := map[string]uint64{}
	for subj, n := range info.State.Subjects {
		if len(subj) > len(prefix) {
			out[subj[len(prefix):]] = n
		}
	}
	return out, nil
}

// Outcome is how a delivery attempt ended, as GET /v1/alerts lists it.
type Outcome struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	Window    int64  `json:"window_ms"`
	Group     string `json:"group"`
	Outcome   string `json:"outcome"` // delivered | retry | dead
	Attempt   int    `json:"attempt"`
	Status    int    `json:"status,omitempty"` // the webhook's HTTP status (0: none)
	Error     string `json:"error,omitempty"`
	At        int64  `json:"at_ms"`
	LatencyMs int64  `json:"latency_ms"` // decision to this outcome
	Signed    bool   `json:"signed,omitempty"`
}

// Log records an outcome among the alert's recent ones (the oldest beyond
// defaults.AlertRecent are dropped).
func (b *Box) Log(ctx context.Context, alert string, o Outcome) error {
	data, err := json.Marshal(o)
	if err != nil {
		return err
	}
	if _, err := b.js.Publish(ctx, b.subject("log", alert), data); err != nil {
		return fmt.Errorf("alertbox: log %s: %w", o.ID, err)
	}
	return nil
}

// Recent returns the alert's recent outcomes, oldest first.
func (b *Box) Recent(ctx context.Context, alert string) ([]Outcome, error) {
	var out []Outcome
	err := readSubjects(ctx, b.journal, []string{b.subject("log", alert)}, time.Time{}, 0, func(m *jetstream.RawStreamMsg) error {
		var o Outcome
		if err := json.Unmarshal(m.Data, &o); err == nil {
			out = append(out, o)
		}
		return nil
	})
	return out, err
}

// SetState records an alert's rows firing now (opaque bytes).
func (b *Box) SetState(ctx context.Context, alert string, data []byte) error {
	if _, err := b.state.Put(ctx, alert, data); err != nil {
		return fmt.Errorf("alertbox: state of %s: %w", alert, err)
	}
	return nil
}

// State returns what SetState recorded last for an alert (nil: nothing).
func (b *Box) State(ctx context.Context, alert string) ([]byte, error) {
	e, err := b.state.Get(ctx, alert)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("alertbox: state of %s: %w", alert, err)
	}
	return e.Value(), nil
}

// Notify publishes a delivery's body on a NATS subject (an alert's nats
// action) with its id as Nats-Msg-Id (a JetStream stream on the subject
// then keeps it once), and returns once the server has it.
func (b *Box) Notify(ctx context.Context, subject, id string, body []byte) error {
	h := nats.Header{}
	h.Set(nats.MsgIdHdr, id)
	h.Set(hdrID, id)
	if err := b.nc.PublishMsg(&nats.Msg{Subject: subject, Header: h, Data: body}); err != nil {
		return fmt.Errorf("alertbox: publish to %s: %w", subject, err)
	}
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := b.nc.FlushTimeout(timeout); err != nil {
		return fmt.Errorf("alertbox: publish to %s: %w", subject, err)
	}
	return nil
}
