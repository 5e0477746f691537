package main

import (
	"context"
	"errors"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/dashboard"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
)

// The adapters below connect the stores to the small interfaces serving
// owns; each is a field-by-field conversion.

type speedReader struct{ s *speedstore.Store }

func (r speedReader) ReadCells(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64) ([]serving.SpeedCell, error) {
	cells, err := r.s.Read(ctx, v, fromMs, toMs, minEpoch)
	if err != nil {
		return nil, err
	}
	out := make([]serving.SpeedCell, len(cells))
	for i, c := range cells {
		out[i] = serving.SpeedCell{Epoch: c.Epoch, Window: c.Window, Group: c.Group, State: c.State}
	}
	return out, nil
}

type speedStatus struct{ s *speedstore.Store }

func (r speedStatus) StreamStatus(ctx context.Context, stream string) (serving.StreamSpeed, error) {
	p, found, err := r.s.Position(ctx, stream)
	if err != nil || !found {
		return serving.StreamSpeed{}, err
	}
	return serving.StreamSpeed{Seq: p.Seq, Watermark: p.Watermark}, nil
}

type archiveStatus struct{ lk *lake.Lake }

func (a archiveStatus) ArchiveCheckpoint(_ context.Context, stream string) (serving.ArchivePosition, error) {
	cp, err := a.lk.Checkpoint(stream)
	if err != nil {
		return serving.ArchivePosition{}, err
	}
	return serving.ArchivePosition{Seq: cp.Seq, CoveredUntil: cp.CoveredUntil}, nil
}

func (a *app) servingOptions(l *layers) serving.Options {
	o := serving.Options{
		Config: a.cfg, Catalog: a.cat, Log: a.log, Views: l.views, Archive: archiveStatus{l.lake},
		RunnerBusy: batch.ErrBusy, Root: dashboard.Handler(), Logger: a.logger.With("layer", "serve"), Registry: a.reg,
		Ready: a.ready,
	}
	if l.store != nil {
		o.Speed, o.SpeedStatus = speedReader{l.store}, speedStatus{l.store}
	}
	if l.runner != nil {
		o.Runner = l.runner
	}
	return o
}

// ready is /readyz: NATS connected and Redis answering.
func (a *app) ready(ctx context.Context) error {
	var errs []error
	if a.nc != nil && !a.nc.IsConnected() {
		errs = append(errs, errors.New("nats: not connected"))
	}
	if a.rdb != nil {
		if err := a.rdb.Ping(ctx).Err(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
