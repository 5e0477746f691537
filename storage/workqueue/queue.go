// Package workqueue hands the work units of batch runs to any number of
// worker processes over NATS JetStream, and brings their results back to
// the run that asked for them; it also holds the run lock those processes
// share (lock.go).
//
// Streams (created or updated idempotently at Open):
//
//	<ns>_batch_units    work-queue retention, subjects <ns>.batch.units.<run>:
//	                    one message per task, deduplicated by Nats-Msg-Id run/task
//	<ns>_batch_results  limits retention, max age a day, subjects
//	                    <ns>.batch.results.<run>: one message per answer
//
// Every worker reads the units stream through one durable pull consumer,
// one message at a time per worker goroutine: while a task is being
// handled the worker tells the server every AckWait/3 that it is still in
// progress; it publishes the task's result and then acknowledges it, so a
// worker that dies before the acknowledgement loses nothing (the server
// hands the task to another worker after AckWait). A task is handed out at
// most MaxDeliver times; the worker whose last attempt fails publishes an
// error result, and a task whose last holder died gets one from the
// submitter (on the server's max-deliveries advisory). Task payloads and
// results are opaque bytes.
package workqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/logic/defaults"
)

// Options configures the queue.
type Options struct {
	Namespace     string        // prefix of stream names and subjects
	Replicas      int           // JetStream replicas (0: defaults.NATSReplicas)
	AckWait       time.Duration // how long a task stays with a worker that stops answering (0: defaults.BatchUnitAckWait)
	MaxDeliver    int           // times a task is handed out (0: defaults.BatchUnitMaxDeliver)
	Dedup         time.Duration // message-id dedup window of the units stream (0: defaults.BatchUnitDedup)
	ResultsMaxAge time.Duration // results are kept this long (0: defaults.BatchResultsMaxAge)
	Progress      time.Duration // how often a submitter without results logs what it waits for (0: defaults.BatchUnitProgress)
	Memory        bool          // memory storage (tests only)
	Logger        *slog.Logger  // nil: slog.Default()
}

// Message headers.
const (
	hdrRun   = "Braid-Run"
	hdrTask  = "Braid-Task"
	hdrError = "Braid-Error"
)

// consumerName is the durable consumer every worker shares.
const consumerName = "workers"

// fetchWait is the longest wait of one worker's fetch.
const fetchWait = 5 * time.Second

// Task is one unit of work: ID is unique within its run.
type Task struct {
	Run     string
	ID      string
	Data    []byte
	Attempt int // 1 for the first delivery (set for handlers)
}

// Result is a task's answer: the handler's bytes, or Err when the task
// failed its last attempt.
type Result struct {
	Run  string
	ID   string
	Data []byte
	Err  string
}

// Handler handles a task where a worker runs: it returns the task's
// result, or an error when this attempt failed (the task is handed out
// again, up to MaxDeliver times; the last failure becomes an error
// result). It must honour ctx.
type Handler func(ctx context.Context, t Task) ([]byte, error)

// Queue is the batch work queue. Safe for concurrent use.
type Queue struct {
	js      jetstream.JetStream
	opts    Options
	units   jetstream.Stream
	results jetstream.Stream
	logger  *slog.Logger
}

// Open ensures the queue's streams and the workers' consumer exist.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Queue, error) {
	if opts.Replicas < 1 {
		opts.Replicas = defaults.NATSReplicas
	}
	if opts.AckWait <= 0 {
		opts.AckWait = defaults.BatchUnitAckWait
	}
	if opts.MaxDeliver <= 0 {
		opts.MaxDeliver = defaults.BatchUnitMaxDeliver
	}
	if opts.Dedup <= 0 {
		opts.Dedup = defaults.BatchUnitDedup
	}
	if opts.ResultsMaxAge <= 0 {
		opts.ResultsMaxAge = defaults.BatchResultsMaxAge
	}
	if opts.Progress <= 0 {
		opts.Progress = defaults.BatchUnitProgress
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	q := &Queue{js: js, opts: opts, logger: opts.Logger.With("component", "workqueue")}
	storage := jetstream.FileStorage
	if opts.Memory {
		storage = jetstream.MemoryStorage
	}
	var err error
	q.units, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: q.unitsName(), Subjects: []string{opts.Namespace + ".batch.units.>"}, Retention: jetstream.WorkQueuePolicy,
		Storage: storage, Replicas: opts.Replicas, Duplicates: opts.Dedup, MaxMsgs: -1, MaxBytes: -1,
	})
	if err != nil {
		return nil, fmt.Errorf("workqueue: create stream %s: %w", q.unitsName(), err)
	}
	q.results, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: q.resultsName(), Subjects: []string{opts.Namespace + ".batch.results.>"}, Retention: jetstream.LimitsPolicy,
		Storage: storage, Replicas: opts.Replicas, MaxAge: opts.ResultsMaxAge, MaxMsgs: -1, MaxBytes: -1, Discard: jetstream.DiscardOld,
	})
	if err != nil {
		return nil, fmt.Errorf("workqueue: create stream %s: %w", q.resultsName(), err)
	}
	if _, err := q.units.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: consumerName, AckPolicy: jetstream.AckExplicitPolicy, AckWait: opts.AckWait, MaxDeliver: opts.MaxDeliver,
		MaxAckPending: -1, Replicas: opts.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("workqueue: create consumer: %w", err)
	}
	return q, nil
}

