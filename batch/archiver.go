// Package batch is Braid's batch layer: the archiver copies each stream
// partition's log into the lake exactly once, and the runner recomputes the
// batch views from the lake with DuckDB, publishing versions with a cutoff
// per view.
package batch

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
)

// ArchiverConfig configures the archiver.
type ArchiverConfig struct {
	MaxRows   int           // rows per write at most (default defaults.ArchiveMaxRows)
	MaxBytes  int64         // memory of the buffered rows (rowBytes) that triggers a write (default defaults.ArchiveMaxBytes)
	MaxDelay  time.Duration // longest a record waits in the buffer (default defaults.ArchiveMaxDelay)
	FetchSize int           // events per fetch at most (default defaults.ArchiveFetchSize, at most MaxRows; a fetch takes whole log records)
	FetchWait time.Duration // longest wait of one fetch (default defaults.ArchiveFetchWait, at most MaxDelay)
	IdleLag   time.Duration // idle streams are covered until server time minus this (default defaults.ArchiveIdleLag)
	Consumer  string        // durable consumer name (default defaults.ArchiveConsumer)
	Retry     time.Duration // pause before a failed stream partition restarts (default defaults.ArchiveRetry)
	// Shares shares the stream partitions out among the archivers of a
	// deployment (nil: this archiver runs every partition).
	Shares Shares

	// The upkeep of the lake and the log (upkeep.go), run when the lake
	// given to NewArchiver is a LakeUpkeep and the log a LogTrimmer.
	NoCompact       bool                     // do not compact (archive.compact: false)
	TargetFileBytes int64                    // compacted files' size (default defaults.ArchiveTargetFileBytes)
	LogMaxAge       time.Duration            // nats.max_age: trim the log of archived records this old (0: never)
	Retention       map[string]time.Duration // streams.S.retention by stream (absent or 0: forever)
	UpkeepEvery     time.Duration            // period of the upkeep (default defaults.ArchiveUpkeepEvery)
	RetentionEvery  time.Duration            // period of the retention drops (default defaults.ArchiveRetentionEvery)
	Now             func() time.Time         // the upkeep's clock (default time.Now)
}

