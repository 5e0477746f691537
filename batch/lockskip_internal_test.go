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

func (emptyLake) Checkpoint(string) (lake.Checkpoint, error) { return lake.Checkpoint{}, nil }
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
