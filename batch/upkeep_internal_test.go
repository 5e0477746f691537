package batch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
)

// upkeepLake is a lake that records the upkeep asked of it ("compact
// orders 1048576", "compact orders/2 1048576" for stream partition 2,
// "drop orders 2025-11-02", "sweep orders") and fails an operation
// ("compact", "drop", "sweep", "checkpoint") while fail holds it. The
// checkpoint of partition p > 0 is p more than partition 0's.
type upkeepLake struct {
	mu    sync.Mutex
	cp    map[string]uint64
	fail  map[string]bool
	calls []string
	stats lake.CompactStats
}

func (l *upkeepLake) record(op, stream, arg string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, strings.TrimSpace(op+" "+stream+" "+arg))
	if l.fail[op] {
		return fmt.Errorf("%s failed", op)
	}
	return nil
}

// take returns the calls since the last take.
func (l *upkeepLake) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.calls
	l.calls = nil
	return out
}

// partName names stream partition p as the records do.
func partName(stream string, p int) string {
	if p == 0 {
		return stream
	}
	return fmt.Sprintf("%s/%d", stream, p)
}

func (l *upkeepLake) RecoverPart(string, int) error { return nil }
func (l *upkeepLake) PartCheckpoint(stream string, p int) (lake.Checkpoint, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail["checkpoint"] {
		return lake.Checkpoint{}, errors.New("checkpoint failed")
	}
	cp := l.cp[stream]
	if cp > 0 {
		cp += uint64(p)
	}
	return lake.Checkpoint{Seq: cp}, nil
}
func (l *upkeepLake) WriteReleasing(*logic.Stream, []lake.Row) ([]string, int64, error) {
	return nil, 0, errors.New("no writes in this test")
}
func (l *upkeepLake) CommitPart(string, int, lake.Checkpoint) error {
	return errors.New("no commits in this test")
}
func (l *upkeepLake) Compact(_ context.Context, s *logic.Stream, p int, target int64) (lake.CompactStats, error) {
	if err := l.record("compact", partName(s.Name, p), fmt.Sprint(target)); err != nil {
		return lake.CompactStats{}, err
	}
	return l.stats, nil
}
func (l *upkeepLake) DropBefore(_ context.Context, stream, date string) (int, error) {
	if err := l.record("drop", stream, date); err != nil {
		return 0, err
	}
	return 2, nil
}
func (l *upkeepLake) Sweep(_ context.Context, stream string) (int, error) {
	if err := l.record("sweep", stream, ""); err != nil {
		return 0, err
	}
	return 0, nil
}

// trimLog is an event log that opens no consumers and records its trims
// ("trim orders <before, RFC 3339> <upTo>").
type trimLog struct {
	lk   *upkeepLake // shares its record of calls
	fail bool
}

func (t *trimLog) Consumer(context.Context, string, int, string, eventlog.Start, int) (LogConsumer, error) {
	return nil, errors.New("no consumers in this test")
}
func (t *trimLog) Info(context.Context, string, int) (eventlog.StreamInfo, error) {
	return eventlog.StreamInfo{}, nil
}
func (t *trimLog) Trim(_ context.Context, stream string, p int, before time.Time, upTo uint64) (uint64, error) {
	t.lk.mu.Lock()
	fail := t.fail
	t.lk.mu.Unlock()
	if fail {
		_ = t.lk.record("trim", partName(stream, p), "failed")
		return 0, errors.New("trim failed")
	}
	return 3, t.lk.record("trim", partName(stream, p), fmt.Sprintf("%s %d", before.UTC().Format(time.RFC3339), upTo))
}

// plainLog is an event log that cannot trim.
type plainLog struct{ trimLog }

func (p *plainLog) Trim() {} // not a LogTrimmer