func (q *Queue) unitsName() string   { return q.opts.Namespace + "_batch_units" }
func (q *Queue) resultsName() string { return q.opts.Namespace + "_batch_results" }

// token makes a run id one subject token.
func token(run string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case '.', '*', '>', ' ', '\t', '\r', '\n':
			return '_'
		}
		return r
	}, run)
}

func (q *Queue) unitSubject(run string) string {
	return q.opts.Namespace + ".batch.units." + token(run)
}

func (q *Queue) resultSubject(run string) string {
	return q.opts.Namespace + ".batch.results." + token(run)
}

// ErrIncomplete: Submit ended before every task had a result.
var ErrIncomplete = errors.New("workqueue: not every task has a result")

// Submit publishes a run's tasks (IDs distinct) and calls done with the
// first result of each, from one goroutine, until every task has one; it
// returns nil then, or (wrapping ctx's error) when ctx ends first, after
// taking the run's tasks still queued off the queue. Submitting a run's
// tasks again (a retried submit) queues none twice while the dedup window
// lasts; results of the run already stored count.
func (q *Queue) Submit(ctx context.Context, run string, tasks []Task, done func(Result)) error {
	if len(tasks) == 0 {
		return nil
	}
	log := q.logger.With("run", run)
	pending := make(map[string]bool, len(tasks))
	for _, t := range tasks {
		pending[t.ID] = true
	}
	// Listen before publishing: every result, also one of an earlier
	// submit of this run, is in the results stream.
	cons, err := q.results.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{q.resultSubject(run)}})
	if err != nil {
		return fmt.Errorf("workqueue: read results: %w", err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("workqueue: read results: %w", err)
	}
	defer it.Stop()
	results := make(chan Result, 64)
	go func() {
		for {
			m, err := it.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
					return
				}
				log.Warn("read batch unit results", "err", err)
				sleep(ctx, 100*time.Millisecond)
				continue
			}
			h := m.Headers()
			r := Result{Run: h.Get(hdrRun), ID: h.Get(hdrTask), Data: m.Data(), Err: h.Get(hdrError)}
			select {
			case results <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	// A task whose last holder died without answering: the server says so.
	var mu sync.Mutex
	bySeq := map[uint64]string{}
	exceeded := make(chan uint64, 64)
	nc := q.js.Conn()
	sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."+q.unitsName()+"."+consumerName, func(m *nats.Msg) {
		var adv struct {
			StreamSeq uint64 `json:"stream_seq"`
		}
		if json.Unmarshal(m.Data, &adv) == nil {
			select {
			case exceeded <- adv.StreamSeq:
			case <-ctx.Done():
			}
		}
	})
	if err != nil {
		return fmt.Errorf("workqueue: advisories: %w", err)
	}
	defer sub.Unsubscribe()
	subject := q.unitSubject(run)
	for _, t := range tasks {
		msg := &nats.Msg{Subject: subject, Data: t.Data, Header: nats.Header{}}
		msg.Header.Set(hdrRun, run)
		msg.Header.Set(hdrTask, t.ID)
		ack, err := q.js.PublishMsg(ctx, msg, jetstream.WithMsgID(run+"/"+t.ID))
		if err != nil {
			q.purge(run)
			return fmt.Errorf("workqueue: publish task %s: %w", t.ID, err)
		}
		mu.Lock()
		bySeq[ack.Sequence] = t.ID
		mu.Unlock()
	}
	log.Info("batch units queued", "units", len(tasks))
	tick := time.NewTicker(q.opts.Progress)
	defer tick.Stop()
	heard := false // a result since the last tick
	for len(pending) > 0 {
		select {
		case <-ctx.Done():
			q.purge(run)
			return fmt.Errorf("workqueue: run %s: %d of %d tasks pending: %w", run, len(pending), len(tasks), ctx.Err())
		case r := <-results:
			if r.Run != run || !pending[r.ID] {
				continue // another run's (a shared token), or a second answer
			}
			delete(pending, r.ID)
			heard = true
			done(r)
		case seq := <-exceeded:
			mu.Lock()
			id, ok := bySeq[seq]
			mu.Unlock()
			if !ok || !pending[id] {
				continue
			}
			// The task stays in the queue undelivered: take it out and
			// answer for it (a late answer of its last holder is ignored).
			dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_ = q.units.DeleteMsg(dctx, seq)
			cancel()
			delete(pending, id)
			heard = true
			log.Warn("batch unit handed out without an answer as often as allowed", "unit", id, "max_deliver", q.opts.MaxDeliver)
			done(Result{Run: run, ID: id, Err: fmt.Sprintf("handed out %d times, no worker answered (workers died or hung)", q.opts.MaxDeliver)})
		case <-tick.C:
			if !heard {
				attrs := []any{"pending", len(pending), "units", len(tasks)}
				if info, err := q.units.Consumer(ctx, consumerName); err == nil {
					if ci, err := info.Info(ctx); err == nil {
						attrs = append(attrs, "in_progress", ci.NumAckPending, "idle_worker_requests", ci.NumWaiting)
					}
				}
				log.Info(fmt.Sprintf("waiting for batch workers: %d of %d units pending", len(pending), len(tasks)), attrs...)
			}
			heard = false
		}
	}
	return nil
}