func (c *ArchiverConfig) defaults() {
	if c.MaxRows <= 0 {
		c.MaxRows = defaults.ArchiveMaxRows
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = defaults.ArchiveMaxDelay
	}
	if c.FetchSize <= 0 {
		c.FetchSize = defaults.ArchiveFetchSize
	}
	c.FetchSize = min(c.FetchSize, c.MaxRows)
	if c.MaxBytes <= 0 {
		c.MaxBytes = defaults.ArchiveMaxBytes
	}
	if c.FetchWait <= 0 {
		c.FetchWait = defaults.ArchiveFetchWait
	}
	c.FetchWait = min(c.FetchWait, c.MaxDelay)
	if c.IdleLag <= 0 {
		c.IdleLag = defaults.ArchiveIdleLag
	}
	if c.Consumer == "" {
		c.Consumer = defaults.ArchiveConsumer
	}
	if c.Retry <= 0 {
		c.Retry = defaults.ArchiveRetry
	}
	if c.TargetFileBytes <= 0 {
		c.TargetFileBytes = defaults.ArchiveTargetFileBytes
	}
	if c.UpkeepEvery <= 0 {
		c.UpkeepEvery = defaults.ArchiveUpkeepEvery
	}
	if c.RetentionEvery <= 0 {
		c.RetentionEvery = defaults.ArchiveRetentionEvery
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Archiver copies every stream's clean log into the lake, each stream
// partition by a loop of its own (of the partitions the shares give this
// archiver, or all of them). Per partition it writes a contiguous run of
// sequences, commits the partition's lake checkpoint, and only then acks
// the log: a crash anywhere redelivers records that the lake's checkpoint
// then skips, so every record lands exactly once; an archiver that takes a
// partition over from another starts from the lake's checkpoint, and the
// lake refuses the commits of the one that lost it.
type Archiver struct {
	cfg    ArchiverConfig
	log    anyLog
	lk     LakeWriter
	cat    *config.Catalog
	logger *slog.Logger
	up     *upkeeper // nil: no upkeep

	mu     sync.Mutex
	status map[Partition]lake.Checkpoint
	held   map[Partition]bool // the partitions this archiver runs now

	rows, files, bytes *prometheus.CounterVec
	writes             *prometheus.CounterVec
	decodeErrs, lost   *prometheus.CounterVec
	lag                *prometheus.GaugeVec
	seq                *prometheus.GaugeVec
}

// NewArchiver returns an archiver for every stream of cat over an event log
// (C, its consumer type, is inferred: *eventlog.Log gives
// *eventlog.Consumer). reg may be nil. When lk is also a LakeUpkeep and
// log a LogTrimmer (as *lake.Lake and *eventlog.Log are), Run keeps the
// lake and the log up too (see upkeep.go).
func NewArchiver[C LogConsumer](cfg ArchiverConfig, log EventLog[C], lk LakeWriter, cat *config.Catalog, logger *slog.Logger, reg prometheus.Registerer) *Archiver {
	cfg.defaults()
	al, ok := any(log).(anyLog)
	if !ok {
		al = anyConsumers[C]{log}
	}
	if logger == nil {
		logger = slog.Default()
	}
	f := promauto.With(reg)
	logger = logger.With("component", "archiver")
	lu, _ := lk.(LakeUpkeep)
	lt, _ := any(log).(LogTrimmer)
	return &Archiver{cfg: cfg, log: al, lk: lk, cat: cat, logger: logger, up: newUpkeeper(cfg, lk, lu, lt, cat, logger, f),
		status: map[Partition]lake.Checkpoint{}, held: map[Partition]bool{},
		rows:       f.NewCounterVec(prometheus.CounterOpts{Name: "braid_archive_rows_total", Help: "Records written to the lake."}, []string{"stream"}),
		files:      f.NewCounterVec(prometheus.CounterOpts{Name: "braid_archive_files_total", Help: "Parquet files written to the lake."}, []string{"stream"}),
		bytes:      f.NewCounterVec(prometheus.CounterOpts{Name: "braid_archive_bytes_total", Help: "Bytes of Parquet written to the lake."}, []string{"stream"}),
		writes:     f.NewCounterVec(prometheus.CounterOpts{Name: "braid_archive_writes_total", Help: "Buffer writes to the lake by what triggered them: rows, bytes, delay, caught_up, stop, error."}, []string{"stream", "reason"}),
		decodeErrs: f.NewCounterVec(prometheus.CounterOpts{Name: "braid_archive_decode_errors_total", Help: "Log records the archiver could not decode (skipped)."}, []string{"stream"}),
		lost:       f.NewCounterVec(prometheus.CounterOpts{Name: "braid_archive_lost_total", Help: "Log sequences gone from the log (retention) before they were archived."}, []string{"stream"}),
		lag:        f.NewGaugeVec(prometheus.GaugeOpts{Name: "braid_archive_lag_seconds", Help: "Now minus the stream partition's lake coverage (covered_until)."}, []string{"stream", "partition"}),
		seq:        f.NewGaugeVec(prometheus.GaugeOpts{Name: "braid_archive_checkpoint_seq", Help: "Last log sequence of the stream partition committed to the lake."}, []string{"stream", "partition"}),
	}
}

// Status returns the committed lake checkpoint of every stream partition
// this archiver ran.
func (a *Archiver) Status() map[Partition]lake.Checkpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[Partition]lake.Checkpoint, len(a.status))
	for k, v := range a.status {
		out[k] = v
	}
	return out
}

func (a *Archiver) setStatus(p Partition, cp lake.Checkpoint) {
	a.mu.Lock()
	a.status[p] = cp
	a.mu.Unlock()
	part := strconv.Itoa(p.P)
	a.seq.WithLabelValues(p.Stream, part).Set(float64(cp.Seq))
	if cp.CoveredUntil > 0 {
		a.lag.WithLabelValues(p.Stream, part).Set(max(0, float64(time.Now().UnixMilli()-cp.CoveredUntil)/1000))
	}
}

// partitions lists every stream partition of the catalog, in stream order.
func (a *Archiver) partitions() []Partition {
	var out []Partition
	for _, name := range a.cat.StreamOrder {
		for p := range max(1, a.cat.Streams[name].Partitions) {
			out = append(out, Partition{name, p})
		}
	}
	return out
}

