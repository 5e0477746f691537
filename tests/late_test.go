package tests

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

func lateCatalog() testenv.Catalog {
	c := testenv.Fast()
	c.Archive = "max_rows: 1000, max_delay: 200ms"
	c.Speed = "batch_size: 100, max_wait: 50ms"
	c.Streams = []testenv.Stream{{
		Name: "events", Time: "ts", ID: "id", Lateness: "1m", MaxFuture: "5m",
		Fields: []string{"ts: time", "id: string", "kind: string"}, Required: []string{"kind"},
	}}
	c.Views = []testenv.View{{Name: "events_per_min", Stream: "events", Window: "1m", GroupBy: []string{"kind"}, Measures: []string{"n: count()"}}}
	return c
}

// lateStatus is the part of /v1/status this test reads.
type lateStatus struct {
	Streams map[string]struct {
		Accepted uint64 `json:"accepted"`
		Rejected uint64 `json:"rejected"`
		Late     uint64 `json:"late"`
		Log      struct {
			LastSeq uint64 `json:"last_seq"`
		} `json:"log"`
		Speed struct {
			Seq uint64  `json:"seq"`
			Lag *uint64 `json:"lag"`
		} `json:"speed"`
	} `json:"streams"`
}

func viewRows(t *testing.T, base, view string, from, to time.Time, extra string) []map[string]any {
	t.Helper()
	var q queryResp
	url := fmt.Sprintf("%s/v1/views/%s?from=%s&to=%s%s", base, view, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), extra)
	if code := httpJSON(t, "GET", url, "", nil, &q); code != 200 {
		t.Fatalf("query %s: status %d", url, code)
	}
	return q.Rows
}

// TestLateData: an event older than the allowed lateness is skipped by the
// speed layer (counted as late in /v1/status, no speed row for its window)
// and counted by the next batch run whose cutoff passes its arrival; an
// event beyond max_future is dead-lettered with its reason.
func TestLateData(t *testing.T) {
	base := testenv.Up(t, lateCatalog().YAML()).Base
	const view = "events_per_min"
	status := func() lateStatus {
		var s lateStatus
		if code := httpJSON(t, "GET", base+"/v1/status", "", nil, &s); code != 200 {
			t.Fatalf("status: %d", code)
		}
		return s
	}
	postEvents := func(lines ...string) ingestResp {
		var r ingestResp
		if code := httpJSON(t, "POST", base+"/v1/streams/events/events", "application/x-ndjson", []byte(strings.Join(lines, "\n")), &r); code != 200 {
			t.Fatalf("ingest: status %d", code)
		}
		return r
	}
	ev := func(id string, ts time.Time) string {
		return fmt.Sprintf(`{"id":%q,"ts":%q,"kind":"a"}`, id, ts.UTC().Format(time.RFC3339Nano))
	}

	// 1. Five events now: the speed layer's watermark moves to now - 1m.
	now := time.Now().UTC()
	if r := postEvents(ev("n1", now), ev("n2", now), ev("n3", now), ev("n4", now), ev("n5", now)); r.Accepted != 5 {
		t.Fatalf("ingest now: %+v", r)
	}
	eventually(t, "speed layer folds the first 5", 60*time.Second, func() string {
		s := status().Streams["events"]
		if s.Speed.Seq != 1 || s.Log.LastSeq != 1 { // one request: one log record
			return fmt.Sprintf("speed seq %d, log last_seq %d", s.Speed.Seq, s.Log.LastSeq)
		}
		return ""
	})

	// 2. One event 10 minutes old: too late for the speed layer.
	lateTS := now.Add(-10 * time.Minute)
	if r := postEvents(ev("late1", lateTS)); r.Accepted != 1 {
		t.Fatalf("ingest late: %+v", r)
	}
	lateArrivedBy := time.Now()
	eventually(t, "late event counted in /v1/status", 60*time.Second, func() string {
		s := status().Streams["events"]
		if s.Late != 1 || s.Speed.Seq != 2 {
			return fmt.Sprintf("late %d, speed seq %d", s.Late, s.Speed.Seq)
		}
		return ""
	})
	lateWin := lateTS.Truncate(time.Minute)
	if rows := viewRows(t, base, view, lateWin, lateWin.Add(time.Minute), ""); len(rows) != 0 {
		t.Fatalf("the late event's window has speed rows before a batch run: %v", rows)
	}
	nowWin := now.Truncate(time.Minute)
	if rows := viewRows(t, base, view, nowWin, nowWin.Add(time.Minute), ""); len(rows) != 1 || rows[0]["n"] != 5.0 || rows[0]["source"] != "speed" {
		t.Fatalf("current window: %v, want n=5 from speed", rows)
	}

	// 3. An event beyond max_future is rejected into the dead-letter queue.
	r := postEvents(ev("fut1", now.Add(time.Hour)))
	if r.Accepted != 0 || r.Rejected != 1 || !strings.Contains(r.Errors[0].Error, "ahead of the clock") {
		t.Fatalf("future event: %+v", r)
	}
	var dlq struct {
		Events []struct {
			Reason  string         `json:"reason"`
			Field   string         `json:"field"`
			Source  string         `json:"source"`
			Time    time.Time      `json:"time"`
			Payload map[string]any `json:"payload"`
		} `json:"events"`
	}
	if code := httpJSON(t, "GET", base+"/v1/dlq/events", "", nil, &dlq); code != 200 || len(dlq.Events) != 1 {
		t.Fatalf("dlq: status %d, %+v", code, dlq)
	}
	if d := dlq.Events[0]; !strings.Contains(d.Reason, "ahead of the clock") || d.Field != "ts" || d.Source != "http" || d.Time.IsZero() || d.Payload["id"] != "fut1" {
		t.Fatalf("dead letter: %+v", d)
	}

	// 4. Batch runs until the cutoff passes the late event's arrival: then
	// its window shows it, counted by the batch layer.
	var cutoff int64
	eventually(t, "a batch cutoff past the late event", 120*time.Second, func() string {
		var run struct {
			Status  string     `json:"status"`
			Error   string     `json:"error"`
			Cutoffs runCutoffs `json:"cutoffs"`
		}
		if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 || run.Status != "succeeded" {
			return fmt.Sprintf("batch run: status %d %+v", code, run)
		}
		if cutoff = run.Cutoffs.ms(view); cutoff <= lateArrivedBy.UnixMilli() {
			return fmt.Sprintf("cutoff %s not past the late arrival %s", time.UnixMilli(cutoff).UTC(), lateArrivedBy.UTC())
		}
		return ""
	})
	rows := viewRows(t, base, view, lateWin, lateWin.Add(time.Minute), "")
	if len(rows) != 1 || rows[0]["n"] != 1.0 || rows[0]["source"] != "batch" || rows[0]["kind"] != "a" {
		t.Fatalf("late window after the batch run: %v, want n=1 from batch", rows)
	}
	// Nothing doubled: the six accepted events, once each.
	all := viewRows(t, base, view, now.Add(-15*time.Minute).Truncate(time.Minute), now.Add(2*time.Minute), "&step=all&group_by=")
	if len(all) != 1 || all[0]["n"] != 6.0 {
		t.Fatalf("total over the range: %v, want n=6", all)
	}
	if s := status().Streams["events"]; s.Late != 1 || s.Accepted != 6 || s.Rejected != 1 {
		t.Fatalf("status after the batch run: %+v", s)
	}
	t.Logf("late event: skipped by speed (late=1), counted by batch after cutoff %s; future event dead-lettered", time.UnixMilli(cutoff).UTC().Format(time.RFC3339))
}
