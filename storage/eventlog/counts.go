package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Events in the log, counted exactly and cheaply.
//
// Every log record carries, in two headers, a running count: the number
// of events in the records from a first one (Braid-Events-From, a
// sequence) up to and including itself (Braid-Events-Total). The writers
// keep it as they keep the ids (writer.go): the compare-and-set on the
// log's last sequence means a writer always knows the count at the record
// it appends after, and it adds the events of the records other writers
// appended when it learns them. So the count of the events the log holds
// is read from two records, the first and the last retained:
//
//	total(last) - total(first) + events(first)
//
// whatever expired before the first (nats.max_age). A count begins at the
// first record a writer of this version appends to an empty log, or after
// a record without a count (written by an earlier version); the records
// before it are counted once by reading them (per process, in the
// background, kept until the first retained record changes).
const (
	hdrEventsFrom  = "Braid-Events-From"
	hdrEventsTotal = "Braid-Events-Total"
)

// eventCount is a record's place in a running count: the events in the
// records from sequence from up to it. from == 0: no count.
type eventCount struct {
	from, total uint64
}

// next is the count of a record of n events appended at seq after a
// record with count c (a new count begins at seq when c has none).
func (c eventCount) next(seq uint64, n int) eventCount {
	if c.from == 0 {
		return eventCount{from: seq, total: uint64(n)}
	}
	return eventCount{from: c.from, total: c.total + uint64(n)}
}

// learn is the count after a record appended by another writer at seq,
// holding n events: its own when it carries one, else c's plus n (before
// any count began: still none).
func (c eventCount) learn(h nats.Header, seq uint64, n int) eventCount {
	if rc, ok := countOf(h); ok {
		return rc
	}
	if c.from == 0 || seq < c.from {
		return c
	}
	return eventCount{from: c.from, total: c.total + uint64(n)}
}

func (c eventCount) setHeader(h nats.Header) {
	h.Set(hdrEventsFrom, strconv.FormatUint(c.from, 10))
	h.Set(hdrEventsTotal, strconv.FormatUint(c.total, 10))
}

// countOf reads a record's count from its headers (ok false: none).
func countOf(h nats.Header) (eventCount, bool) {
	if h == nil {
		return eventCount{}, false
	}
	from, err1 := strconv.ParseUint(h.Get(hdrEventsFrom), 10, 64)
	total, err2 := strconv.ParseUint(h.Get(hdrEventsTotal), 10, 64)
	if err1 != nil || err2 != nil || from == 0 {
		return eventCount{}, false
	}
	return eventCount{from: from, total: total}, true
}

// ErrCounting says the events of log records written before counts
// existed are still being counted (EventCount answers once they are).
var ErrCounting = errors.New("eventlog: counting the events of log records written before event counts; ask again shortly")

// countWait is how long EventCount waits for a count of earlier records
// before answering ErrCounting (the count goes on in the background).
const countWait = 2 * time.Second

// counts caches, per stream, the last count answered and the count of
// records read one by one.
type counts struct {
	mu    sync.Mutex
	last  map[string]countedLog
	scans map[string]*recordScan
}

// scanBudget bounds one reading of records to count them.
const scanBudget = 30 * time.Minute

// countedLog is the count of events in the records [first, last].
type countedLog struct {
	first, last, n uint64
}

// recordScan sums the events of the records [first, end], stopping at the
// first record whose count began at stopFrom (0: never).
type recordScan struct {
	first, end, stopFrom uint64
	done                 chan struct{}
	sum                  uint64     // events of the records before the stop (or of all)
	stop                 eventCount // the stop record's count (stopped)
	stopN                uint64     // its events
	stopped              bool
	err                  error
}

