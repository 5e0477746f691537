package speed

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/speedstore"
)

// A view whose definition the store has not seen (new, or changed since
// its state was written) is rebuilt while the stream's other views go on:
// the stream loop keeps folding it, but its commits skip it until it has
// joined them (speedstore.Commit); meanwhile rebuildView folds the records
// from the batch cutoff up to the stream's position into the view alone,
// in commits of its own, and the one that reaches the position joins the
// view to the stream's commits (speedstore.CommitRebuild). Too-late
// decisions are the stream loop's: the rebuild skips the events the late
// subject lists, as the stream loop did.

// maxLateRebuild bounds the too-late records a rebuild reads.
const maxLateRebuild = 1_000_000

// prepareViews brings the store in line with the catalog for a stream
// whose position was found: the state of removed views and of other
// definitions of this stream's views is deleted, and the views that have
// not joined the stream's commits (or fell out of step with them: a
// process with another configuration committed without them) are
// returned, to be rebuilt.
func (l *Layer) prepareViews(ctx context.Context, s *logic.Stream, p int, views []*logic.View, pos speedstore.Position) ([]*logic.View, error) {
	current := map[string]bool{}
	for _, v := range views {
		current[v.StateKey()] = true
	}
	keys, err := l.store.StateKeys(ctx)
	if err != nil {
		return nil, err
	}
	for k := range pos.Views {
		keys = append(keys, k)
	}
	dropped := map[string]bool{}
	for _, k := range keys {
		name, _ := logic.SplitStateKey(k)
		v := l.cat.Views[name]
		mine := v != nil && v.Stream.Name == s.Name
		_, inPos := pos.Views[k]
		if current[k] || dropped[k] || (!mine && v != nil && !inPos) {
			continue // current, or another stream's view: that stream's loop decides
		}
		dropped[k] = true
		l.logger.Info("deleting the speed state of a removed or redefined view", "stream", s.Name, "state", k)
		if err := l.store.DropState(ctx, s.Name, p, k); err != nil {
			return nil, err
		}
		// A rebuild of that state cut short left its consumer behind.
		if err := l.log.DeleteConsumer(ctx, s.Name, p, rebuildConsumer(logic.SplitStateKey(k))); err != nil {
			l.logger.Warn("delete a rebuild's consumer", "state", k, "err", err)
		}
	}
	var rebuild []*logic.View
	for _, v := range views {
		vp := pos.Views[v.StateKey()]
		switch {
		case vp.JoinedOK && vp.Joined == pos.Seq:
			continue
		case vp.JoinedOK:
			l.logger.Warn("a view fell out of step with its stream's commits (another configuration wrote them?); rebuilding it",
				"view", v.Name, "joined", vp.Joined, "position", pos.Seq)
			if err := l.store.DropState(ctx, s.Name, p, v.StateKey()); err != nil {
				return nil, err
			}
		}
		rebuild = append(rebuild, v)
	}
	return rebuild, nil
}

