package serving_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/tests/testenv"
)

// statusSpeed is a speed layer's position, or its failure.
type statusSpeed struct {
	pos query.StreamSpeed
	err error
}

func (s statusSpeed) StreamStatus(context.Context, string) (query.StreamSpeed, error) {
	return s.pos, s.err
}

// statusArchive is an archiver's checkpoint, or its failure.
type statusArchive struct {
	pos serving.ArchivePosition
	err error
}

func (a statusArchive) ArchiveCheckpoint(context.Context, string, int) (serving.ArchivePosition, error) {
	return a.pos, a.err
}

// TestStatusMatchesTheDocument: /v1/status answers, with every part read,
// failed or unavailable, match the Status schema of the OpenAPI document
// (which admits no undocumented key), and list the keys of every object in
// alphabetical order.
func TestStatusMatchesTheDocument(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(serving.OpenAPI())
	if err != nil {
		t.Fatal(err)
	}
	schema := doc.Components.Schemas["Status"].Value
	if schema == nil {
		t.Fatal("the document has no Status schema")
	}

	s := testenv.OrdersStream(t)
	v := testView(t, s, "v", time.Minute, 0)
	n := testenv.StartNATS(t)
	_, js := n.JetStream(t)
	log, err := eventlog.Open(t.Context(), js, []string{"orders"}, eventlog.Options{Namespace: testenv.Namespace(t), Memory: true})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UnixMilli()
	views, err := batchviews.OpenDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := views.Publish(&batchviews.Version{Views: map[string]batchviews.ViewVersion{"v": {Cutoff: now - 60_000, Definition: v.Definition()}}}, map[string][]batchviews.Row{"v": nil}); err != nil {
		t.Fatal(err)
	}
	started := time.Now().UTC()
	if err := views.SaveRun(batchviews.Run{ID: batchviews.NewID(), Status: batchviews.StatusSucceeded, Views: []string{"v"}, Started: started, Finished: started}); err != nil {
		t.Fatal(err)
	}
	down := errors.New("down <for> maintenance & more")

	cases := []struct {
		name string
		opts serving.Options
		want map[string]string // stream part -> "ok", "error" or "unavailable"
	}{
		{"nothing", serving.Options{}, map[string]string{"log": unavailablePart, "speed": unavailablePart, "archive": unavailablePart, "batch": unavailablePart}},
		{"failing", serving.Options{Log: log, SpeedStatus: statusSpeed{err: down}, Archive: statusArchive{err: down}},
			map[string]string{"log": okPart, "speed": errorPart, "archive": errorPart, "batch": unavailablePart}},
		{"everything", serving.Options{Log: log, SpeedStatus: statusSpeed{pos: query.SpeedOf([]query.PartSpeed{{Found: true, Seq: 1, Watermark: now - 5_000}})},
			Archive: statusArchive{pos: serving.ArchivePosition{Seq: 1, CoveredUntil: now - 1_000}}, Views: views},
			map[string]string{"log": okPart, "speed": okPart, "archive": okPart, "batch": okPart}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.opts.Catalog, c.opts.Registry, c.opts.Logger = testCatalog(s, v), prometheus.NewRegistry(), discardLogger()
			srv, err := serving.New(c.opts)
			if err != nil {
				t.Fatal(err)
			}
			h := httptest.NewServer(srv.Handler())
			defer h.Close()
			if c.opts.Log != nil && i == 1 {
				body := fmt.Sprintf(`[{"id":"a","ts":%d,"device":"web","amount":2}, {"id":"b","ts":%d}]`, now, now)
				if code, _, b := postJSON(t, h.URL+"/v1/streams/orders/events", body); code != 200 {
					t.Fatalf("ingest: %d %s", code, b)
				}
			}
			code, _, body := get(t, h.URL+"/v1/status")
			if code != 200 {
				t.Fatalf("status: %d %s", code, body)
			}
			var answer any
			if err := json.Unmarshal(body, &answer); err != nil {
				t.Fatal(err)
			}
			if err := schema.VisitJSON(answer); err != nil {
				t.Fatalf("the answer does not match the Status schema: %v\n%s", err, body)
			}
			checkSortedKeys(t, body)

			st := answer.(map[string]any)
			orders := st["streams"].(map[string]any)["orders"].(map[string]any)
			for part, want := range c.want {
				p := orders[part]
				if part == "batch" {
					p = st["batch"]
				}
				if got := partKind(p); got != want {
					t.Errorf("%s: %s part, want %s: %s", part, got, want, body)
				}
			}
			if c.opts.Log != nil {
				if orders["accepted"] != 1.0 || orders["rejected"] != 1.0 || orders["dead_letters"] != 1.0 || orders["late"] != 0.0 {
					t.Errorf("counts of 1 stored event and 1 dead letter: %s", body)
				}
			} else if _, ok := orders["dead_letters"]; ok {
				t.Errorf("dead_letters without a log: %s", body)
			}
			if c.want["speed"] == okPart {
				sp := orders["speed"].(map[string]any)
				if sp["seq"] != 1.0 || sp["lag"] != 0.0 || sp["max_event_time"] == nil {
					t.Errorf("speed at the log's end: %v", sp)
				}
			}
		})
	}
}

// postJSON posts a JSON body.
func postJSON(t *testing.T, url, body string) (int, http.Header, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

const (
	okPart          = "ok"
	errorPart       = "error"
	unavailablePart = "unavailable"
)

// partKind says whether a part of the status holds values or says why not.
func partKind(p any) string {
	m, _ := p.(map[string]any)
	switch m["status"] {
	case errorPart:
		if _, ok := m["error"].(string); ok && len(m) == 2 {
			return errorPart
		}
	case unavailablePart:
		if len(m) == 1 {
			return unavailablePart
		}
	case nil:
		return okPart
	}
	return fmt.Sprintf("unexpected %v", p)
}

// checkSortedKeys fails unless the keys of every object of a JSON document
// are in increasing order (as encoding/json writes a map), but for the
// objects under last_run: a batch run record has an order of its own.
func checkSortedKeys(t *testing.T, body []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	type level struct {
		object  bool
		wantKey bool
		last    string
		skip    bool // inside last_run
	}
	var stack []*level
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		var top *level
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.wantKey {
			if key, ok := tok.(string); ok {
				if !top.skip && top.last != "" && strings.Compare(key, top.last) <= 0 {
					t.Errorf("key %q after %q: %s", key, top.last, body)
				}
				top.last, top.wantKey = key, false
				continue
			}
		}
		skip := top != nil && (top.skip || (top.object && top.last == "last_run"))
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &level{object: true, wantKey: true, skip: skip})
			continue
		case json.Delim('['):
			stack = append(stack, &level{skip: skip})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].wantKey = true // a value ended
		}
	}
}
