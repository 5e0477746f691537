package batch

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
)

// lockedViews is a view store whose run lock another process holds; it
// records the run records saved.
type lockedViews struct{ saved []batchviews.Run }

func (s *lockedViews) Current() (*batchviews.Version, error) { return nil, nil }
func (s *lockedViews) WritePart(context.Context, *logic.View, string, string, []batchviews.Row) (batchviews.Part, error) {
	return batchviews.Part{}, errors.New("unexpected")
}
func (s *lockedViews) PublishParts(context.Context, *batchviews.Version, *batchviews.Version) error {
	return errors.New("unexpected")
}
func (s *lockedViews) SaveRun(r batchviews.Run) error   { s.saved = append(s.saved, r); return nil }
func (s *lockedViews) LockRuns() (func(), error)        { return nil, batchviews.ErrLocked }
func (s *lockedViews) RecoverInterrupted() (int, error) { return 0, nil }

type emptyLake struct{}

func (emptyLake) PartCheckpoint(string, int) (lake.Checkpoint, error) { return lake.Checkpoint{}, nil }
func (emptyLake) Manifest(context.Context, string) (lake.Manifest, error) {
	return lake.Manifest{}, nil
}
func (emptyLake) Local(context.Context, []string) ([]string, func(), error) {
	return nil, func() {}, nil
}

// Every batch worker schedules runs; only the one holding the lock runs:
// a scheduled run that finds the lock taken is skipped without a record,
// while an on-demand run is recorded as failed.
func TestScheduledRunSkipsWhenLocked(t *testing.T) {
	cat := planCatalog(t, planConfig)
	views := &lockedViews{}
	r := NewRunner(RunnerConfig{Epoch: time.Second}, emptyLake{}, views, nil, cat, nil, nil)
	_, err := r.run(context.Background(), batchviews.NewID(), request{names: []string{"tumbling"}})
	if !errors.Is(err, batchviews.ErrLocked) || len(views.saved) != 0 {
		t.Fatalf("scheduled run under another's lock: %v, records %+v", err, views.saved)
	}
	rec, err := r.Run(context.Background(), []string{"tumbling"})
	if !errors.Is(err, batchviews.ErrLocked) || rec.Status != batchviews.StatusFailed || len(views.saved) != 1 || views.saved[0].Status != batchviews.StatusFailed {
		t.Fatalf("on-demand run under another's lock: %+v %v, records %+v", rec, err, views.saved)
	}
}

// fileLake is a lake whose manifests list given files.
type fileLake struct {
	emptyLake
	files map[string][]lake.FileInfo
	cp    lake.Checkpoint
}

func (l fileLake) Manifest(_ context.Context, stream string) (lake.Manifest, error) {
	return lake.Manifest{Gen: 1, Checkpoint: l.cp, Files: l.files[stream]}, nil
}

// recordingExecutor answers every unit with a part of one row per file.
type recordingExecutor struct{ units []Unit }

func (e *recordingExecutor) Execute(_ context.Context, units []Unit, done func(UnitResult)) error {
	for _, u := range units {
		e.units = append(e.units, u)
		res := UnitResult{Unit: u, Part: batchviews.Part{Date: u.Date, Key: u.ID(), Rows: len(u.Files), Run: u.Run, Cutoff: u.Cutoff}, FileRows: map[string]int64{}}
		for _, f := range u.Files {
			res.FileRows[f.Key] = f.Rows
		}
		done(res)
	}
	return nil
}

// publishingViews is lockedViews that lets runs take the lock and keeps
// what they publish.
type publishingViews struct {
	lockedViews
	cur *batchviews.Version
}

func (s *publishingViews) Current() (*batchviews.Version, error) { return s.cur, nil }
func (s *publishingViews) LockRuns() (func(), error)             { return func() {}, nil }
func (s *publishingViews) PublishParts(_ context.Context, base, ver *batchviews.Version) error {
	if base != s.cur {
		return batchviews.ErrConflict
	}
	s.cur = ver
	return nil
}

// With a retention, dates before its horizon get no unit and leave the
// version; rows read count each file once though two views read it.
func TestRunnerRetentionAndRowsRead(t *testing.T) {
	cat := planCatalog(t, planConfig)
	today := time.Now().UTC()
	day := func(n int) string { return today.AddDate(0, 0, -n).Format(time.DateOnly) }
	lk := fileLake{cp: lake.Checkpoint{Seq: 30, CoveredUntil: today.UnixMilli()}, files: map[string][]lake.FileInfo{"orders": {
		{Key: "old", Date: day(10), First: 1, Last: 10, Rows: 10},
		{Key: "mid", Date: day(3), First: 11, Last: 20, Rows: 20},
		{Key: "new", Date: day(1), First: 21, Last: 30, Rows: 30},
	}}}
	views := &publishingViews{}
	exec := &recordingExecutor{}
	r := NewRunner(RunnerConfig{Epoch: time.Second, Executor: exec, Retention: map[string]time.Duration{"orders": 5 * 24 * time.Hour}}, lk, views, nil, cat, nil, nil)
	rec, err := r.Run(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// tumbling: day 3 and day 1; hopping: days 4, 3, 2, 1 (the day before
	// each file's); nothing of day 10 or 11.
	if rec.UnitsComputed != 6 || rec.UnitsReused != 0 || rec.RowsRead != 50 {
		t.Fatalf("run %+v", rec)
	}
	for _, u := range exec.units {
		if u.Date < day(5) {
			t.Fatalf("unit %s before the horizon", u.ID())
		}
	}
	if got := views.cur.Views["hopping"]; len(got.Parts) != 4 || got.Rows != 1+1+1+1 || got.Parts[0].Date != day(4) {
		t.Fatalf("hopping %+v", got)
	}
	if got := views.cur.Views["tumbling"]; len(got.Parts) != 2 || got.Rows != 2 || got.Cutoff != logic.EpochOf(today.UnixMilli(), time.Second) {
		t.Fatalf("tumbling %+v", got)
	}
}
