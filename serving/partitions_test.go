package serving_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/speedstore"
	"github.com/braid-data/braid/tests/testenv"
)

// TestQueryPartitionedStream: the merged answers of a stream of three
// partitions, whose speed cells each partition committed on its own into a
// real Redis speed store (so a cell of one window and group may be in
// every partition), are the answers plain arithmetic computes from the raw
// events, with the watermark of the slowest partition, with and without
// the query cache; after one partition commits another event, the next
// answer has it.
func TestQueryPartitionedStream(t *testing.T) {
	const parts = 3
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", ID: "id", Partitions: parts,
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"device": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt},
		Required: []string{"device"}, AllowedLateness: 30 * time.Second}, []byte("test-key"))
	if err != nil {
		t.Fatal(err)
	}
	tum := testView(t, s, "orders_by_country", time.Minute, 0)
	hop := testView(t, s, "orders_sliding", time.Minute, 20*time.Second)
	views := []*logic.View{tum, hop}
	base := int64(1_764_000_000_000)
	epochs := []int64{base, base + 10_000, base + 20_000, base + 30_000}
	cutoff := base + 20_000
	r := rand.New(rand.NewPCG(17, 4))
	evs := testenv.RandomOrderEvents(r, 400, base, 20*minute, epochs)
	lev := prepare(t, s, evs)

	rdb := testenv.StartRedis(t).Client(t)
	st := speedstore.New(rdb, testenv.Namespace(t))
	ctx := context.Background()
	seqs := make([]uint64, parts)
	maxTS := make([]int64, parts)
	// commit folds events (indices into evs, all of partition p) into p's
	// cells as one micro-batch.
	commit := func(p int, idx []int) {
		t.Helper()
		deltas := make([]*logic.Delta, len(views))
		for i, v := range views {
			deltas[i] = v.NewDelta()
			for _, j := range idx {
				deltas[i].Fold(evs[j].Epoch, &lev[j])
				maxTS[p] = max(maxTS[p], evs[j].TS)
			}
		}
		if err := st.Commit(ctx, s.Name, p, seqs[p], speedstore.Position{Seq: seqs[p] + 1, Watermark: maxTS[p], Owner: "test"}, 0, deltas); err != nil {
			t.Fatal(err)
		}
		seqs[p]++
	}
	byPart := make([][]int, parts)
	for i := range lev {
		p := s.PartitionOf(&lev[i])
		byPart[p] = append(byPart[p], i)
	}
	for p, idx := range byPart {
		if len(idx) < 20 {
			t.Fatalf("partition %d has %d events", p, len(idx))
		}
		// Two micro-batches per partition.
		commit(p, idx[:len(idx)/2])
		commit(p, idx[len(idx)/2:])
	}

	vs, err := batchviews.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ver := &batchviews.Version{Views: map[string]batchviews.ViewVersion{}}
	rows := map[string][]batchviews.Row{}
	for _, v := range views {
		b, _ := split(v, evs, lev, cutoff)
		rows[v.Name] = b
		ver.Views[v.Name] = batchviews.ViewVersion{Cutoff: cutoff, Definition: v.Definition()}
	}
	if err := vs.Publish(ver, rows); err != nil {
		t.Fatal(err)
	}

	// The stream's watermark: the smallest partition's largest event time
	// (no partition is idle), less the allowed lateness.
	watermark := func() int64 {
		wm := maxTS[0]
		for _, m := range maxTS[1:] {
			wm = min(wm, m)
		}
		return wm - s.AllowedLateness.Milliseconds()
	}
	cat := testCatalog(s, views...)
	check := func(h *httptest.Server, label string) {
		t.Helper()
		for _, tc := range []struct {
			v     *logic.View
			query string
			eq    expQuery
			keep  []string
		}{
			{tum, "", expQuery{}, []string{"country", "device"}},
			{tum, "&step=5m&group_by=country", expQuery{step: 5 * minute, groupBy: []string{"country"}}, []string{"country"}},
			{hop, "", expQuery{}, []string{"country", "device"}},
			{hop, "&step=all&group_by=device", expQuery{all: true, groupBy: []string{"device"}}, []string{"device"}},
		} {
			from, to := base+90_000, base+21*minute
			q := fmt.Sprintf("from=%s&to=%s%s", url.QueryEscape(logic.FormatTime(from)), url.QueryEscape(logic.FormatTime(to)), tc.query)
			code, _, body := get(t, h.URL+"/v1/views/"+tc.v.Name+"?"+q)
			if code != 200 {
				t.Fatalf("%s: %s %s: %d %s", label, tc.v.Name, q, code, body)
			}
			a := decodeAnswer(t, body)
			wm := watermark()
			if a.Watermark == nil || *a.Watermark != logic.FormatTime(wm) {
				t.Fatalf("%s: %s: watermark %v, want %s", label, q, a.Watermark, logic.FormatTime(wm))
			}
			tc.eq.from, tc.eq.to, tc.eq.cutoff, tc.eq.watermark = from, to, cutoff, wm
			want := expected(minute, tc.v.Window.Hop.Milliseconds(), evs, tc.eq)
			if len(want) == 0 {
				t.Fatalf("%s: %s: the test expects no rows", label, q)
			}
			checkJSONRows(t, label+" "+tc.v.Name+" "+q, tc.v, tc.keep, a.Rows, want)
		}
	}
	for _, cache := range []int64{0, 64 << 20} {
		speed := &storeSpeed{st: st, cat: cat}
		srv, err := serving.New(serving.Options{Catalog: cat, Speed: speed, SpeedStatus: speed, Views: vs, QueryCacheBytes: cache,
			Registry: prometheus.NewRegistry(), Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		h := httptest.NewServer(srv.Handler())
		t.Cleanup(h.Close)
		label := fmt.Sprintf("cache %d", cache)
		check(h, label)
		check(h, label+", again")

		// One more event, in the slowest partition: its commit moves that
		// partition alone (and the watermark with it).
		slowest := 0
		for p := range maxTS {
			if maxTS[p] < maxTS[slowest] {
				slowest = p
			}
		}
		c := "DE"
		ev := testenv.OrderEvent{Epoch: base + 30_000, TS: maxTS[slowest] + 1_000, Country: &c, Device: "web", Amount: flt(2.5)}
		var le logic.Event
		for i := 0; ; i++ { // an id that sends it to the slowest partition
			if le, _, err = s.Prepare([]byte(ev.JSON(fmt.Sprint("extra-", cache, "-", i))), 0); err != nil {
				t.Fatal(err)
			}
			if s.PartitionOf(&le) == slowest {
				break
			}
		}
		evs, lev = append(evs, ev), append(lev, le)
		commit(slowest, []int{len(evs) - 1})
		check(h, label+", after a commit of partition "+fmt.Sprint(slowest))
	}
}