func upkeepCatalog(t *testing.T) *config.Catalog {
	t.Helper()
	cfg, err := config.Parse([]byte(`
streams:
  orders: { time: ts, retention: 400d, fields: { ts: time } }
  pageviews: { time: ts, fields: { ts: time } }
views:
  v: { stream: orders, window: 1m, measures: { n: count() } }
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// counter reads a counter of reg by name and labels (0 when absent).
func counter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if have[labels[i]] != labels[i+1] {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestUpkeepSchedule drives the upkeep's rounds with explicit times: the
// log is trimmed every round below the lake's checkpoint and now minus
// the log's max age; compaction follows commits, at most once per period
// and not at start; retention drops the partitions before the UTC date of
// now minus the retention, at start and then once per retention period;
// removed files are swept every round; a failure is tried again at the
// next round and stops nothing else.
func TestUpkeepSchedule(t *testing.T) {
	ctx := context.Background()
	lk := &upkeepLake{cp: map[string]uint64{"orders": 100}, fail: map[string]bool{}, stats: lake.CompactStats{Partitions: 2, FilesIn: 7, FilesOut: 2, Bytes: 5000}}
	reg := prometheus.NewRegistry()
	a := NewArchiver(ArchiverConfig{TargetFileBytes: 64 << 20, LogMaxAge: 2 * time.Hour, Retention: map[string]time.Duration{"orders": 400 * 24 * time.Hour}},
		&trimLog{lk: lk}, lk, upkeepCatalog(t), quiet(), reg)
	if a.up == nil {
		t.Fatal("no upkeep with a lake and a log that can do it")
	}
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	round := func(at time.Duration, want ...string) {
		t.Helper()
		a.up.round(ctx, t0.Add(at), a.running())
		if got := lk.take(); !slices.Equal(got, want) {
			t.Fatalf("round at +%v:\n got %q\nwant %q", at, got, want)
		}
	}
	// Start: trim (pageviews has no checkpoint: nothing to trim),
	// retention, sweep; no compaction yet.
	round(0, "trim orders 2026-12-07T08:00:00Z 100", "drop orders 2025-11-02", "sweep orders", "sweep pageviews")
	if got := counter(t, reg, "braid_log_trimmed_records_total", "stream", "orders"); got != 3 {
		t.Errorf("trimmed records %v", got)
	}
	if got := counter(t, reg, "braid_lake_retention_dropped_files_total", "stream", "orders"); got != 2 {
		t.Errorf("dropped files %v", got)
	}
	// Within the period: no compaction.
	round(30*time.Second, "trim orders 2026-12-07T08:00:30Z 100", "sweep orders", "sweep pageviews")
	// A period after start, with commits since (checkpoint 100 > 0).
	round(time.Minute, "trim orders 2026-12-07T08:01:00Z 100", "compact orders 67108864", "sweep orders", "sweep pageviews")
	if c, f, b := counter(t, reg, "braid_lake_compactions_total", "stream", "orders"), counter(t, reg, "braid_lake_compacted_files_total", "stream", "orders"), counter(t, reg, "braid_lake_compacted_bytes_total", "stream", "orders"); c != 1 || f != 7 || b != 5000 {
		t.Errorf("compaction metrics %v %v %v", c, f, b)
	}
	// No commit since: no compaction.
	round(3*time.Minute, "trim orders 2026-12-07T08:03:00Z 100", "sweep orders", "sweep pageviews")
	// Commits on both streams: pageviews has its first checkpoint, and both
	// compact (pageviews' period began at its first round).
	lk.mu.Lock()
	lk.cp["orders"], lk.cp["pageviews"] = 150, 9
	lk.mu.Unlock()
	round(4*time.Minute, "trim orders 2026-12-07T08:04:00Z 150", "compact orders 67108864", "sweep orders",
		"trim pageviews 2026-12-07T08:04:00Z 9", "compact pageviews 67108864", "sweep pageviews")

	// Failures: each is retried at the next round, the rest goes on.
	lk.mu.Lock()
	lk.cp["orders"] = 200
	lk.fail["compact"], lk.fail["drop"], lk.fail["sweep"] = true, true, true
	lk.mu.Unlock()
	a.up.log.(*trimLog).fail = true
	round(time.Hour, "trim orders failed", "compact orders 67108864", "drop orders 2025-11-02", "sweep orders",
		"trim pageviews failed", "sweep pageviews")
	for _, task := range []string{"trim", "compact", "retention", "sweep"} {
		if got := counter(t, reg, "braid_archive_upkeep_errors_total", "stream", "orders", "task", task); got != 1 {
			t.Errorf("errors of %s: %v", task, got)
		}
	}
	lk.mu.Lock()
	lk.fail = map[string]bool{}
	lk.mu.Unlock()
	a.up.log.(*trimLog).fail = false
	round(time.Hour+time.Minute, "trim orders 2026-12-07T09:01:00Z 200", "compact orders 67108864", "drop orders 2025-11-02", "sweep orders",
		"trim pageviews 2026-12-07T09:01:00Z 9", "sweep pageviews")
	// Retention again a period after its last success; a day later the
	// date moves on by a day.
	round(2*time.Hour, "trim orders 2026-12-07T10:00:00Z 200", "sweep orders", "trim pageviews 2026-12-07T10:00:00Z 9", "sweep pageviews")
	round(2*time.Hour+time.Minute, "trim orders 2026-12-07T10:01:00Z 200", "drop orders 2025-11-02", "sweep orders", "trim pageviews 2026-12-07T10:01:00Z 9", "sweep pageviews")
	round(26*time.Hour+time.Minute, "trim orders 2026-12-08T10:01:00Z 200", "drop orders 2025-11-03", "sweep orders", "trim pageviews 2026-12-08T10:01:00Z 9", "sweep pageviews")

	// A checkpoint that cannot be read: nothing is done for the stream.
	lk.mu.Lock()
	lk.fail["checkpoint"] = true
	lk.mu.Unlock()
	round(27 * time.Hour)
	if got := counter(t, reg, "braid_archive_upkeep_errors_total", "stream", "orders", "task", "checkpoint"); got != 1 {
		t.Errorf("checkpoint errors %v", got)
	}
}

// TestUpkeepOptions: archive.compact false never compacts; without
// nats.max_age, or with a log that cannot trim, the log is not trimmed;
// with neither lake upkeep nor trimming there is no upkeep at all.
func TestUpkeepOptions(t *testing.T) {
	ctx := context.Background()
	cat := upkeepCatalog(t)
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)

	lk := &upkeepLake{cp: map[string]uint64{"orders": 100, "pageviews": 5}, fail: map[string]bool{}}
	a := NewArchiver(ArchiverConfig{NoCompact: true}, &trimLog{lk: lk}, lk, cat, quiet(), prometheus.NewRegistry())
	for _, at := range []time.Duration{0, time.Minute, time.Hour} {
		a.up.round(ctx, t0.Add(at), a.running())
	}
	for _, c := range lk.take() {
		if strings.HasPrefix(c, "compact") || strings.HasPrefix(c, "trim") {
			t.Errorf("no compact, no max age: %s", c)
		}
	}

	lk = &upkeepLake{cp: map[string]uint64{"orders": 100}, fail: map[string]bool{}}
	a = NewArchiver(ArchiverConfig{LogMaxAge: time.Hour}, &plainLog{trimLog{lk: lk}}, lk, cat, quiet(), prometheus.NewRegistry())
	a.up.round(ctx, t0, a.running())
	if got := lk.take(); slices.ContainsFunc(got, func(c string) bool { return strings.HasPrefix(c, "trim") }) {
		t.Errorf("a log that cannot trim was trimmed: %q", got)
	}

	// A lake without upkeep and no max age: nothing to do.
	type writerOnly struct{ LakeWriter }
	if a := NewArchiver(ArchiverConfig{}, &trimLog{lk: lk}, writerOnly{lk}, cat, quiet(), prometheus.NewRegistry()); a.up != nil {
		t.Error("an upkeep with nothing to do")
	}
	// The same lake with a max age: the log alone is trimmed.
	a = NewArchiver(ArchiverConfig{LogMaxAge: time.Hour}, &trimLog{lk: lk}, writerOnly{lk}, cat, quiet(), prometheus.NewRegistry())
	a.up.round(ctx, t0, a.running())
	if got := lk.take(); !slices.Equal(got, []string{"trim orders 2026-12-07T09:00:00Z 100"}) {
		t.Errorf("trim only: %q", got)
	}
}

// TestRunKeepsUp: Run does an upkeep round at start, beside the streams
// (which fail here and are retried), and stops it with ctx.
func TestRunKeepsUp(t *testing.T) {
	lk := &upkeepLake{cp: map[string]uint64{"orders": 100}, fail: map[string]bool{}}
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	a := NewArchiver(ArchiverConfig{LogMaxAge: time.Hour, Retention: map[string]time.Duration{"orders": 48 * time.Hour}, Retry: time.Hour, Now: func() time.Time { return now }},
		&trimLog{lk: lk}, lk, upkeepCatalog(t), quiet(), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	want := []string{"trim orders 2026-12-07T09:00:00Z 100", "drop orders 2026-12-05", "sweep orders", "sweep pageviews"}
	var got []string
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < len(want) && time.Now().Before(deadline) {
		got = append(got, lk.take()...)
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("start round %q, want %q", got, want)
	}
}

// partShares is Shares that runs the given partitions of those it is
// handed, until ctx ends.
type partShares struct{ hold map[Partition]bool }

func (s partShares) Run(ctx context.Context, parts []Partition, work func(context.Context, Partition) error) error {
	var wg sync.WaitGroup
	for _, p := range parts {
		if s.hold[p] {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = work(ctx, p)
			}()
		}
	}
	wg.Wait()
	return nil
}

// TestUpkeepPartitions: the log and the files of each stream partition
// are kept up on their own (trim below the partition's checkpoint,
// compaction of its files); the stream's retention and sweeps go with
// partition 0. An archiver with shares keeps up the partitions it runs.
func TestUpkeepPartitions(t *testing.T) {
	ctx := context.Background()
	cfg, err := config.Parse([]byte(`
streams:
  orders: { time: ts, retention: 400d, partitions: 3, fields: { ts: time } }
views:
  v: { stream: orders, window: 1m, measures: { n: count() } }
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	acfg := ArchiverConfig{TargetFileBytes: 1 << 20, LogMaxAge: time.Hour, Retention: map[string]time.Duration{"orders": 400 * 24 * time.Hour}}
	lk := &upkeepLake{cp: map[string]uint64{"orders": 100}, fail: map[string]bool{}}
	a := NewArchiver(acfg, &trimLog{lk: lk}, lk, cat, quiet(), prometheus.NewRegistry())
	a.up.round(ctx, t0, a.running())
	a.up.round(ctx, t0.Add(time.Minute), a.running())
	want := []string{
		"trim orders 2026-12-07T09:00:00Z 100", "drop orders 2025-11-02", "sweep orders",
		"trim orders/1 2026-12-07T09:00:00Z 101", "trim orders/2 2026-12-07T09:00:00Z 102",
		"trim orders 2026-12-07T09:01:00Z 100", "compact orders 1048576", "sweep orders",
		"trim orders/1 2026-12-07T09:01:00Z 101", "compact orders/1 1048576",
		"trim orders/2 2026-12-07T09:01:00Z 102", "compact orders/2 1048576",
	}
	if got := lk.take(); !slices.Equal(got, want) {
		t.Fatalf("rounds without shares:\n got %q\nwant %q", got, want)
	}

	// With shares: the partitions this archiver runs now.
	acfg.Shares = partShares{hold: map[Partition]bool{{"orders", 2}: true}}
	acfg.Retry = time.Hour
	a = NewArchiver(acfg, &trimLog{lk: lk}, lk, cat, quiet(), prometheus.NewRegistry())
	if got := a.running(); len(got) != 0 {
		t.Fatalf("running before Run: %v", got)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(a.running(), []Partition{{"orders", 2}}) {
		if time.Now().After(deadline) {
			t.Fatalf("running %v, want orders/2", a.running())
		}
		time.Sleep(10 * time.Millisecond)
	}
	lk.take()
	a.up.round(ctx, t0, a.running())
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := lk.take(), []string{"trim orders/2 2026-12-07T09:00:00Z 102"}; !slices.Equal(got, want) {
		t.Fatalf("round of an archiver running orders/2: %q, want %q", got, want)
	}
}
