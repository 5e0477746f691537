package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

type speedStatus struct{ s *speedstore.Store }

func (r speedStatus) StreamStatus(ctx context.Context, stream string) (query.StreamSpeed, error) {
	p, found, err := r.s.Position(ctx, stream, 0 /* PARTITION-0 */)
	if err != nil || !found {
		return query.StreamSpeed{}, err
	}
	out := query.StreamSpeed{Found: true, Seq: p.Seq, Watermark: p.Watermark, Target: p.Target, Views: make(map[string]query.ViewSpeed, len(p.Views))}
	for k, vp := range p.Views {
		out.Views[k] = query.ViewSpeed{JoinedOK: vp.JoinedOK, Joined: vp.Joined, From: vp.From,
			Rebuilding: vp.Rebuilding, Rebuilt: vp.Rebuilt, RebuildFirst: vp.RebuildFirst}
	}
	return out, nil
}

// archiveStatus is serving's ArchiveStatus over the lake's manifest: the
// stream's position as a whole, from the checkpoints of its partitions
// (one manifest read): Seq is the sum of their sequences (a stream of one
// partition's sequence), CoveredUntil the least of their coverages.
type archiveStatus struct {
	lk  *lake.Lake
	cat *config.Catalog
}

func (a archiveStatus) ArchiveCheckpoint(ctx context.Context, stream string) (serving.ArchivePosition, error) {
	m, err := a.lk.Manifest(ctx, stream)
	if err != nil {
		return serving.ArchivePosition{}, err
	}
	n := 1
	if s, ok := a.cat.Streams[stream]; ok {
		n = max(1, s.Partitions)
	}
	pos := serving.ArchivePosition{CoveredUntil: m.CoveredUntil(n)}
	for p := range n {
		pos.Seq += m.Part(p).Seq
	}
	return pos, nil
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

// commitNotifier is the query engine's CommitNotifier over Redis pub/sub: ONE
// pattern subscription per process on {ns}:commits:* (the speed store
// PUBLISHes the new seq there after every commit). go-redis resubscribes
// after a reconnect; notices published meanwhile are lost, which live
// clients tolerate (the next commit pokes them again).
type commitNotifier struct {
	rdb redis.UniversalClient
	ns  string
}

func (n commitNotifier) Subscribe(ctx context.Context) <-chan query.CommitNotice {
	out := make(chan query.CommitNotice, 256)
	prefix := n.ns + ":commits:"
	ps := n.rdb.PSubscribe(ctx, prefix+"*")
	go func() {
		defer close(out)
		defer ps.Close()
		ch := ps.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-ch:
				if !ok {
					return
				}
				stream, found := strings.CutPrefix(m.Channel, prefix)
				if !found {
					continue
				}
				seq, _ := strconv.ParseUint(m.Payload, 10, 64)
				select {
				case out <- query.CommitNotice{Stream: stream, Seq: seq}:
				case <-ctx.Done():
					return
				}
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
		Config: a.cfg, Catalog: a.cat, Archive: archiveStatus{l.lake, a.cat},
		RunnerBusy: batch.ErrBusy, Root: dashboard.Handler(), Logger: a.logger.With("layer", "serve"), Registry: a.reg,
		Ready: a.ready, QueryCacheBytes: a.cfg.HTTP.QueryCacheBytes,
	}
	if a.log != nil { // a nil *eventlog.Log would make a non-nil interface
		o.Log = a.log
	}
	if l.views != nil {
		o.Views = l.views
	}
	if a.qrdb != nil {
		o.Notifier = commitNotifier{rdb: a.qrdb, ns: a.cfg.Namespace}
	}
	if a.log != nil {
		a.reg.MustRegister(a.log.ConsumerCollector(a.cat.StreamOrder))
	}
	if l.qstore != nil {
		o.Speed, o.SpeedStatus = speedReader{l.qstore}, speedStatus{l.qstore}
		if l.lake != nil {
			o.Auditor = auditor{lake: l.lake, store: l.qstore, views: l.views, log: a.log, wait: 10 * time.Second}
		}
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
