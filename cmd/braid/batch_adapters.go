package main

import (
	"context"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/storage/workqueue"
)

// The stores satisfy the interfaces batch owns as they are, but for the
// speed snapshot an audit reads, converted field by field.
var (
	_ batch.EventLog[*eventlog.Consumer] = (*eventlog.Log)(nil)
	_ batch.LakeReader                   = (*lake.Lake)(nil)
	_ batch.LakeWriter                   = (*lake.Lake)(nil)
	_ batch.LakeUpkeep                   = (*lake.Lake)(nil)
	_ batch.RunLake                      = (*lake.Lake)(nil)
	_ batch.LakeObjects                  = (*lake.Lake)(nil)
	_ batch.LogTrimmer                   = (*eventlog.Log)(nil)
	_ batch.ViewVersions                 = (*batchviews.Store)(nil)
	_ batch.PartWriter                   = (*batchviews.Store)(nil)
	_ batchviews.RunLock                 = (*workqueue.RunLock)(nil)
	_ batch.UnitQueue                    = (*workqueue.Queue)(nil)
	_ batch.UnitSource                   = (*workqueue.Queue)(nil)
	_ batch.SpeedExpirer                 = (*speedstore.Store)(nil)
	_ batch.SpeedSnapshot                = speedSnapshot{}
)

// speedSnapshot is batch's SpeedSnapshot over the speed store.
type speedSnapshot struct{ s *speedstore.Store }

func (sn speedSnapshot) Position(ctx context.Context, stream string, part int) (uint64, bool, error) {
	p, found, err := sn.s.Position(ctx, stream, part)
	return p.Seq, found, err
}

func (sn speedSnapshot) Cells(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64) ([]batch.SpeedCell, error) {
	var out []batch.SpeedCell
	err := sn.s.ReadEach(ctx, v, fromMs, toMs, minEpoch, func(c speedstore.Cell) error {
		out = append(out, batch.SpeedCell{Epoch: c.Epoch, Window: c.Window, Group: c.Group, State: c.State})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
