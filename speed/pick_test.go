package speed_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/speed"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// pickViewsYAML: a stream of two partitions and a view of last and first.
var pickViewsYAML = strings.Replace(speed.OrdersYAML, "allowed_lateness: 1h", "allowed_lateness: 1h\n    partitions: 2", 1) + `views:
  latest:
    stream: orders
    window: 10m
    group_by: [country]
    measures: { n: count(), last_amount: last(amount), first_amount: first(amount), last_id: last(id), first_id: first(id) }
`

// pickEditedYAML adds a view, which a restart rebuilds from the log.
var pickEditedYAML = pickViewsYAML + `  latest_5m:
    stream: orders
    window: 5m
    group_by: [country]
    measures: { last_amount: last(amount), first_amount: first(amount), last_id: last(id), first_id: first(id) }
`

// TestPicksAtTheLogsPositions: the speed layer folds last and first at
// each event's place in the log — in its stream loops and in the rebuild
// of a view added by a restart — so that events whose times tie are
// picked by arrival, partition, sequence and index: the answers equal
// those computed here from the log's records as JetStream returns them
// (sequence, timestamp, events in order).
func TestPicksAtTheLogsPositions(t *testing.T) {
	ctx := context.Background()
	e := setupWith(t, pickViewsYAML)
	publish := func(n int) {
		s := e.cat.Streams["orders"]
		var recs []eventlog.Record
		for range n {
			ev := map[string]any{"ts": e.base.Add(time.Duration(e.rng.IntN(12)) * 5 * time.Minute).UnixMilli(),
				"id": fmt.Sprintf("p%d", len(e.sent)), "country": []string{"DE", "FR"}[e.rng.IntN(2)]}
			if e.rng.IntN(4) > 0 {
				ev["amount"] = float64(e.rng.IntN(1000)) / 4
			}
			e.sent = append(e.sent, ev)
			raw, _ := json.Marshal(ev)
			pe, rec, err := s.Prepare(raw, time.Now().UnixMilli())
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, eventlog.Record{ID: pe.ID, Data: rec, Part: s.PartitionOf(&pe)})
		}
		for k := 0; len(recs) > 0; k++ {
			part := recs[:min(len(recs), 1+k%5)]
			if err := e.log.Publish(ctx, "orders", part); err != nil {
				t.Fatal(err)
			}
			recs = recs[len(part):]
		}
	}
	publish(600)
	_, stop, _ := e.layer(t)
	eventually(t, "picks of the stream loops", func() string { return verifyPicks(t, e, "latest") })
	stop()
	// Records the stream loops fold after the restart, and latest_5m's
	// rebuild with the rest: its answers come from the rebuild alone.
	publish(200)

	cfg, err := config.Parse([]byte(pickEditedYAML), nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.cat, err = cfg.Compile([]byte("k")); err != nil {
		t.Fatal(err)
	}
	l := speed.New(speed.Config{BatchSize: 20, MaxWait: 20 * time.Millisecond, Epoch: time.Second, MaxCells: 100}, e.log, e.store,
		zero{}, nil, e.cat, testenv.Logger(t), nil)
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = l.Run(rctx) }()
	defer func() { cancel(); wg.Wait() }()
	eventually(t, "picks after the rebuild", func() string {
		if msg := verifyPicks(t, e, "latest"); msg != "" {
			return msg
		}
		return verifyPicks(t, e, "latest_5m")
	})
}

// logEvent is an event read back from the log, at its place there.
type logEvent struct {
	key []int64 // event time, arrival, partition, sequence, index
	ev  logic.Event
}

// verifyPicks checks a view's speed cells, merged over epochs and
// partitions, against the log read record by record: "" when every
// partition's position is at its last record and every measure equals
// the value of the latest (last) or earliest (first) event with one, by
// (time, arrival, partition, sequence, index).
func verifyPicks(t *testing.T, e *env, view string) string {
	ctx := context.Background()
	s, v := e.cat.Streams["orders"], e.cat.Views[view]
	var evs []logEvent
	for p := range e.log.Partitions("orders") {
		info, err := e.log.Info(ctx, "orders", p)
		if err != nil {
			return err.Error()
		}
		pos, _, err := e.store.Position(ctx, "orders", p)
		if err != nil {
			return err.Error()
		}
		if vp := pos.Views[v.StateKey()]; pos.Seq != info.LastSeq || !vp.JoinedOK || vp.Joined != pos.Seq {
			return fmt.Sprintf("partition %d: position %d (%s: %+v), log at %d", p, pos.Seq, view, vp, info.LastSeq)
		}
		js, err := e.log.JetStream().Stream(ctx, e.log.StreamName("orders", p))
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.FirstSeq; seq <= info.LastSeq; seq++ {
			m, err := js.GetMsg(ctx, seq)
			if err != nil {
				t.Fatal(err)
			}
			err = eventlog.Unpack(m.Data, func(i int, _, rec []byte) error {
				ev, err := s.Decode(rec)
				if err != nil {
					return err
				}
				evs = append(evs, logEvent{[]int64{ev.Time, m.Time.UnixMilli(), int64(p), int64(seq), int64(i)}, ev})
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(evs) != len(e.sent) {
		return fmt.Sprintf("the log holds %d events, %d sent", len(evs), len(e.sent))
	}
	cells, err := e.store.Read(ctx, v, 0, math.MaxInt64, 0)
	if err != nil {
		return err.Error()
	}
	got := map[string]*logic.State{}
	for _, c := range cells {
		k := fmt.Sprint(c.Window, "/", c.Group)
		if got[k] == nil {
			st := v.NewState()
			got[k] = &st
		}
		v.MergeState(got[k], c.State)
	}
	size := v.Window.Size.Milliseconds()
	byCell := map[string][]logEvent{}
	country := s.FieldIndex("country")
	for _, le := range evs {
		g := ""
		if len(v.Dims) > 0 {
			g = "s" + le.ev.Values[country].S
		}
		k := fmt.Sprint(le.ev.Time/size*size, "/", g)
		byCell[k] = append(byCell[k], le)
	}
	if len(got) != len(byCell) {
		return fmt.Sprintf("%s: %d cells, want %d", view, len(got), len(byCell))
	}
	for k, les := range byCell {
		st := got[k]
		if st == nil {
			return view + ": missing " + k
		}
		slices.SortFunc(les, func(a, b logEvent) int { return slices.Compare(a.key, b.key) })
		vals := v.Finalize(st)
		for i, m := range v.Measures {
			var want any
			switch m.Kind {
			case logic.Count:
				want = int64(len(les))
			case logic.Last, logic.First:
				f := s.FieldIndex(m.Field)
				for j := range les {
					le := les[j]
					if m.Kind == logic.Last {
						le = les[len(les)-1-j]
					}
					if x := le.ev.Values[f]; !x.Null() {
						want = x.Any()
						break
					}
				}
			}
			if vals[i] != want {
				return fmt.Sprintf("%s: cell %s: %s = %v, want %v", view, k, m.Name, vals[i], want)
			}
		}
	}
	return ""
}
