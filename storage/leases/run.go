package leases

import (
	"context"
	"time"
)

// Run keeps this process a live member of the role and runs work for
// every partition of parts it comes to own, each in its own goroutine,
// with a context that ends when the partition must be given up: ctx
// ended, the lease was lost (another owner holds it, or it could not be
// renewed for giveUpAfter lifetimes: Redis unreachable from here for
// longer than a failover takes), or the share moved to another member.
// A member takes its first partitions one tick after it joined (unless
// Options.TakeAtOnce), so processes starting together share at once
// instead of one taking all and handing half over. The lease is released once work returned. A work that
// returns by itself (an error, or nil while its context is live) gives its
// partition up for a short pause, then takes it again if it is still this
// member's. Run returns when ctx ended and every work returned (nil: Redis
// errors are logged and retried every tick, never returned). A Group runs
// at most one Run at a time; every member of a role must pass the same
// parts.
func (g *Group) Run(ctx context.Context, parts []Partition, work func(ctx context.Context, p Partition) error) error {
	r := &runner{g: g, ctx: ctx, work: work, parts: sortedParts(parts),
		running: map[Partition]*share{}, paused: map[Partition]time.Time{}, ended: make(chan ended, len(parts))}
	return r.run()
}

// runner is one Run: the partitions this member works on, driven by one
// goroutine (every Redis call of the group is made from it, so a release
// never races a renewal of the same lease).
type runner struct {
	g     *Group
	ctx   context.Context // Run's: the works' contexts derive from it
	work  func(ctx context.Context, p Partition) error
	parts []Partition

	running map[Partition]*share    // works started and not yet returned
	paused  map[Partition]time.Time // partitions not to take again before the time
	ended   chan ended              // works that returned (one slot per partition: never blocks)
}

// share is a partition whose work is running.
type share struct {
	cancel   context.CancelFunc
	renewed  time.Time // when the last take or renewal that succeeded was sent
	stopping bool      // its context was cancelled: waiting for work to return
}

type ended struct {
	p   Partition
	err error
}

func (r *runner) run() error {
	g := r.g
	// Redis calls go on after ctx ended (releases, leaving the group).
	bg := context.WithoutCancel(r.ctx)
	done := r.ctx.Done()
	switch {
	case r.ctx.Err() != nil:
	case g.atOnce:
		r.step(bg, false)
	default:
		r.join(bg)
	}
	t := time.NewTicker(g.tick)
	defer t.Stop()
	for {
		select {
		case <-done:
			done = nil
			r.leave(bg)
		case e := <-r.ended:
			r.end(bg, e)
		case <-t.C:
			r.step(bg, done == nil)
		}
		if done == nil && len(r.running) == 0 {
			return nil
		}
	}
}

// step is one tick: renew the leases held (before the membership, so a
// lease never outlives it by more than a moment), then, unless leaving,
// renew the membership, read the live members, give up the partitions
// that moved to another member and take the free ones that are this
// member's.
func (r *runner) step(bg context.Context, leaving bool) {
	g := r.g
	ctx, cancel := context.WithTimeout(bg, g.ttl)
	defer cancel()
	for _, p := range r.parts {
		s := r.running[p]
		if s == nil {
			continue
		}
		sent := time.Now()
		ok, err := g.take(ctx, p)
		switch {
		case err == nil && ok:
			s.renewed = sent
		case err == nil:
			r.stop(p, "lease lost: another member holds it")
		case time.Since(s.renewed)+g.tick >= giveUpAfter*g.ttl:
			r.stop(p, "lease not renewed for "+(giveUpAfter*g.ttl).String()+": "+err.Error())
		default:
			g.logger.Warn("lease renewal failed; trying again", "partition", p.String(), "err", err)
		}
	}
	if leaving {
		return
	}
	members, err := g.heartbeat(ctx, true)
	if err != nil {
		g.logger.Warn("group membership not renewed; trying again", "err", err)
		return
	}
	want := assign(members, r.parts)
	now := time.Now()
	for _, p := range r.parts {
		s, mine := r.running[p], want[p] == g.owner
		switch {
		case s != nil && !mine && !s.stopping:
			r.stop(p, "moved to "+want[p])
		case s == nil && mine && !now.Before(r.paused[p]):
			sent := time.Now()
			ok, err := g.take(ctx, p)
			if err != nil {
				g.logger.Warn("lease not taken; trying again", "partition", p.String(), "err", err)
				continue
			}
			if ok {
				delete(r.paused, p)
				r.start(p, sent)
			}
		}
	}
}

// giveUpAfter is how many lease lifetimes a member goes on working on a
// partition whose lease it cannot renew (Redis unreachable, a master
// failing over: its replica takes over in a few seconds and the lease is
// taken again, the work never stopped). Another member may take the
// partition meanwhile once the lease lapsed; the work's own fencing keeps
// that correct.
const giveUpAfter = 3

// join makes this process a member without taking anything yet: the
// members starting within the tick see each other before they share.
func (r *runner) join(bg context.Context) {
	ctx, cancel := context.WithTimeout(bg, r.g.ttl)
	defer cancel()
	if _, err := r.g.heartbeat(ctx, true); err != nil {
		r.g.logger.Warn("group not joined yet; trying again", "err", err)
	}
}

// start runs work on p, whose lease was taken at sent.
func (r *runner) start(p Partition, sent time.Time) {
	wctx, cancel := context.WithCancel(r.ctx)
	r.running[p] = &share{cancel: cancel, renewed: sent}
	r.g.logger.Info("partition taken", "partition", p.String())
	go func() {
		err := r.work(wctx, p)
		r.ended <- ended{p: p, err: err}
	}()
}

// stop cancels p's work; its lease is released once it returned.
func (r *runner) stop(p Partition, why string) {
	s := r.running[p]
	if s == nil || s.stopping {
		return
	}
	s.stopping = true
	s.cancel()
	r.g.logger.Info("partition given up", "partition", p.String(), "why", why)
}

// end follows a work that returned: its lease is released; one that
// returned by itself pauses the partition.
func (r *runner) end(bg context.Context, e ended) {
	g := r.g
	s := r.running[e.p]
	delete(r.running, e.p)
	s.cancel()
	ctx, cancel := context.WithTimeout(bg, g.ttl)
	defer cancel()
	if err := g.release(ctx, e.p); err != nil {
		g.logger.Warn("lease not released (it expires)", "partition", e.p.String(), "err", err)
	}
	if !s.stopping {
		pause := g.ttl / 3
		r.paused[e.p] = time.Now().Add(pause)
		g.logger.Warn("partition work returned; giving the partition up for a pause", "partition", e.p.String(), "err", e.err, "pause", pause)
	}
}

// leave stops every work and leaves the group at once, so the other
// members share the partitions out as soon as their leases are released.
func (r *runner) leave(bg context.Context) {
	for p := range r.running {
		r.stop(p, "stopping")
	}
	ctx, cancel := context.WithTimeout(bg, r.g.ttl)
	defer cancel()
	if _, err := r.g.heartbeat(ctx, false); err != nil {
		r.g.logger.Warn("group not left (the membership expires)", "err", err)
	}
}
