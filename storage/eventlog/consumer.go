package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
//
// Delivery is continuous: the first Fetch starts a pull subscription that
// keeps up to the prefetch size of records buffered while the owner folds
// and commits the previous ones, so fetching and committing overlap. Close
// stops it and hands the buffered records back to the server (Nak), so the
// next consumer of the same durable gets them at once, not after the ack
// wait.
type Consumer struct {
	c        jetstream.Consumer
	stream   string
	last     jetstream.Msg
	prefetch int

	mu   sync.Mutex
	cc   jetstream.ConsumeContext // nil until the first Fetch
	ch   chan jetstream.Msg       // delivered, not yet fetched
	done chan struct{}            // closed by Close
	err  error                    // a terminal consume error
}

// prefetchFor bounds the records a consumer keeps buffered: half its
// max-ack-pending (the rest is what the owner holds unacknowledged), within
// 100..5000.
func prefetchFor(maxAckPending int) int { return min(max(maxAckPending/2, 100), 5000) }

// prefetchBytes bounds the bytes of the records a consumer keeps buffered
// (a record packs many events).
const prefetchBytes = 8 << 20

// Msg is one delivered record: a packed run of events (Unpack).
type Msg struct {
	Seq     uint64 // stream sequence: the record's position in the log
	Arrival int64  // when JetStream stored it, unix ms
	Data    []byte
	Pending uint64 // records after this one not yet fetched (at the server or buffered here)
	msg     jetstream.Msg
}

// Consumer opens the durable consumer name on partition p of a stream. It is reused when
// it would deliver start.Seq or earlier (the owner skips what it already
// holds; unacknowledged records come again after the ack wait); it is
// (re)created to deliver from start when it does not exist, when start is by
// time, or when it has acknowledged past start.Seq-1 (the owner lost state).
func (l *Log) Consumer(ctx context.Context, stream string, p int, name string, start Start, maxAckPending int) (*Consumer, error) {
	s, err := l.js.Stream(ctx, l.StreamName(stream, p))
	if err != nil {
		return nil, fmt.Errorf("eventlog: stream %s: %w", stream, err)
	}
	if c, err := s.Consumer(ctx, name); err == nil {
		info, err := c.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("eventlog: consumer %s info: %w", name, err)
		}
		// A consumer made before partitions filtered on the stream's
		// subject: it would miss the records published since.
		unfiltered := info.Config.FilterSubject == "" && len(info.Config.FilterSubjects) == 0
		if unfiltered && start.Seq > 0 && info.AckFloor.Stream+1 <= start.Seq {
			return &Consumer{c: c, stream: stream, prefetch: prefetchFor(maxAckPending)}, nil
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
	return &Consumer{c: c, stream: stream, prefetch: prefetchFor(maxAckPending)}, nil
}

// Fetch returns up to max records, waiting at most wait for the first;
// the rest are the ones already buffered. An empty result with a nil error
// means nothing arrived in time. Not safe for concurrent use.
func (c *Consumer) Fetch(ctx context.Context, max int, wait time.Duration) ([]Msg, error) {
	if err := c.start(); err != nil {
		return nil, err
	}
	out := make([]Msg, 0, min(max, c.prefetch))
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for len(out) < max {
		var m jetstream.Msg
		if len(out) == 0 {
			select {
			case m = <-c.ch:
			case <-timer.C:
				return out, c.failed(ctx)
			case <-ctx.Done():
				return out, ctx.Err()
			case <-c.done:
				return out, fmt.Errorf("eventlog: fetch %s: consumer closed", c.stream)
			}
		} else {
			select {
			case m = <-c.ch:
			default:
				return out, nil
			}
		}
		md, err := m.Metadata()
		if err != nil {
			return out, fmt.Errorf("eventlog: metadata: %w", err)
		}
		// Pending counts what the server still holds and what this
		// consumer has buffered but not handed out.
		out = append(out, Msg{Seq: md.Sequence.Stream, Arrival: md.Timestamp.UnixMilli(), Data: m.Data(), Pending: md.NumPending + uint64(len(c.ch)), msg: m})
	}
	return out, nil
}

// start begins the continuous pull on first use.
func (c *Consumer) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc != nil {
		return nil
	}
	if c.done == nil {
		c.done = make(chan struct{})
	}
	select {
	case <-c.done:
		return fmt.Errorf("eventlog: fetch %s: consumer closed", c.stream)
	default:
	}
	c.ch = make(chan jetstream.Msg, c.prefetch)
	done := c.done
	cc, err := c.c.Consume(func(m jetstream.Msg) {
		select {
		case c.ch <- m:
		case <-done:
			_ = m.Nak()
		}
	}, jetstream.PullMaxMessagesWithBytesLimit(c.prefetch, prefetchBytes), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
		}
	}))
	if err != nil {
		return fmt.Errorf("eventlog: consume %s: %w", c.stream, err)
	}
	c.cc = cc
	return nil
}

// failed returns the terminal consume error, if any (the consumer was
// deleted under us: the owner reopens it), else ctx's error.
func (c *Consumer) failed(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return fmt.Errorf("eventlog: fetch %s: %w", c.stream, c.err)
	}
	return ctx.Err()
}

// Close stops delivery and hands the buffered, unfetched records back to
// the server. Idempotent.
func (c *Consumer) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
	}
	select {
	case <-c.done:
		return
	default:
	}
	close(c.done)
	if c.cc == nil {
		return
	}
	// Drain: the subscription ends and the records the library still
	// buffers reach the handler, which (done being closed) Naks them.
	c.cc.Drain()
	select {
	case <-c.cc.Closed():
	case <-time.After(2 * time.Second):
		c.cc.Stop()
	}
	for {
		select {
		case m := <-c.ch:
			_ = m.Nak()
		default:
			return
		}
	}
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

// AckNoWait acknowledges m (and every earlier record) without waiting for
// the server's confirmation: for owners whose own store already holds the
// position, where a lost ack only costs a redelivery they refuse.
func (c *Consumer) AckNoWait(m Msg) error {
	if m.msg == nil {
		return nil
	}
	if err := m.msg.Ack(); err != nil {
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
	Delivered  uint64 // highest stream sequence delivered (to this or an earlier subscriber)
	ServerTime time.Time
}

// Info returns the consumer's backlog.
func (c *Consumer) Info(ctx context.Context) (Info, error) {
	info, err := c.c.Info(ctx)
	if err != nil {
		return Info{}, fmt.Errorf("eventlog: consumer info: %w", err)
	}
	return Info{Pending: info.NumPending, AckPending: info.NumAckPending, AckFloor: info.AckFloor.Stream, Delivered: info.Delivered.Stream, ServerTime: info.TimeStamp}, nil
}

// DeleteConsumer removes a durable consumer of a stream (one that finished
// its work, e.g. a view's rebuild); a consumer that does not exist is not
// an error.
func (l *Log) DeleteConsumer(ctx context.Context, stream string, p int, name string) error {
	s, err := l.js.Stream(ctx, l.StreamName(stream, p))
	if err != nil {
		return fmt.Errorf("eventlog: stream %s: %w", stream, err)
	}
	if err := s.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("eventlog: delete consumer %s: %w", name, err)
	}
	return nil
}