// running lists the partitions whose upkeep this archiver does: those it
// runs now (all of them without shares), in stream and partition order.
func (a *Archiver) running() []Partition {
	all := a.partitions()
	if a.cfg.Shares == nil {
		return all
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.DeleteFunc(all, func(p Partition) bool { return !a.held[p] })
}

// Run archives the stream partitions (every one, or those the shares give
// this archiver) until ctx is cancelled, then flushes what is buffered
// and returns nil (or the shares' error). A partition that fails (log
// unavailable, disk error, another archiver moved it) is logged and
// restarted from its lake checkpoint.
func (a *Archiver) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if a.up != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.up.run(ctx, a.running)
		}()
	}
	var err error
	if a.cfg.Shares != nil {
		err = a.cfg.Shares.Run(ctx, a.partitions(), a.work)
	} else {
		for _, p := range a.partitions() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = a.work(ctx, p)
			}()
		}
	}
	wg.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// work archives partition p until ctx ends, starting it again from the
// lake's checkpoint (after cfg.Retry) whenever it fails; it returns nil
// once ctx ended and what it held is flushed.
func (a *Archiver) work(ctx context.Context, p Partition) error {
	s := a.cat.Streams[p.Stream]
	a.mu.Lock()
	a.held[p] = true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.held, p)
		a.mu.Unlock()
	}()
	for {
		err := a.runPart(ctx, s, p.P)
		if ctx.Err() != nil {
			return nil
		}
		a.logger.Error("archive partition failed; restarting", "stream", s.Name, "partition", p.P, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(a.cfg.Retry):
		}
	}
}

// streamState is one stream partition's archiving position and buffer.
type streamState struct {
	s        *logic.Stream
	p        int // the stream partition
	cons     LogConsumer
	cp       lake.Checkpoint // committed
	wcp      lake.Checkpoint // of the last write started (cp when none is in flight)
	inflight *write          // the write in flight, if any
	spare    []lake.Row      // the backing array of the last finished write, for reuse
	next     uint64          // next sequence to buffer
	buf      []lake.Row
	bytes    int64        // rowBytes of buf
	last     eventlog.Msg // last buffered message
	first    time.Time    // when buf got its first row
	backlog  bool         // buf's first record had at least a fetch of records behind it in the log
	pending  *eventlog.Msg
	// events and records taken: their ratio sizes a fetch in records
	events, records uint64
}

// perRecord is about how many events a log record of the stream holds.
func (st *streamState) perRecord() int {
	if st.records == 0 {
		return 1
	}
	return max(1, int(st.events/st.records))
}

// dirty reports whether records past the committed checkpoint were taken
// (buffered or in a write in flight).
func (st *streamState) dirty() bool { return st.next-1 > st.cp.Seq }

// buffered reports whether records past the last write started were taken.
func (st *streamState) buffered() bool { return st.next-1 > st.wcp.Seq }

// write is a buffer being written to the lake, committed and acked by a
// goroutine of its own while the partition goes on taking records: at most
// one per partition, so files and checkpoints are still written in log
// order.
type write struct {
	done  chan struct{} // closed when it finished
	why   string
	rows  []lake.Row
	nrows int
	cp    lake.Checkpoint
	last  eventlog.Msg // acked after the commit when it is record cp.Seq
	files []string
	bytes int64
	err   error
}