// purge takes a run's queued tasks off the queue (best effort: a task a
// worker holds is answered into a results subject nobody reads).
func (q *Queue) purge(run string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.units.Purge(ctx, jetstream.WithPurgeSubject(q.unitSubject(run))); err != nil {
		q.logger.Warn("take a run's units off the queue", "run", run, "err", err)
	}
}

// Serve handles tasks with n goroutines (at least 1), each taking one task
// at a time from the shared consumer, until ctx ends; it returns nil then.
// Errors reaching the server are logged and retried.
func (q *Queue) Serve(ctx context.Context, n int, h Handler) error {
	cons, err := q.units.Consumer(ctx, consumerName)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("workqueue: consumer: %w", err)
	}
	var wg sync.WaitGroup
	for range max(n, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.serve(ctx, cons, h)
		}()
	}
	wg.Wait()
	return nil
}

func (q *Queue) serve(ctx context.Context, cons jetstream.Consumer, h Handler) {
	pause := 100 * time.Millisecond
	for ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(ctx, fetchWait)
		batch, err := cons.Fetch(1, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if ctx.Err() != nil {
				return
			}
			q.logger.Warn("fetch batch units", "err", err, "retry_in", pause)
			sleep(ctx, pause)
			pause = min(2*pause, 5*time.Second)
			continue
		}
		for m := range batch.Messages() {
			q.handle(ctx, m, h)
		}
		cancel()
		pause = 100 * time.Millisecond
	}
}

func (q *Queue) handle(ctx context.Context, m jetstream.Msg, h Handler) {
	hd := m.Headers()
	t := Task{Run: hd.Get(hdrRun), ID: hd.Get(hdrTask), Data: m.Data(), Attempt: 1}
	if md, err := m.Metadata(); err == nil {
		t.Attempt = int(md.NumDelivered)
	}
	log := q.logger.With("run", t.Run, "unit", t.ID, "attempt", t.Attempt)
	hctx, cancel := context.WithCancel(ctx)
	beat := make(chan struct{})
	go func() {
		defer close(beat)
		tk := time.NewTicker(max(q.opts.AckWait/3, 10*time.Millisecond))
		defer tk.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-tk.C:
				if err := m.InProgress(); err != nil {
					log.Warn("batch unit heartbeat", "err", err)
				}
			}
		}
	}()
	data, err := h(hctx, t)
	cancel()
	<-beat
	if err != nil && ctx.Err() != nil {
		// Stopped mid-task: another worker takes it.
		_ = m.Nak()
		return
	}
	res := &nats.Msg{Subject: q.resultSubject(t.Run), Header: nats.Header{}}
	res.Header.Set(hdrRun, t.Run)
	res.Header.Set(hdrTask, t.ID)
	if err != nil {
		if t.Attempt < q.opts.MaxDeliver {
			delay := time.Duration(t.Attempt) * time.Second
			log.Warn("batch unit failed; it is handed out again", "err", err, "delay", delay)
			_ = m.NakWithDelay(delay)
			return
		}
		log.Error("batch unit failed its last attempt", "err", err)
		res.Header.Set(hdrError, fmt.Sprintf("attempt %d of %d: %v", t.Attempt, q.opts.MaxDeliver, err))
	} else {
		res.Data = data
	}
	// Answer even when the worker is stopping now: the work is done.
	actx, acancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer acancel()
	if _, err := q.js.PublishMsg(actx, res); err != nil {
		log.Warn("publish batch unit result; it is handed out again", "err", err)
		_ = m.Nak()
		return
	}
	if err := m.DoubleAck(actx); err != nil {
		log.Warn("acknowledge batch unit (its result is published; a second answer is ignored)", "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