// EventCount is the number of events the stream's clean log holds: every
// event stored once (the writer drops a repeated id), in the records still
// retained (nats.max_age removes old ones). Every process answers the same
// from the same log. It reads the stream's state and two records; a log
// holding records written before event counts existed has those read once
// per process, meanwhile the answer may be ErrCounting.
func (l *Log) EventCount(ctx context.Context, stream string) (uint64, error) {
	var total uint64
	for p := range l.Partitions(stream) {
		n, err := l.partitionCount(ctx, l.StreamName(stream, p))
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// partitionCount is EventCount of one partition's JetStream stream.
func (l *Log) partitionCount(ctx context.Context, name string) (uint64, error) {
	s, err := l.js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("eventlog: %s: %w", name, err)
	}
	for attempt := 0; ; attempt++ {
		n, err := l.eventCount(ctx, s, name)
		if errors.Is(err, jetstream.ErrMsgNotFound) && attempt < 5 {
			continue // a record left the log meanwhile: read its state again
		}
		return n, err
	}
}

func (l *Log) eventCount(ctx context.Context, s jetstream.Stream, stream string) (uint64, error) {
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("eventlog: %s info: %w", stream, err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 || last == 0 {
		return 0, nil
	}
	c := &l.counts
	c.mu.Lock()
	if lc, ok := c.last[stream]; ok && lc.first == first && lc.last == last {
		c.mu.Unlock()
		return lc.n, nil
	}
	c.mu.Unlock()
	lm, err := s.GetMsg(ctx, last)
	if err != nil {
		return 0, fmt.Errorf("eventlog: %s record %d: %w", stream, last, err)
	}
	lc, counted := countOf(lm.Header)
	var n uint64
	switch {
	case !counted:
		// The last record predates counts: read every record.
		sc, err := l.scan(ctx, stream, first, last, 0)
		if err != nil {
			return 0, err
		}
		n = sc.sum
	case lc.from > first:
		// Records before the count began: read those.
		sc, err := l.scan(ctx, stream, first, lc.from-1, 0)
		if err != nil {
			return 0, err
		}
		n = sc.sum + lc.total
	default:
		fm, err := s.GetMsg(ctx, first)
		if err != nil {
			return 0, fmt.Errorf("eventlog: %s record %d: %w", stream, first, err)
		}
		if fc, ok := countOf(fm.Header); ok && fc.from == lc.from {
			n = lc.total - fc.total + uint64(Count(fm.Data))
			break
		}
		// The first retained record has no count of its own (an earlier
		// version's writer appended it during the count): read up to the
		// first that has one.
		sc, err := l.scan(ctx, stream, first, last, lc.from)
		if err != nil {
			return 0, err
		}
		n = sc.sum
		if sc.stopped {
			n += lc.total - sc.stop.total + sc.stopN
		}
	}
	c.mu.Lock()
	if c.last == nil {
		c.last = map[string]countedLog{}
	}
	c.last[stream] = countedLog{first: first, last: last, n: n}
	c.mu.Unlock()
	return n, nil
}

// scan returns the (cached) sum of the events of the records [first, end]
// (see recordScan), reading them in the background; ErrCounting when that
// takes longer than countWait.
func (l *Log) scan(ctx context.Context, stream string, first, end, stopFrom uint64) (*recordScan, error) {
	c := &l.counts
	c.mu.Lock()
	sc := c.scans[stream]
	if sc == nil || sc.first != first || sc.end != end || sc.stopFrom != stopFrom {
		sc = &recordScan{first: first, end: end, stopFrom: stopFrom, done: make(chan struct{})}
		if c.scans == nil {
			c.scans = map[string]*recordScan{}
		}
		c.scans[stream] = sc
		go func() {
			sctx, cancel := context.WithTimeout(context.Background(), scanBudget)
			defer cancel()
			sc.err = l.readCounts(sctx, stream, sc)
			if sc.err != nil {
				c.mu.Lock()
				if c.scans[stream] == sc {
					delete(c.scans, stream) // the next call tries again
				}
				c.mu.Unlock()
			}
			close(sc.done)
		}()
	}
	c.mu.Unlock()
	t := time.NewTimer(countWait)
	defer t.Stop()
	select {
	case <-sc.done:
		if sc.err != nil {
			return nil, sc.err
		}
		return sc, nil
	case <-t.C:
		return nil, ErrCounting
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrCounting, ctx.Err())
	}
}

// readCounts reads the records of a scan in order and sums their events
// (stream: a partition's JetStream stream).
func (l *Log) readCounts(ctx context.Context, stream string, sc *recordScan) error {
	s, err := l.js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("eventlog: %s: %w", stream, err)
	}
	err = eachRecord(ctx, s, "", sc.first, sc.end, false, func(r logRecord) error {
		n := uint64(Count(r.data))
		if sc.stopFrom != 0 {
			if mc, ok := countOf(r.header); ok && mc.from == sc.stopFrom {
				sc.stop, sc.stopN, sc.stopped = mc, n, true
				return errStop
			}
		}
		sc.sum += n
		return nil
	})
	if err != nil {
		return fmt.Errorf("eventlog: count %s: %w", stream, err)
	}
	return nil
}
