package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	ID    uint64
	Event string
	Data  string
}

// openSSE connects to an event stream and delivers its events on a
// channel (closed when the stream ends). cancel ends the connection.
func openSSE(t *testing.T, url, lastID string) (<-chan sseEvent, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("live: %v", err)
	}
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("live: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	ch := make(chan sseEvent, 1024)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		var ev sseEvent
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			switch {
			case line == "":
				if ev.Event != "" || ev.Data != "" {
					ch <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"), strings.HasPrefix(line, "retry:"):
			case strings.HasPrefix(line, "id: "):
				ev.ID, _ = strconv.ParseUint(strings.TrimPrefix(line, "id: "), 10, 64)
			case strings.HasPrefix(line, "event: "):
				ev.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.Data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	t.Cleanup(cancel)
	return ch, cancel
}

// liveState applies snapshot/rows/final events to a row map keyed by
// window|country.
type liveState struct {
	rows   map[string]map[string]any
	kinds  map[string]int
	lastID uint64
}

func (s *liveState) apply(t *testing.T, ev sseEvent) {
	t.Helper()
	if ev.ID <= s.lastID {
		t.Fatalf("event ids not increasing: %d after %d", ev.ID, s.lastID)
	}
	s.lastID = ev.ID
	s.kinds[ev.Event]++
	switch ev.Event {
	case "snapshot", "rows", "final":
	default:
		return
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(ev.Data), &rows); err != nil {
		t.Fatalf("%s event data %q: %v", ev.Event, ev.Data, err)
	}
	if ev.Event != "snapshot" && len(rows) == 0 {
		t.Fatalf("empty %s event", ev.Event)
	}
	for _, r := range rows {
		if ev.Event == "final" && r["final"] != true {
			t.Fatalf("final event with a non-final row %v", r)
		}
		s.rows[fmt.Sprint(r["window_start"])+"|"+fmt.Sprint(r["country"])] = r
	}
}

func (s *liveState) answer() queryResp {
	var q queryResp
	for _, r := range s.rows {
		q.Rows = append(q.Rows, r)
	}
	return q
}

// drainUntil applies events until check() returns "" (or fails after the
// deadline with the last mismatch).
func drainUntil(t *testing.T, ch <-chan sseEvent, st *liveState, what string, check func() string) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	last := check()
	for last != "" {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("%s: the event stream ended: %s", what, last)
			}
			st.apply(t, ev)
			last = check()
		case <-deadline:
			t.Fatalf("%s: still not true after 60s: %s (events so far %v)", what, last, st.kinds)
		}
	}
}

// TestLivePush runs `braid up` with a real Redis, opens a live stream of a
// view, POSTs events and checks that the pushed rows add up to the events'
// aggregates (computed independently), that past windows arrive as `final`,
// and that a reconnect with Last-Event-ID starts with a full snapshot.
func TestLivePush(t *testing.T) {
	cat := testenv.E2E()
	cat.Stream("orders").Lateness = "1m"
	st0 := testenv.Up(t, cat.YAML())
	st0.WaitViewsReady() // a live query of a rebuilding view is refused (503)
	base := st0.Base

	now := time.Now().UTC()
	start := now.Truncate(time.Minute).Add(-90 * time.Minute)
	from, to := start, now.Truncate(time.Minute).Add(10*time.Minute)
	url := fmt.Sprintf("%s/v1/views/orders_by_country/live?from=%s&to=%s", base, from.Format(time.RFC3339), to.Format(time.RFC3339))

	ch, cancel := openSSE(t, url, "")
	st := &liveState{rows: map[string]map[string]any{}, kinds: map[string]int{}}
	select {
	case ev := <-ch:
		st.apply(t, ev)
		if ev.Event != "snapshot" || ev.Data != "[]" {
			t.Fatalf("first event %+v, want an empty snapshot", ev)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no snapshot within 30s")
	}

	// Old events first, in event-time order (with 1m of allowed lateness a
	// shuffled order would make the speed layer drop some as too late).
	rng := rand.New(rand.NewPCG(3, 9))
	past := genOrders(rng, start, 300, 0)
	slices.SortFunc(past, func(a, b order) int { return strings.Compare(a.TS, b.TS) })
	if r := post(t, base, ndjson(past)); r.Accepted != len(past) {
		t.Fatalf("ingest: %+v", r)
	}
	drainUntil(t, ch, st, "live rows of the past events", func() string {
		return compare(st.answer(), expect(past), "speed")
	})
	// Then recent ones: their windows are not final, the watermark moves and
	// the rest of the past windows become final.
	recent := genOrders(rng, start, 40, 300)
	for i := range recent {
		recent[i].TS = now.Add(-time.Duration(rng.Int64N(int64(20 * time.Second)))).Format(time.RFC3339Nano)
	}
	if r := post(t, base, ndjson(recent)); r.Accepted != len(recent) {
		t.Fatalf("ingest: %+v", r)
	}
	all := append(append([]order{}, past...), recent...)
	want := expect(all)
	drainUntil(t, ch, st, "live rows", func() string {
		if msg := compare(st.answer(), want, "speed"); msg != "" {
			return msg
		}
		if st.kinds["rows"] == 0 || st.kinds["final"] == 0 {
			return fmt.Sprintf("events %v: want rows and final", st.kinds)
		}
		// Every window well behind the watermark (now - 20s - 1m) was pushed as final.
		for k, r := range st.rows {
			ws, _ := time.Parse(time.RFC3339, strings.Split(k, "|")[0])
			if ws.Add(time.Minute).Before(now.Add(-3*time.Minute)) && r["final"] != true {
				return fmt.Sprintf("row %s of an old window is not final yet", k)
			}
		}
		return ""
	})
	finals := 0
	for _, r := range st.rows {
		if r["final"] == true {
			finals++
		}
	}
	t.Logf("live: %d rows (%d final) from %v", len(st.rows), finals, st.kinds)
	cancel()

	// Reconnect with Last-Event-ID: a full snapshot first, numbering continues.
	ch2, cancel2 := openSSE(t, url, strconv.FormatUint(st.lastID, 10))
	defer cancel2()
	select {
	case ev := <-ch2:
		if ev.Event != "snapshot" || ev.ID != st.lastID+1 {
			t.Fatalf("after reconnect: event %q id %d, want snapshot id %d", ev.Event, ev.ID, st.lastID+1)
		}
		st2 := &liveState{rows: map[string]map[string]any{}, kinds: map[string]int{}, lastID: st.lastID}
		st2.apply(t, ev)
		if msg := compare(st2.answer(), want, "speed"); msg != "" {
			t.Fatalf("snapshot after reconnect: %s", msg)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no snapshot after reconnect within 30s")
	}
	eventually(t, "braid_sse_clients gauge", 30*time.Second, func() string {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "braid_sse_clients "); ok {
				if n, _ := strconv.ParseFloat(v, 64); n == 1 && !math.IsNaN(n) {
					return ""
				}
				return "braid_sse_clients " + v
			}
		}
		return "no braid_sse_clients metric"
	})
}