// runPart archives stream partition p from the lake's checkpoint until ctx
// ends (then flushes what it holds and returns nil) or it fails.
func (a *Archiver) runPart(ctx context.Context, s *logic.Stream, p int) error {
	if err := a.lk.RecoverPart(s.Name, p); err != nil {
		return err
	}
	cp, err := a.lk.PartCheckpoint(s.Name, p)
	if err != nil {
		return err
	}
	a.setStatus(Partition{s.Name, p}, cp)
	cons, err := a.log.Consumer(ctx, s.Name, p, a.cfg.Consumer, eventlog.Start{Seq: cp.Seq + 1}, 2*a.cfg.MaxRows+a.cfg.FetchSize)
	if err != nil {
		return err
	}
	defer cons.Close() // after the last flush: what is buffered goes back to the server
	a.logger.Info("archiving stream partition", "stream", s.Name, "partition", p, "from_seq", cp.Seq+1, "covered_until", cp.CoveredUntil)
	st := &streamState{s: s, p: p, cons: cons, cp: cp, wcp: cp, next: cp.Seq + 1}
	defer func() {
		// Never leave a write behind: a restart recovers the lake first.
		if st.inflight != nil {
			<-st.inflight.done
		}
	}()
	for {
		if err := a.reap(st, false); err != nil {
			return err
		}
		wait := a.cfg.FetchWait
		if st.buffered() {
			wait = min(wait, max(time.Until(st.first.Add(a.cfg.MaxDelay)), 10*time.Millisecond))
		}
		// FetchSize and MaxRows count events; a fetch counts records.
		want := max(1, min(a.cfg.FetchSize, a.cfg.MaxRows-len(st.buf))/st.perRecord())
		msgs, ferr := cons.Fetch(ctx, want, wait)
		// Caught up: nothing followed this fetch's last record, neither at
		// the server nor buffered here (Pending counts both), or a fetch
		// found nothing at all while records are buffered. The server
		// confirms below (drained).
		caughtUp := len(msgs) > 0 && msgs[len(msgs)-1].Pending == 0 || len(msgs) == 0 && st.buffered()
		if err := a.take(ctx, st, msgs); err != nil {
			return err
		}
		if ctx.Err() != nil {
			// Graceful stop: what is buffered is contiguous; write it out.
			bg := context.WithoutCancel(ctx)
			if err := a.flush(bg, st, "stop"); err != nil {
				return err
			}
			return a.reap(st, true)
		}
		if ferr != nil {
			ferr2 := a.flush(ctx, st, "error")
			if ferr2 == nil {
				ferr2 = a.reap(st, true)
			}
			if ferr2 != nil {
				return errors.Join(ferr, ferr2)
			}
			return ferr
		}
		why := a.full(st)
		if why == "" && caughtUp && st.backlog && a.drained(ctx, st) {
			why = "caught_up"
		}
		if why != "" {
			if err := a.flush(ctx, st, why); err != nil {
				return err
			}
		}
		if len(msgs) == 0 && !st.buffered() {
			// Nothing new: let the write in flight finish, then mark the
			// partition covered.
			if err := a.reap(st, true); err != nil {
				return err
			}
		}
		if len(msgs) == 0 && !st.dirty() {
			if err := a.idle(ctx, st); err != nil && ctx.Err() == nil {
				return err
			}
		}
	}
}

// full says why st's buffer must be written now ("" when it need not):
// it holds MaxRows rows or MaxBytes of memory, or its first record waited
// MaxDelay. (runPart adds "caught_up": the buffer was filled from a
// backlog that is now drained, so waiting longer would only add records
// that arrive after it while the lake lags behind by the whole buffer.)
func (a *Archiver) full(st *streamState) string {
	switch {
	case !st.buffered():
		return ""
	case len(st.buf) >= a.cfg.MaxRows:
		return "rows"
	case st.bytes >= a.cfg.MaxBytes:
		return "bytes"
	case time.Since(st.first) >= a.cfg.MaxDelay:
		return "delay"
	}
	return ""
}

// rowBytes is about the memory a buffered row holds: the row, its values
// and their strings (the decoded event owns them; nothing points into the
// log record).
func rowBytes(r *lake.Row) int64 {
	n := int64(unsafe.Sizeof(*r)) + int64(len(r.Event.ID)) + int64(cap(r.Event.Values))*int64(unsafe.Sizeof(logic.Value{}))
	for i := range r.Event.Values {
		n += int64(len(r.Event.Values[i].S))
	}
	return n
}

