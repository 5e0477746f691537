package speedstore

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/braid-data/braid/logic"
)

// CommitNotice is a commit announced on a partition's CommitChannel: the
// partition's new position.
type CommitNotice struct {
	Stream string
	Part   int
	Seq    uint64
}

// How a subscription watches its connection: a subscription quiet for
// noticePing is pinged; one that fails (a node gone, a slot moved) is
// dropped and made again noticeRetry later, when a cluster client has
// reloaded its slot map (about every second).
var (
	noticePing  = 3 * time.Second
	noticeRetry = time.Second
)

// SubscribeCommits delivers the commit notices of every partition of the
// given streams until ctx ends, then closes the channel. With sharded
// notices (ShardedNotices) it SSUBSCRIBEs to each partition's channel on
// a connection of its own (the channel's slot decides the node), else it
// SUBSCRIBEs to them all on one connection. A subscription that breaks
// (its node died, its slot moved to another node, which unsubscribes it)
// is made again, on the node that serves the slot then: notices published
// meanwhile are lost, which is what a listener must tolerate anyway.
func (s *Store) SubscribeCommits(ctx context.Context, streams []*logic.Stream) <-chan CommitNotice {
	out := make(chan CommitNotice, 256)
	byChannel := map[string]CommitNotice{}
	var chans []string
	for _, st := range streams {
		for p := range st.Partitions {
			ch := s.CommitChannel(st.Name, p)
			byChannel[ch] = CommitNotice{Stream: st.Name, Part: p}
			chans = append(chans, ch)
		}
	}
	var wg sync.WaitGroup
	listen := func(subscribe func(context.Context) *redis.PubSub) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				ps := subscribe(ctx)
				stop := context.AfterFunc(ctx, func() { _ = ps.Close() }) // ends a blocked read
				_ = receiveNotices(ctx, ps, byChannel, out)
				stop()
				_ = ps.Close()
				select {
				case <-ctx.Done():
				case <-time.After(noticeRetry):
				}
			}
		}()
	}
	switch {
	case len(chans) == 0:
	case s.sharded:
		for _, ch := range chans {
			listen(func(ctx context.Context) *redis.PubSub { return s.rdb.SSubscribe(ctx, ch) })
		}
	default:
		listen(func(ctx context.Context) *redis.PubSub { return s.rdb.Subscribe(ctx, chans...) })
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}

// errUnsubscribed: the server ended a subscription (a sharded channel's
// slot moved to another node).
var errUnsubscribed = errors.New("speedstore: unsubscribed by the server")

// receiveNotices passes one subscription's notices on until ctx ends or
// the subscription fails (an error, an unsubscription by the server).
func receiveNotices(ctx context.Context, ps *redis.PubSub, byChannel map[string]CommitNotice, out chan<- CommitNotice) error {
	for {
		msg, err := ps.ReceiveTimeout(ctx, noticePing)
		var ne net.Error
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &ne) && ne.Timeout():
			if err := ps.Ping(ctx); err != nil {
				return err
			}
			continue
		case err != nil:
			return err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "unsubscribe" || m.Kind == "sunsubscribe" {
				return errUnsubscribed
			}
		case *redis.Message:
			n, ok := byChannel[m.Channel]
			if !ok {
				continue
			}
			n.Seq, _ = strconv.ParseUint(m.Payload, 10, 64)
			select {
			case out <- n:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}
