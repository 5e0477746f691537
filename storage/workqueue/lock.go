package workqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/batchviews"
)

// LockOptions configures the run lock.
type LockOptions struct {
	Namespace string
	Replicas  int           // 0: defaults.NATSReplicas
	TTL       time.Duration // the lease: a holder that stops renewing loses the lock after it (0: defaults.BatchLockTTL)
	Renew     time.Duration // how often the holder renews (0: TTL/3)
	Holder    string        // names the holder in the lock's value ("": host and pid)
	Memory    bool          // memory storage (tests only)
	Logger    *slog.Logger  // nil: slog.Default()
}

const lockKey = "run"

// RunLock is the batch run lock shared by every process of a deployment:
// key "run" of the JetStream key-value bucket <ns>_batch_lock, whose
// values live TTL (the bucket's max age, on the server's clock). Lock
// creates the key when it is absent; the holder renews it (an update by
// revision) every Renew; a holder that stops renewing (dead, cut off)
// loses it when its last value ages out, and anyone may then take it.
// Unlock deletes the key only at the revision the holder wrote last, so a
// holder whose lease lapsed never releases its successor's lock.
// RunLock satisfies batchviews.RunLock.
type RunLock struct {
	kv     jetstream.KeyValue
	opts   LockOptions
	logger *slog.Logger
}

var _ batchviews.RunLock = (*RunLock)(nil)

// OpenRunLock ensures the lock's bucket exists.
func OpenRunLock(ctx context.Context, js jetstream.JetStream, opts LockOptions) (*RunLock, error) {
	if opts.Replicas < 1 {
		opts.Replicas = defaults.NATSReplicas
	}
	if opts.TTL <= 0 {
		opts.TTL = defaults.BatchLockTTL
	}
	if opts.Renew <= 0 {
		opts.Renew = opts.TTL / 3
	}
	if opts.Holder == "" {
		host, _ := os.Hostname()
		opts.Holder = fmt.Sprintf("%s:%d", host, os.Getpid())
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	storage := jetstream.FileStorage
	if opts.Memory {
		storage = jetstream.MemoryStorage
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: opts.Namespace + "_batch_lock", History: 1, TTL: opts.TTL, Storage: storage, Replicas: opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("workqueue: run lock bucket: %w", err)
	}
	return &RunLock{kv: kv, opts: opts, logger: opts.Logger.With("component", "runlock")}, nil
}

// lease is the lock's value.
type lease struct {
	Holder  string    `json:"holder"`
	Since   time.Time `json:"since"`
	Renewed time.Time `json:"renewed"`
}

// Lock takes the lock without waiting: batchviews.ErrLocked while another
// holder (in this process or any other) has it.
func (l *RunLock) Lock() (unlock func(), err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now().UTC()
	val, _ := json.Marshal(lease{Holder: l.opts.Holder, Since: now, Renewed: now})
	rev, err := l.kv.Create(ctx, lockKey, val)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, batchviews.ErrLocked
	}
	if err != nil {
		return nil, fmt.Errorf("workqueue: run lock: %w", err)
	}
	h := &holder{l: l, rev: rev, since: now, stop: make(chan struct{}), done: make(chan struct{})}
	go h.renew()
	var once sync.Once
	return func() { once.Do(h.release) }, nil
}

// Holder returns who holds the lock ("" when free).
func (l *RunLock) Holder(ctx context.Context) (string, error) {
	e, err := l.kv.Get(ctx, lockKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("workqueue: run lock: %w", err)
	}
	var v lease
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return "", fmt.Errorf("workqueue: run lock value: %w", err)
	}
	return v.Holder, nil
}

type holder struct {
	l     *RunLock
	since time.Time
	stop  chan struct{}
	done  chan struct{}

	mu  sync.Mutex
	rev uint64 // the revision written last; 0: the lease is lost
}

func (h *holder) renew() {
	defer close(h.done)
	t := time.NewTicker(h.l.opts.Renew)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.mu.Lock()
		rev := h.rev
		h.mu.Unlock()
		val, _ := json.Marshal(lease{Holder: h.l.opts.Holder, Since: h.since, Renewed: time.Now().UTC()})
		ctx, cancel := context.WithTimeout(context.Background(), h.l.opts.TTL)
		next, err := h.l.kv.Update(ctx, lockKey, val, rev)
		cancel()
		switch {
		case err == nil:
			h.mu.Lock()
			h.rev = next
			h.mu.Unlock()
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch), errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyNotFound):
			// Another revision is there (or none): the lease lapsed.
			h.mu.Lock()
			h.rev = 0
			h.mu.Unlock()
			h.l.logger.Error("the batch run lock's lease lapsed before it was renewed; another process may run batch runs now", "holder", h.l.opts.Holder, "err", err)
			return
		default:
			h.l.logger.Warn("renew the batch run lock", "err", err)
		}
	}
}

func (h *holder) release() {
	close(h.stop)
	<-h.done
	h.mu.Lock()
	rev := h.rev
	h.mu.Unlock()
	if rev == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.l.kv.Delete(ctx, lockKey, jetstream.LastRevision(rev)); err != nil {
		h.l.logger.Warn("release the batch run lock (it lapses by itself)", "err", err)
	}
}