// take buffers the contiguous prefix of msgs starting at st.next. Records
// already in the lake are skipped; on a gap the rest is nak'ed and fetched
// again (or, when the log no longer holds the missing records, skipped).
func (a *Archiver) take(ctx context.Context, st *streamState, msgs []eventlog.Msg) error {
	// Redeliveries (ack wait expired, naks) come in queue order, not log
	// order: without sorting, a record ahead of st.next in the batch would
	// nak st.next itself, again and again.
	slices.SortFunc(msgs, func(x, y eventlog.Msg) int { return cmp.Compare(x.Seq, y.Seq) })
	for i, m := range msgs {
		if m.Seq < st.next {
			// Redelivered and already buffered or committed.
			if !st.dirty() && m.Seq <= st.cp.Seq {
				mm := m
				st.pending = &mm
			}
			continue
		}
		if m.Seq > st.next {
			if err := a.gap(ctx, st, m.Seq); err != nil {
				return err
			}
			if m.Seq > st.next {
				for _, rest := range msgs[i:] {
					_ = st.cons.Nak(rest, 50*time.Millisecond)
				}
				return nil
			}
		}
		if !st.buffered() {
			st.first, st.backlog = time.Now(), a.isBacklog(st, m)
		}
		err := eventlog.Unpack(m.Data, func(i int, _, rec []byte) error {
			ev, err := st.s.Decode(rec)
			if err != nil {
				// Validated at ingest: a bug. The event is skipped but the
				// position moves on, so the checkpoint stays contiguous.
				a.decodeErrs.WithLabelValues(st.s.Name).Inc()
				a.logger.Error("skipping undecodable event", "stream", st.s.Name, "partition", st.p, "seq", m.Seq, "index", i, "err", err)
				return nil
			}
			st.buf = append(st.buf, lake.Row{Part: st.p, Seq: m.Seq, Index: i, Arrival: m.Arrival, Event: ev})
			st.bytes += rowBytes(&st.buf[len(st.buf)-1])
			return nil
		})
		if err != nil {
			a.decodeErrs.WithLabelValues(st.s.Name).Inc()
			a.logger.Error("skipping malformed record", "stream", st.s.Name, "partition", st.p, "seq", m.Seq, "err", err)
		}
		st.events += uint64(eventlog.Count(m.Data))
		st.records++
		st.next = m.Seq + 1
		st.last = m
		st.pending = nil
	}
	if st.pending != nil && !st.dirty() {
		// Only redeliveries of committed records: ack them so the consumer's
		// backlog reads empty.
		if err := st.cons.Ack(ctx, *st.pending); err != nil && ctx.Err() == nil {
			a.logger.Warn("ack of redelivered records failed", "stream", st.s.Name, "partition", st.p, "err", err)
		}
		st.pending = nil
	}
	return nil
}

// drained asks the server whether the consumer has delivered every record
// of the partition's log (the pending count in delivered records is an
// estimate).
func (a *Archiver) drained(ctx context.Context, st *streamState) bool {
	info, err := st.cons.Info(ctx)
	return err == nil && info.Pending == 0
}

// isBacklog reports whether at least a fetch of records followed m in the
// partition's log when it was delivered: a buffer starting with it is
// catching up.
func (a *Archiver) isBacklog(st *streamState, m eventlog.Msg) bool {
	return m.Pending*uint64(st.perRecord()) >= uint64(a.cfg.FetchSize)
}

// gap checks whether the partition's log still holds sequence st.next;
// when retention removed it, the archiver moves on to the log's first
// sequence. When the lake's checkpoint of the partition is beyond what
// this archiver wrote, another archiver took the partition and moved it
// (its records up to there acknowledged, never delivered again): the
// partition starts again from the lake.
func (a *Archiver) gap(ctx context.Context, st *streamState, got uint64) error {
	cp, err := a.lk.PartCheckpoint(st.s.Name, st.p)
	if err != nil {
		return err
	}
	if cp.Seq > st.wcp.Seq {
		return fmt.Errorf("batch: partition %d of %s: the lake's checkpoint moved to %d, past this archiver's %d (another archiver ran it)", st.p, st.s.Name, cp.Seq, st.wcp.Seq)
	}
	info, err := a.log.Info(ctx, st.s.Name, st.p)
	if err != nil {
		return err
	}
	if info.FirstSeq > st.next {
		a.logger.Warn("records left the log before they were archived", "stream", st.s.Name, "partition", st.p, "from", st.next, "to", info.FirstSeq-1)
		a.lost.WithLabelValues(st.s.Name).Add(float64(info.FirstSeq - st.next))
		st.next = min(info.FirstSeq, got)
	}
	return nil
}

