package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/dashboard"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/leases"
	"github.com/braid-data/braid/storage/speedstore"
)

// The adapters below connect the stores to the small interfaces serving,
// its query engine (serving/query) and batch own; each is a field-by-field
// conversion.

type speedReader struct{ s *speedstore.Store }

func (r speedReader) ReadCells(ctx context.Context, v *logic.View, fromMs, toMs, minEpoch int64, fn func(query.SpeedCell) error) error {
	return r.s.ReadEach(ctx, v, fromMs, toMs, minEpoch, func(c speedstore.Cell) error {
		return fn(query.SpeedCell{Epoch: c.Epoch, Window: c.Window, Group: c.Group, State: c.State})
	})
}

// speedUsage measures what a view's speed state costs in Redis, within
// the default budget.
type speedUsage struct{ s *speedstore.Store }

func (u speedUsage) SpeedUsage(ctx context.Context, v *logic.View) (serving.SpeedCost, error) {
	x, err := u.s.Usage(ctx, v.Stream, v.StateKey(), speedstore.UsageBudget{})
	if err != nil {
		return serving.SpeedCost{}, err
	}
	return serving.SpeedCost{Cells: x.Cells, Keys: x.Keys, Bytes: x.Bytes, Exact: x.Exact}, nil
}

// speedStatus reads the speed position of every partition of a stream, a
// round trip each.
type speedStatus struct {
	s   *speedstore.Store
	cat *config.Catalog
}

func (r speedStatus) StreamStatus(ctx context.Context, stream string) (query.StreamSpeed, error) {
	st, ok := r.cat.Streams[stream]
	if !ok {
		return query.StreamSpeed{}, fmt.Errorf("speed status: unknown stream %q", stream)
	}
	parts := make([]query.PartSpeed, st.Partitions)
	for i := range parts {
		p, found, err := r.s.Position(ctx, stream, i)
		if err != nil {
			return query.StreamSpeed{}, err
		}
		if !found {
			continue
		}
		ps := query.PartSpeed{Found: true, Seq: p.Seq, Watermark: p.Watermark, LastArrival: p.LastArrival, Target: p.Target,
			Views: make(map[string]query.ViewSpeed, len(p.Views))}
		for k, vp := range p.Views {
			ps.Views[k] = query.ViewSpeed{JoinedOK: vp.JoinedOK, Joined: vp.Joined, From: vp.From,
				Rebuilding: vp.Rebuilding, Rebuilt: vp.Rebuilt, RebuildFirst: vp.RebuildFirst}
		}
		parts[i] = ps
	}
	return query.SpeedOf(parts), nil
}

// partitionOwners is serving's PartitionOwners: who holds each
// partition's lease of a role (storage/leases; "" when nobody does).
type partitionOwners struct {
	rdb redis.UniversalClient
	ns  string
}

func (o partitionOwners) PartitionOwners(ctx context.Context, role, stream string, n int) ([]string, error) {
	parts := make([]leases.Partition, n)
	for p := range parts {
		parts[p] = leases.Partition{Stream: stream, P: p}
	}
	held, err := leases.Owners(ctx, o.rdb, o.ns, role, parts)
	if err != nil {
		return nil, err
	}
	out := make([]string, n)
	for p, part := range parts {
		out[p] = held[part]
	}
	return out, nil
}

// archiveStatus is serving's ArchiveStatus over the lake: a stream
// partition's checkpoint.
type archiveStatus struct{ lk *lake.Lake }

func (a archiveStatus) ArchiveCheckpoint(_ context.Context, stream string, p int) (serving.ArchivePosition, error) {
	cp, err := a.lk.PartCheckpoint(stream, p)
	if err != nil {
		return serving.ArchivePosition{}, err
	}
	return serving.ArchivePosition{Seq: cp.Seq, CoveredUntil: cp.CoveredUntil}, nil
}

// logEnds is the batch runner's LogEnds over the event log: the last
// record's sequence and its arrival, from the stream partition's state.
type logEnds struct{ l *eventlog.Log }

func (e logEnds) LogEnd(ctx context.Context, stream string, p int) (batch.LogEnd, error) {
	info, err := e.l.Info(ctx, stream, p)
	if err != nil {
		return batch.LogEnd{}, err
	}
	end := batch.LogEnd{Seq: info.LastSeq}
	if !info.LastTime.IsZero() {
		end.Arrival = info.LastTime.UnixMilli()
	}
	return end, nil
}

// commitNotifier is the query engine's CommitNotifier over Redis pub/sub:
// the speed store's SubscribeCommits on every partition of every stream
// (one subscription per partition on a Redis Cluster, sharded channels;
// one for all on a single server). A subscription broken by a reconnect or
// a failover is made again; notices published meanwhile are lost, which
// live clients tolerate (the next commit pokes them again).
type commitNotifier struct {
	store   *speedstore.Store
	streams []*logic.Stream
}

