package serving_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/tests/testenv"
)

var errBusyTest = errors.New("runner busy")

// fakeRunner records runs in a real batchviews store, like batch.Runner.
type fakeRunner struct {
	mu    sync.Mutex
	store *batchviews.Store
	busy  bool
	calls [][]string
}

func (f *fakeRunner) Run(_ context.Context, views []string) (batchviews.Run, error) {
	f.mu.Lock()
	f.calls = append(f.calls, views)
	f.mu.Unlock()
	now := time.Now().UTC()
	r := batchviews.Run{ID: batchviews.NewID(), Status: batchviews.StatusSucceeded, Views: views, Started: now, Finished: now, RowsRead: 42}
	return r, f.store.SaveRun(r)
}

func (f *fakeRunner) Start(views []string) (string, error) {
	f.mu.Lock()
	busy := f.busy
	f.mu.Unlock()
	if busy {
		return "", fmt.Errorf("start: %w", errBusyTest)
	}
	r, err := f.Run(context.Background(), views)
	return r.ID, err
}

type fakeArchive struct{}

func (fakeArchive) ArchiveCheckpoint(context.Context, string, int) (serving.ArchivePosition, error) {
	return serving.ArchivePosition{Seq: 3, CoveredUntil: 1_764_000_000_000}, nil
}