// flush hands the buffer to a write of its own (after the one in flight,
// if any, finished): the write puts it into the lake, commits the
// checkpoint, then acks; why is what triggered it (a label of
// braid_archive_writes_total). Its outcome is taken by reap.
func (a *Archiver) flush(ctx context.Context, st *streamState, why string) error {
	if !st.buffered() {
		return nil
	}
	if err := a.reap(st, true); err != nil {
		return err
	}
	cp := lake.Checkpoint{Seq: st.next - 1, Arrival: st.wcp.Arrival, CoveredUntil: st.wcp.CoveredUntil}
	if st.last.Seq == cp.Seq {
		cp.Arrival, cp.CoveredUntil = st.last.Arrival, max(cp.CoveredUntil, st.last.Arrival)
	}
	w := &write{done: make(chan struct{}), why: why, rows: st.buf, nrows: len(st.buf), cp: cp, last: st.last}
	st.inflight, st.wcp = w, cp
	st.buf, st.spare, st.bytes = st.spare[:0], nil, 0
	go func() {
		defer close(w.done)
		// The rows are dropped as they are written, so their events can be
		// collected while the next buffer fills.
		if w.files, w.bytes, w.err = a.lk.WriteReleasing(st.s, w.rows); w.err != nil {
			return
		}
		if w.err = a.lk.CommitPart(st.s.Name, st.p, cp); w.err != nil {
			return
		}
		if w.last.Seq != cp.Seq {
			return
		}
		if err := st.cons.Ack(ctx, w.last); err != nil {
			// The lake is the truth: a redelivery is skipped by the checkpoint.
			a.logger.Warn("ack after commit failed", "stream", st.s.Name, "partition", st.p, "seq", w.last.Seq, "err", err)
		}
	}()
	return nil
}

// reap takes the outcome of the write in flight when it finished (or, with
// block, once it finishes): the committed checkpoint, or its error.
func (a *Archiver) reap(st *streamState, block bool) error {
	w := st.inflight
	if w == nil {
		return nil
	}
	if block {
		<-w.done
	} else {
		select {
		case <-w.done:
		default:
			return nil
		}
	}
	st.inflight = nil
	if w.err != nil {
		return w.err
	}
	st.cp = w.cp
	// The written rows were cleared by the write; the array is reused.
	st.spare = w.rows[:0]
	a.writes.WithLabelValues(st.s.Name, w.why).Inc()
	a.setStatus(Partition{st.s.Name, st.p}, w.cp)
	a.rows.WithLabelValues(st.s.Name).Add(float64(w.nrows))
	a.files.WithLabelValues(st.s.Name).Add(float64(len(w.files)))
	a.bytes.WithLabelValues(st.s.Name).Add(float64(w.bytes))
	a.logger.Debug("archived", "stream", st.s.Name, "partition", st.p, "rows", w.nrows, "files", len(w.files), "bytes", w.bytes, "seq", w.cp.Seq)
	return nil
}

const idleStep = 500 // ms

// idle advances the coverage of a partition with nothing pending to the
// server's clock (minus IdleLag), never backwards, so an idle partition
// does not hold the batch cutoff back.
func (a *Archiver) idle(ctx context.Context, st *streamState) error {
	info, err := st.cons.Info(ctx)
	if err != nil {
		return err
	}
	if info.Pending != 0 || info.AckPending != 0 || info.ServerTime.IsZero() || info.AckFloor < st.cp.Seq {
		return nil
	}
	cu := info.ServerTime.UnixMilli() - a.cfg.IdleLag.Milliseconds()
	// Never backwards; at most one checkpoint write per idleStep.
	if cu <= st.cp.CoveredUntil || (st.cp.CoveredUntil > 0 && cu-st.cp.CoveredUntil < idleStep) {
		return nil
	}
	cp := st.cp
	cp.CoveredUntil = cu
	if err := a.lk.CommitPart(st.s.Name, st.p, cp); err != nil {
		return err
	}
	st.cp, st.wcp = cp, cp
	a.setStatus(Partition{st.s.Name, st.p}, cp)
	return nil
}

func (a *Archiver) String() string {
	return fmt.Sprintf("archiver(%d streams)", len(a.cat.StreamOrder))
}