// dropIdle deletes the speed state of a stream that has no live view any
// more (its views were removed or became batch-tier): each partition's
// position and the cells of every view it lists, so the stream costs no
// Redis, and its consumer of the log. The speed layer runs no loop for
// such a stream, so nothing commits there meanwhile; a live view added
// later starts it afresh from the batch cutoff. A failure is logged and
// tried again at the next start.
func (l *Layer) dropIdle(ctx context.Context, stream string) {
	s := l.cat.Streams[stream]
	for p := range s.Partitions {
		// Its consumer would otherwise show a lag that grows for ever.
		if err := l.log.DeleteConsumer(ctx, stream, p, "speed"); err != nil {
			l.logger.Warn("delete the speed consumer of a stream without live views", "stream", stream, "partition", p, "err", err)
		}
		pos, found, err := l.store.Position(ctx, stream, p)
		if err != nil {
			l.logger.Warn("read the position of a stream without live views", "stream", stream, "partition", p, "err", err)
			continue
		}
		if !found {
			continue
		}
		keys := make([]string, 0, len(pos.Views))
		for k := range pos.Views {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		l.logger.Info("deleting the speed state of a stream without live views", "stream", stream, "partition", p, "states", keys)
		if err := l.store.Reset(ctx, stream, p, keys); err != nil {
			l.logger.Warn("delete the speed state of a stream without live views", "stream", stream, "partition", p, "err", err)
			continue
		}
		for _, k := range keys {
			// A rebuild of that state cut short left its consumer behind.
			if err := l.log.DeleteConsumer(ctx, stream, p, rebuildConsumer(logic.SplitStateKey(k))); err != nil {
				l.logger.Warn("delete a rebuild's consumer", "state", k, "err", err)
			}
		}
	}
}

// rebuildConsumer names the durable consumer of a view's rebuild.
func rebuildConsumer(view, definition string) string { return "rebuild_" + view + "_" + definition }

// startRebuilds rebuilds views one after the other in the background
// until each has joined or ctx ends; the returned func cancels and waits.
func (l *Layer) startRebuilds(ctx context.Context, s *logic.Stream, p int, views []*logic.View) (stop func()) {
	if len(views) == 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, v := range views {
			pause := 200 * time.Millisecond
			for ctx.Err() == nil {
				err := l.rebuildView(ctx, s, p, v)
				if err == nil || ctx.Err() != nil {
					break
				}
				l.logger.Warn("view rebuild failed; trying again", "view", v.Name, "err", err, "pause", pause)
				select {
				case <-ctx.Done():
				case <-time.After(pause):
				}
				pause = min(2*pause, 5*time.Second)
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// rebuildView folds a view's records from the batch cutoff up to the
// stream's position, chasing it, until the view joins the stream's
// commits. It resumes a rebuild a previous process began.
func (l *Layer) rebuildView(ctx context.Context, s *logic.Stream, p int, v *logic.View) error {
	key := v.StateKey()
	var from int64
	if l.cutoffs != nil {
		var err error
		if from, err = l.cutoffs.StreamCutoff(ctx, s.Name); err != nil {
			return fmt.Errorf("speed: cutoff of %s: %w", s.Name, err)
		}
	}
	rb, err := l.store.BeginRebuild(ctx, s.Name, p, key, from)
	switch {
	case errors.Is(err, speedstore.ErrJoined), errors.Is(err, speedstore.ErrNoPosition):
		return nil // joined already, or the stream was reset: its next commit joins every view
	case err != nil:
		return err
	}
	consumer := rebuildConsumer(v.Name, v.Definition())
	start := eventlog.Start{Seq: rb.Rebuilt + 1}
	if rb.Rebuilt == 0 {
		start = eventlog.Start{}
		if rb.From > 0 {
			start.Time = time.UnixMilli(rb.From)
		}
	}
	c, err := l.log.Consumer(ctx, s.Name, p, consumer, start, 4*l.cfg.BatchSize)
	if err != nil {
		return err
	}
	defer c.Close()
	l.logger.Info("rebuilding a view from the log", "view", v.Name, "definition", v.Definition(),
		"from_arrival", logic.FormatTime(rb.From), "resume_after", rb.Rebuilt)
	t0 := time.Now()

	var (
		rebuilt  = rb.Rebuilt // committed through
		first    uint64       // the first record folded, when the rebuild began with this run
		seen     = rebuilt    // folded (or passed over) through
		d        = v.NewDelta()
		n        int // records folded since the last commit
		last     eventlog.Msg
		pending  []eventlog.Msg // delivered past the stream's position
		late     = map[eventlog.EventRef]bool{}
		lateUpTo uint64
		folded   int
	)
	fold := func(m eventlog.Msg) {
		seen = m.Seq
		last = m
		n++
		epoch := logic.EpochOf(m.Arrival, l.cfg.Epoch)
		if epoch < rb.From {
			return // arrived before the cutoff: the batch layer holds it
		}
		if first == 0 && rebuilt == 0 {
			first = m.Seq
		}
		err := eventlog.Unpack(m.Data, func(i int, _, rec []byte) error {
			if late[eventlog.EventRef{Part: p, Seq: m.Seq, Index: i}] {
				return nil
			}
			ev, err := s.Decode(rec)
			if err != nil {
				l.m.decodeErrors.WithLabelValues(s.Name).Inc()
				l.logger.Error("BUG: undecodable event in the clean log skipped", "stream", s.Name, "seq", m.Seq, "index", i, "err", err)
				return nil
			}
			d.FoldAt(epoch, logic.LogPos{Arrival: m.Arrival, Part: p, Seq: m.Seq, Index: i}, &ev)
			folded++
			return nil
		})
		if err != nil {
			l.m.decodeErrors.WithLabelValues(s.Name).Inc()
			l.logger.Error("BUG: malformed record in the clean log skipped", "stream", s.Name, "seq", m.Seq, "err", err)
		}
	}
	for {
		pos, found, err := l.store.Position(ctx, s.Name, p)
		if err != nil {
			return err
		}
		if vp := pos.Views[key]; !found || vp.JoinedOK {
			return nil
		}
		// The stream's commits publish their too-late records before they
		// move the position, so the late subject read after the position
		// lists every too-late event up to it. It is read again only once
		// everything up to the last reading is folded, and the rebuild
		// never folds past that reading.
		target := pos.Seq
		if seen >= lateUpTo && lateUpTo < target {
			refs, err := l.log.LateEvents(ctx, s.Name, maxLateRebuild)
			if err != nil {
				return err
			}
			clear(late)
			for _, r := range refs {
				if r.Part == p && r.Seq > seen {
					late[r] = true
				}
			}
			lateUpTo = target
		}
		target = min(target, lateUpTo)
		for len(pending) > 0 && pending[0].Seq <= target {
			if pending[0].Seq > seen {
				fold(pending[0])
			}
			pending = pending[1:]
		}
		reached := seen >= target || len(pending) > 0 // records past the position came: every one before it did
		if !reached {
			msgs, err := c.Fetch(ctx, l.cfg.BatchSize, 4*l.cfg.MaxWait)
			if err != nil {
				return err
			}
			for _, m := range msgs {
				switch {
				case m.Seq <= seen:
				case m.Seq <= target:
					fold(m)
				default:
					pending = append(pending, m)
				}
			}
			reached = seen >= target || len(pending) > 0
			if !reached && len(msgs) == 0 {
				// Nothing came: when the server has nothing left for us
				// and nothing on its way, the records up to the position
				// are all folded (the rest were never there, or left the
				// log).
				if info, err := c.Info(ctx); err == nil && info.Pending == 0 && info.Delivered <= seen {
					reached = true
				}
			}
		}
		if !reached && n < l.cfg.BatchSize && d.Len() <= l.cfg.MaxCells {
			continue
		}
		next := seen
		if reached {
			next = target
		}
		joined, err := l.store.CommitRebuild(ctx, s.Name, p, rebuilt, first, next, d)
		if err != nil {
			return err
		}
		if last.Seq != 0 {
			_ = c.AckNoWait(last)
		}
		rebuilt, seen = next, max(seen, next)
		d.Reset()
		n = 0
		if joined {
			c.Close()
			if err := l.log.DeleteConsumer(context.WithoutCancel(ctx), s.Name, p, consumer); err != nil {
				l.logger.Warn("delete the rebuild's consumer", "consumer", consumer, "err", err)
			}
			l.logger.Info("view rebuilt from the log; it takes part in the stream's commits", "view", v.Name,
				"position", next, "events", folded, "took", time.Since(t0).Round(time.Millisecond))
			return nil
		}
	}
}
