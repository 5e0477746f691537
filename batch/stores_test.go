package batch_test

import (
	"context"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/speedstore"
)

// The stores satisfy the interfaces batch owns: cmd/braid, which wires
// them, asserts it at compile time. The tests' own speed snapshot does too.
var _ batch.SpeedSnapshot = speedSnapshot{}

// speedSnapshot is an audit's SpeedSnapshot over the speed store, its
// cells converted field by field (as cmd/braid wires it).
type speedSnapshot struct{ s *speedstore.Store }

func (sn speedSnapshot) Position(ctx context.Context, stream string, part int) (uint64, bool, error) {
	p, found, err := sn.s.Position(ctx, stream, part)
	return p.Seq, found, err
}

func (sn speedSnapshot) Cells(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64) ([]batch.SpeedCell, error) {
	cells, err := sn.s.Read(ctx, v, fromMs, toMs, minEpoch)
	if err != nil {
		return nil, err
	}
	out := make([]batch.SpeedCell, len(cells))
	for i, c := range cells {
		out[i] = batch.SpeedCell{Epoch: c.Epoch, Window: c.Window, Group: c.Group, State: c.State}
	}
	return out, nil
}