func do(t *testing.T, method, url, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func TestBatchRunsStatusHealth(t *testing.T) {
	s := testenv.OrdersStream(t)
	v := testView(t, s, "v", time.Minute, 0)
	st, err := batchviews.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Publish(&batchviews.Version{Views: map[string]batchviews.ViewVersion{"v": {Cutoff: 1_764_000_000_000, Definition: v.Definition()}}}, map[string][]batchviews.Row{"v": nil}); err != nil {
		t.Fatal(err)
	}
	runner := &fakeRunner{store: st}
	ready := errors.New("warming up")
	var readyMu sync.Mutex
	root := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "dashboard "+r.URL.Path) })
	speed := &fakeSpeed{wm: time.Now().Add(-time.Minute).UnixMilli(), seq: 2, joined: []*logic.View{v}}
	srv, err := serving.New(serving.Options{Catalog: testCatalog(s, v), Views: st, Runner: runner, RunnerBusy: errBusyTest,
		SpeedStatus: speed, Archive: fakeArchive{}, Root: root, Logger: discardLogger(),
		Ready: func(context.Context) error { readyMu.Lock(); defer readyMu.Unlock(); return ready }})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(srv.Handler())
	defer h.Close()

	code, _, body := do(t, "POST", h.URL+"/v1/batch/runs?wait=true", `{"views":["v"]}`)
	var run batchviews.Run
	if code != 200 || json.Unmarshal(body, &run) != nil || run.Status != "succeeded" || run.RowsRead != 42 || len(run.Views) != 1 {
		t.Fatalf("wait run: %d %s", code, body)
	}
	code, _, body = do(t, "POST", h.URL+"/v1/batch/runs", "")
	var started struct{ ID string }
	if code != 202 || json.Unmarshal(body, &started) != nil || started.ID == "" {
		t.Fatalf("start run: %d %s", code, body)
	}
	if code, _, body := do(t, "POST", h.URL+"/v1/batch/runs", `{"views":["nope"]}`); code != 400 {
		t.Fatalf("unknown view: %d %s", code, body)
	}
	if code, _, body := do(t, "POST", h.URL+"/v1/batch/runs", `{"views":`); code != 400 {
		t.Fatalf("bad body: %d %s", code, body)
	}
	runner.mu.Lock()
	runner.busy = true
	runner.mu.Unlock()
	if code, _, body := do(t, "POST", h.URL+"/v1/batch/runs", ""); code != 409 {
		t.Fatalf("busy: %d %s", code, body)
	}
	code, _, body = do(t, "GET", h.URL+"/v1/batch/runs", "")
	var runs struct{ Runs []batchviews.Run }
	if code != 200 || json.Unmarshal(body, &runs) != nil || len(runs.Runs) != 2 {
		t.Fatalf("runs: %d %s", code, body)
	}
	if code, _, body := do(t, "GET", h.URL+"/v1/batch/runs/"+started.ID, ""); code != 200 || !strings.Contains(string(body), started.ID) {
		t.Fatalf("run: %d %s", code, body)
	}
	if code, _, _ := do(t, "GET", h.URL+"/v1/batch/runs/nope", ""); code != 404 {
		t.Fatalf("unknown run: %d", code)
	}

	// Status: batch, speed (lag needs the log: null), archive, freshness.
	code, _, body = do(t, "GET", h.URL+"/v1/status", "")
	var status struct {
		Streams map[string]struct {
			Speed   map[string]any
			Archive map[string]any
		}
		Batch struct {
			Version string
			Cutoffs map[string]*string
			LastRun *batchviews.Run `json:"last_run"`
		}
		Views map[string]struct {
			FreshnessMs *int64 `json:"freshness_ms"`
		}
	}
	if code != 200 || json.Unmarshal(body, &status) != nil {
		t.Fatalf("status: %d %s", code, body)
	}
	o := status.Streams["orders"]
	if o.Speed["seq"] != 2.0 || o.Archive["seq"] != 3.0 || status.Batch.Version == "" || status.Batch.Cutoffs["v"] == nil ||
		status.Batch.LastRun == nil || status.Views["v"].FreshnessMs == nil || *status.Views["v"].FreshnessMs < 60_000 {
		t.Fatalf("status: %s", body)
	}

	// Health, readiness, the dashboard at /, JSON 404 under /v1.
	if code, _, _ := do(t, "GET", h.URL+"/healthz", ""); code != 200 {
		t.Fatalf("healthz %d", code)
	}
	if code, _, body := do(t, "GET", h.URL+"/readyz", ""); code != 503 || !strings.Contains(string(body), "warming up") {
		t.Fatalf("readyz not ready: %d %s", code, body)
	}
	readyMu.Lock()
	ready = nil
	readyMu.Unlock()
	if code, _, _ := do(t, "GET", h.URL+"/readyz", ""); code != 200 {
		t.Fatalf("readyz ready: %d", code)
	}
	if code, _, body := do(t, "GET", h.URL+"/", ""); code != 200 || string(body) != "dashboard /" {
		t.Fatalf("root: %d %s", code, body)
	}
	if code, _, body := do(t, "GET", h.URL+"/assets/app.js", ""); code != 200 || string(body) != "dashboard /assets/app.js" {
		t.Fatalf("root assets: %d %s", code, body)
	}
	if code, hdr, _ := do(t, "GET", h.URL+"/v1/unknown", ""); code != 404 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("/v1/unknown: %d", code)
	}
	if code, _, _ := do(t, "DELETE", h.URL+"/v1/views", ""); code != 405 {
		t.Fatalf("DELETE /v1/views: %d", code)
	}
}

// TestLogNoSecretsAndRecover: request logs carry no Authorization header or
// query string; a panicking handler answers 500 and the server lives on.
func TestLogNoSecretsAndRecover(t *testing.T) {
	var buf syncBuffer
	s := testenv.OrdersStream(t)
	v := testView(t, s, "v", time.Minute, 0)
	root := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })
	srv, err := serving.New(serving.Options{Catalog: testCatalog(s, v), Root: root, Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(srv.Handler())
	defer h.Close()
	req, _ := http.NewRequest("GET", h.URL+"/v1/views?token=sekrit-query", nil)
	req.Header.Set("Authorization", "Bearer sekrit-header")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if code, _, _ := do(t, "GET", h.URL+"/crash", ""); code != 500 {
		t.Fatalf("panic: %d", code)
	}
	if code, _, _ := do(t, "GET", h.URL+"/healthz", ""); code != 200 {
		t.Fatalf("after panic: %d", code)
	}
	out := buf.String()
	if strings.Contains(out, "sekrit") || !strings.Contains(out, `"path":"/v1/views"`) || !strings.Contains(out, "panic") {
		t.Fatalf("log:\n%s", out)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