func (n commitNotifier) Subscribe(ctx context.Context) <-chan query.CommitNotice {
	in := n.store.SubscribeCommits(ctx, n.streams)
	out := make(chan query.CommitNotice, 256)
	go func() {
		defer close(out)
		for c := range in { // closed once ctx ends
			select {
			case out <- query.CommitNotice{Stream: c.Stream, Part: c.Part, Seq: c.Seq}:
			case <-ctx.Done():
			}
		}
	}()
	return out
}

// The stores satisfy the interfaces serving owns as they are.
var (
	_ serving.EventLog   = (*eventlog.Log)(nil)
	_ serving.BatchViews = (*batchviews.Store)(nil)
)

func (a *app) servingOptions(l *layers) serving.Options {
	o := serving.Options{
		Config: a.cfg, Catalog: a.cat, Archive: archiveStatus{l.lake},
		RunnerBusy: batch.ErrBusy, Root: dashboard.Handler(), Logger: a.logger.With("layer", "serve"), Registry: a.reg,
		Ready: a.ready, QueryCacheBytes: a.cfg.HTTP.QueryCacheBytes,
	}
	if a.log != nil { // a nil *eventlog.Log would make a non-nil interface
		o.Log = a.log
	}
	if a.demoHooks != nil {
		o.Root = a.demoHooks.wrap(o.Root)
	}
	if l.views != nil {
		o.Views = l.views
	}
	if a.qstore != nil {
		n := commitNotifier{store: a.qstore}
		for _, name := range a.cat.StreamOrder {
			n.streams = append(n.streams, a.cat.Streams[name])
		}
		o.Notifier = n
	}
	if a.log != nil {
		a.reg.MustRegister(a.log.ConsumerCollector(a.cat.StreamOrder))
	}
	if l.qstore != nil {
		o.Speed, o.SpeedStatus, o.Owners = speedReader{l.qstore}, speedStatus{s: l.qstore, cat: a.cat}, partitionOwners{rdb: a.qrdb, ns: a.cfg.Namespace}
		o.SpeedUsage = speedUsage{l.qstore}
		if l.lake != nil {
			o.Auditor = auditor{lake: l.lake, store: l.qstore, views: l.views, log: a.log, wait: 10 * time.Second}
		}
	}
	if l.runner != nil {
		o.Runner = l.runner
	}
	if er := a.entityReader(l); er != nil {
		o.Entities, o.Features = er, er // HTTP lookups and decision rules read the same features
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

// auditor runs batch.Audit for serving and for `braid audit`: the view's
// batch cutoff, the stream's too-late records (when the log is connected)
// and the lake's wait.
type auditor struct {
	lake  *lake.Lake
	store *speedstore.Store
	views *batchviews.Store
	log   *eventlog.Log // nil: too-late events are not known and show as drift
	wait  time.Duration
}

// errViewRebuilding: the view's state is being rebuilt; audit it once it
// is whole.
var errViewRebuilding = errors.New("view rebuilding")

// maxLateAudited bounds the too-late records an audit reads.
const maxLateAudited = 100_000

func (a auditor) report(ctx context.Context, v *logic.View, fromMs, toMs int64) (*batch.AuditReport, error) {
	// A view being rebuilt has partial speed cells: nothing to audit yet
	// (in any stream partition with a position; one without has no cells).
	positioned := false
	for p := range max(1, v.Stream.Partitions) {
		pos, found, err := a.store.Position(ctx, v.Stream.Name, p)
		if err != nil {
			return nil, err
		}
		if !found {
			continue
		}
		positioned = true
		if vp := pos.Views[v.StateKey()]; !vp.JoinedOK || vp.Joined != pos.Seq {
			return nil, fmt.Errorf("%w: %s (its speed state has not joined the commits of partition %d of its stream yet)", errViewRebuilding, v.Name, p)
		}
	}
	if !positioned {
		return nil, fmt.Errorf("%w: %s (its stream has no speed position yet)", errViewRebuilding, v.Name)
	}
	cut, err := a.views.Cutoff(v)
	if err != nil {
		return nil, err
	}
	var late []eventlog.EventRef
	if a.log != nil {
		if late, err = a.log.LateEvents(ctx, v.Stream.Name, maxLateAudited); err != nil {
			return nil, err
		}
	}
	return batch.Audit(ctx, a.lake, speedSnapshot{a.store}, batch.AuditRequest{View: v, From: fromMs, To: toMs, Cutoff: cut, Wait: a.wait, Late: late})
}

func (a auditor) Audit(ctx context.Context, v *logic.View, fromMs, toMs int64) (serving.AuditReport, error) {
	rep, err := a.report(ctx, v, fromMs, toMs)
	if errors.Is(err, batch.ErrLakeBehind) || errors.Is(err, errViewRebuilding) {
		return nil, fmt.Errorf("%w: %w", serving.ErrAuditNotReady, err)
	}
	if err != nil {
		return nil, err
	}
	return rep, nil
}
