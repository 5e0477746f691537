package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Start says where a consumer begins when it is created or realigned.
type Start struct {
	Seq  uint64    // first sequence to deliver (0: see Time)
	Time time.Time // first arrival time to deliver when Seq is 0 (zero: from the beginning)
}

// Consumer is a durable pull consumer with ack-all semantics: acking a
// message acks every earlier one. Its owner keeps the real position in its
// own store and passes it at Open; the consumer is realigned to it, so the
// store (committed together with the state) always decides.
type Consumer struct {
	c      jetstream.Consumer
	stream string
	last   jetstream.Msg
}

// Msg is one delivered record.
type Msg struct {
	Seq     uint64 // stream sequence: the record's position in the log
	Arrival int64  // when JetStream stored it, unix ms
	Data    []byte
	Pending uint64 // records after this one not yet delivered
	msg     jetstream.Msg
}

// Consumer opens the durable consumer name on a stream. It is reused when
// it would deliver start.Seq or earlier (the owner skips what it already
// holds; unacknowledged records come again after the ack wait); it is
// (re)created to deliver from start when it does not exist, when start is by
// time, or when it has acknowledged past start.Seq-1 (the owner lost state).
func (l *Log) Consumer(ctx context.Context, stream, name string, start Start, maxAckPending int) (*Consumer, error) {
	s, err := l.js.Stream(ctx, l.StreamName(stream))
	if err != nil {
		return nil, fmt.Errorf("eventlog: stream %s: %w", stream, err)
	}
	if c, err := s.Consumer(ctx, name); err == nil {
		info, err := c.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("eventlog: consumer %s info: %w", name, err)
		}
		if start.Seq > 0 && info.AckFloor.Stream+1 <= start.Seq {
			return &Consumer{c: c, stream: stream}, nil
		}
		if err := s.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, fmt.Errorf("eventlog: realign consumer %s: %w", name, err)
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("eventlog: consumer %s: %w", name, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       5 * time.Second,
		MaxAckPending: maxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		FilterSubject: l.Subject(stream),
	}
	switch {
	case start.Seq > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start.Seq
	case !start.Time.IsZero():
		t := start.Time
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	c, err := s.CreateOrUpdateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("eventlog: create consumer %s: %w", name, err)
	}
	return &Consumer{c: c, stream: stream}, nil
}

// Fetch returns up to max records, waiting at most wait for the first.
// An empty result with a nil error means nothing arrived in time.
func (c *Consumer) Fetch(ctx context.Context, max int, wait time.Duration) ([]Msg, error) {
	batch, err := c.c.Fetch(max, jetstream.FetchMaxWait(wait))
	if err != nil {
		return nil, fmt.Errorf("eventlog: fetch %s: %w", c.stream, err)
	}
	out := make([]Msg, 0, max)
	for m := range batch.Messages() {
		md, err := m.Metadata()
		if err != nil {
			return out, fmt.Errorf("eventlog: metadata: %w", err)
		}
		out = append(out, Msg{Seq: md.Sequence.Stream, Arrival: md.Timestamp.UnixMilli(), Data: m.Data(), Pending: md.NumPending, msg: m})
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoHeartbeat) {
		return out, fmt.Errorf("eventlog: fetch %s: %w", c.stream, err)
	}
	return out, ctx.Err()
}

// Ack acknowledges m and, by the ack-all policy, every earlier record. It
// waits for the server's confirmation.
func (c *Consumer) Ack(ctx context.Context, m Msg) error {
	if m.msg == nil {
		return nil
	}
	if err := m.msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("eventlog: ack %s %d: %w", c.stream, m.Seq, err)
	}
	return nil
}

// Nak asks for m to be delivered again after delay.
func (c *Consumer) Nak(m Msg, delay time.Duration) error {
	if m.msg == nil {
		return nil
	}
	return m.msg.NakWithDelay(delay)
}

// Info is a consumer's view of its backlog.
type Info struct {
	Pending    uint64 // records not yet delivered
	AckPending int    // delivered, not yet acknowledged
	AckFloor   uint64 // highest stream sequence acknowledged with every earlier one
	ServerTime time.Time
}

// Info returns the consumer's backlog.
func (c *Consumer) Info(ctx context.Context) (Info, error) {
	info, err := c.c.Info(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("eventlog: consumer info: %w", err)
	}
	return Info{Pending: info.NumPending, AckPending: info.NumAckPending, AckFloor: info.AckFloor.Stream, ServerTime: info.TimeStamp}, nil
}
