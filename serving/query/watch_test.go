package query

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
)

// TestRowsMatchesTheEvents: Engine.Rows answers the rows plain arithmetic
// computes from the raw events, with the inputs they were computed at.
func TestRowsMatchesTheEvents(t *testing.T) {
	s := testStream(t)
	v := testView(t, s, "tum", time.Minute, 0)
	env := newEngineEnv(t, 12, v)
	e := newEngine(t, env, 64<<20, 0, v)
	from, to := env.base-60_000, env.base+20*60_000
	ans, err := e.Rows(context.Background(), v, env.query(v, from, to, "csv"))
	if err != nil {
		t.Fatal(err)
	}
	ver, err := env.views.Current()
	if err != nil {
		t.Fatal(err)
	}
	if ans.Version != ver.ID || ans.Cutoff != env.cutoff || ans.Watermark != env.wm {
		t.Fatalf("inputs: version %q cutoff %d watermark %d, want %q %d %d", ans.Version, ans.Cutoff, ans.Watermark, ver.ID, env.cutoff, env.wm)
	}
	// As the JSON answer renders them, for checkJSON.
	var rows []map[string]any
	for _, r := range ans.Rows {
		m := map[string]any{"window_start": logic.FormatTime(r.Window), "source": r.Source, "final": r.Final, "exact": r.Exact}
		for i, d := range v.Dims {
			m[d] = r.Dims[i].Any()
		}
		for i := range v.Measures {
			m[v.Measures[i].Name] = r.Values[i]
		}
		rows = append(rows, m)
	}
	b, _ := json.Marshal(map[string]any{"rows": rows})
	checkJSON(t, "rows", b, expect(env.evs, 60_000, 60_000, from, to, env.cutoff, env.wm))
}

// TestWatch: a watcher of a stream is told of its commits and of new
// batch versions, not of other streams' commits; values coalesce; after
// stop nothing is sent.
func TestWatch(t *testing.T) {
	s := testStream(t)
	v := testView(t, s, "tum", time.Minute, 0)
	env := newEngineEnv(t, 13, v)
	cat := &config.Catalog{Streams: map[string]*logic.Stream{s.Name: s}, Views: map[string]*logic.View{v.Name: v}, StreamOrder: []string{s.Name}, ViewOrder: []string{v.Name}}
	ch := make(notices, 4)
	e, err := New(Options{Catalog: cat, Speed: env.speed, SpeedStatus: env.speed, Views: env.views, Notifier: ch, LivePoll: 20 * time.Millisecond, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	w, stop := e.Watch(s.Name)
	other, stopOther := e.Watch("elsewhere")
	defer stopOther()
	told := func(c <-chan struct{}) bool {
		select {
		case <-c:
			return true
		case <-time.After(5 * time.Second):
			return false
		}
	}
	ch <- CommitNotice{Stream: s.Name, Part: 0, Seq: 100}
	ch <- CommitNotice{Stream: s.Name, Part: 1, Seq: 100}
	if !told(w) {
		t.Fatal("a commit of the stream was not told")
	}
	select {
	case <-other:
		t.Fatal("a commit of another stream was told")
	default:
	}
	env.publish(t, env.cutoff+10_000, v)
	if !told(w) || !told(other) {
		t.Fatal("a new batch version was not told to every watcher")
	}
	stop()
	stop()   // once
	select { // a value told before the stop
	case <-w:
	default:
	}
	ch <- CommitNotice{Stream: s.Name, Part: 0, Seq: 101}
	time.Sleep(100 * time.Millisecond)
	select {
	case <-w:
		t.Fatal("a stopped watcher was told")
	default:
	}
}
