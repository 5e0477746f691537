// Package tests runs the braid binary as a real process against real
// servers (an embedded nats-server inside braid, a redis-server started by
// the test, DuckDB and Parquet files) and checks its answers against
// independent computations.
package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

func httpJSON(t *testing.T, method, url, ctype string, body []byte, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, b, err)
		}
	}
	return resp.StatusCode
}

// eventually is testenv.Eventually.
func eventually(t *testing.T, what string, timeout time.Duration, f func() string) {
	t.Helper()
	testenv.Eventually(t, what, timeout, f)
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// runCutoffs are a batch run record's cutoffs as JSON gives them: RFC 3339
// times, null for none.
type runCutoffs map[string]*time.Time

// ms is a view's cutoff in unix ms (0: none).
func (c runCutoffs) ms(view string) int64 {
	if t := c[view]; t != nil {
		return t.UnixMilli()
	}
	return 0
}
