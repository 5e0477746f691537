package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/ingest"
	"github.com/braid-data/braid/storage/eventlog"
)

// cmdDLQ is `braid dlq list|replay --config F --stream S`.
func cmdDLQ(ctx context.Context, args []string) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "replay") {
		return errors.New("usage: braid dlq list|replay --config F --stream S")
	}
	sub := args[0]
	var stream, after string
	var limit int
	a, _, err := layerFlags("dlq "+sub, args[1:], func(fs *flag.FlagSet) {
		fs.StringVar(&stream, "stream", "", "stream")
		fs.IntVar(&limit, "limit", 1000, "most dead letters to list")
		fs.StringVar(&after, "after", "", "list the dead letters after this one (SEQ:INDEX, as the last one listed)")
	})
	if err != nil {
		return err
	}
	defer a.Close()
	if _, ok := a.cat.Streams[stream]; !ok {
		return fmt.Errorf("unknown stream %q", stream)
	}
	a.natsWait = -1 // a one-off command: NATS answers now, or it fails
	if _, err := a.open(ctx, deps{nats: true}); err != nil {
		return err
	}
	if sub == "list" {
		var from eventlog.Cursor
		if after != "" {
			if from, err = eventlog.ParseCursor(after); err != nil {
				return err
			}
		}
		dls, err := a.log.DeadLetters(ctx, stream, from, limit)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(os.Stdout)
		for _, d := range dls {
			if err := enc.Encode(d); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "%d dead letter(s) in %s\n", len(dls), stream)
		return nil
	}
	res, err := ingest.NewIngester(a.log, a.cat, nil).ReplayDeadLetters(ctx, stream, "replay") // a replay counts no ingest metrics
	if err != nil {
		return err
	}
	fmt.Printf("replayed=%d kept=%d unreplayable=%d\n", res.Replayed, res.Kept, res.Unreplayable)
	return nil
}

// cmdReplay is `braid replay --config F [--view V]`: it drops the speed
// state of the view's stream (every stream without --view) and rebuilds it
// from the start of the log, Kappa-style, then exits.
func cmdReplay(ctx context.Context, args []string) error {
	var view string
	a, _, err := layerFlags("replay", args, func(fs *flag.FlagSet) {
		fs.StringVar(&view, "view", "", "rebuild only the stream of this view")
	})
	if err != nil {
		return err
	}
	defer a.Close()
	var streams []string // the streams with live views: the speed layer runs only those
	for _, s := range a.cat.StreamOrder {
		if len(a.cat.SpeedViewsOf(s)) > 0 {
			streams = append(streams, s)
		}
	}
	if view != "" {
		v, ok := a.cat.Views[view]
		if !ok {
			return fmt.Errorf("unknown view %q", view)
		}
		if v.Tier != logic.TierLive {
			return fmt.Errorf("view %q is batch-tier: it keeps no speed state to replay (a batch run recomputes it)", view)
		}
		streams = []string{v.Stream.Name}
	}
	a.natsWait = -1 // a one-off command: NATS answers now, or it fails
	l, err := a.open(ctx, deps{nats: true, redis: true})
	if err != nil {
		return err
	}
	for _, s := range streams {
		var keys []string
		for _, v := range a.cat.SpeedViewsOf(s) {
			keys = append(keys, v.StateKey())
		}
		for p := range a.cat.Streams[s].Partitions {
			if err := l.store.Reset(ctx, s, p, keys); err != nil {
				return err
			}
		}
		a.logger.Info("speed state dropped; rebuilding from the start of the log", "stream", s)
	}
	a.newSpeedFrom(l, zeroCutoff{})
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.speed.Run(rctx) }()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			cancel()
			return <-done
		case <-tick.C:
		}
		caught := true
		for _, s := range streams {
			for p := range a.cat.Streams[s].Partitions {
				info, err := a.log.Info(ctx, s, p)
				if err != nil {
					return err
				}
				pos, _, err := l.store.Position(ctx, s, p)
				if err != nil {
					return err
				}
				if pos.Seq < info.LastSeq {
					caught = false
				}
			}
		}
		if caught {
			cancel()
			if err := <-done; err != nil {
				return err
			}
			fmt.Println("replay done:", streams)
			return nil
		}
	}
}

// zeroCutoff makes the speed layer rebuild from the start of the log.
type zeroCutoff struct{}

func (zeroCutoff) StreamCutoff(context.Context, string) (int64, error) { return 0, nil }
