package tests

import (
	"bytes"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/tests/testenv"
)

// authHTTP sends a request with an optional bearer token and decodes a
// JSON answer into out.
func authHTTP(t *testing.T, method, url, token string, body []byte, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-ndjson")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
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

func randToken(t *testing.T) string {
	b := make([]byte, 24)
	if _, err := crand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "bt_" + hex.EncodeToString(b)
}

// TestAuthEndToEnd runs `braid up` with API keys (tokens in the
// environment, one key given by its SHA-256) and checks the scopes over
// real HTTP, that an authorized ingest + query still answers exactly, and
// that no token ever reaches the process's output.
func TestAuthEndToEnd(t *testing.T) {
	ops, shop, analyst, hashed := randToken(t), randToken(t), randToken(t), randToken(t)
	t.Setenv("BRAID_TEST_OPS_TOKEN", ops)
	t.Setenv("BRAID_TEST_SHOP_TOKEN", shop)
	t.Setenv("BRAID_TEST_ANALYST_TOKEN", analyst)
	sum := sha256.Sum256([]byte(hashed))
	authBlock := fmt.Sprintf(`auth:
  keys:
    - { name: ops, token_env: BRAID_TEST_OPS_TOKEN, scopes: ["admin"] }
    - { name: shop, token_env: BRAID_TEST_SHOP_TOKEN, scopes: ["ingest:orders"] }
    - { name: analysts, token_env: BRAID_TEST_ANALYST_TOKEN, scopes: ["read:orders_*"] }
    - { name: dashboards, sha256: %s, scopes: ["read:nothing_*"] }
`, hex.EncodeToString(sum[:]))
	cat := testenv.E2E()
	cat.Extra = authBlock
	st := testenv.Up(t, cat.YAML())
	base, p := st.Base, st.Braid

	rng := rand.New(rand.NewPCG(7, 7))
	start := time.Now().UTC().Truncate(time.Minute).Add(-90 * time.Minute)
	orders := genOrders(rng, start, 400, 0)
	body := ndjson(orders)
	events := base + "/v1/streams/orders/events"
	q := fmt.Sprintf("%s/v1/views/orders_by_country?from=%s&to=%s", base, start.Format(time.RFC3339), start.Add(time.Hour).Format(time.RFC3339))

	for _, c := range []struct {
		what, method, url, token string
		body                     []byte
		want                     int
	}{
		{"ingest without a token", "POST", events, "", body, 401},
		{"ingest with a wrong token", "POST", events, "bt_wrong", body, 401},
		{"ingest with a read key", "POST", events, analyst, body, 403},
		{"ingest with a key of another scope", "POST", events, hashed, body, 403},
		{"query without a token", "GET", q, "", nil, 401},
		{"query with the ingest key", "GET", q, shop, nil, 403},
		{"query with a non-matching pattern", "GET", q, hashed, nil, 403},
		{"status with a read key", "GET", base + "/v1/status", analyst, nil, 403},
		{"status with admin", "GET", base + "/v1/status", ops, nil, 200},
		{"batch runs with the ingest key", "GET", base + "/v1/batch/runs", shop, nil, 403},
		{"dlq with the ingest key", "GET", base + "/v1/dlq/orders", shop, nil, 403},
		{"dlq with admin", "GET", base + "/v1/dlq/orders", ops, nil, 200},
		{"healthz open", "GET", base + "/healthz", "", nil, 200},
		{"metrics open", "GET", base + "/metrics", "", nil, 200},
		{"dashboard open", "GET", base + "/", "", nil, 200},
	} {
		if code := authHTTP(t, c.method, c.url, c.token, c.body, nil); code != c.want {
			t.Errorf("%s: %d, want %d", c.what, code, c.want)
		}
	}

	// The refused ingests stored nothing; the authorized one is exact.
	var r ingestResp
	if code := authHTTP(t, "POST", events, shop, body, &r); code != 200 || r.Accepted != len(orders) {
		t.Fatalf("authorized ingest: %d %+v", code, r)
	}
	want := expect(orders)
	eventually(t, "authorized query", 60*time.Second, func() string {
		var qr queryResp
		if code := authHTTP(t, "GET", q, analyst, nil, &qr); code != 200 {
			return fmt.Sprintf("query status %d", code)
		}
		return compare(qr, want, "speed")
	})
	var vl struct{ Views []struct{ Name string } }
	if code := authHTTP(t, "GET", base+"/v1/views", hashed, nil, &vl); code != 200 || len(vl.Views) != 0 {
		t.Fatalf("views for a key reading nothing_*: %d %+v", code, vl)
	}
	if code := authHTTP(t, "GET", base+"/v1/views", analyst, nil, &vl); code != 200 || len(vl.Views) != 1 || vl.Views[0].Name != "orders_by_country" {
		t.Fatalf("views for the analyst: %d %+v", code, vl)
	}
	// A query string token is not a credential (and is not logged either).
	if code := authHTTP(t, "GET", q+"&token="+ops, "", nil, nil); code != 401 {
		t.Fatalf("query-string token: %d, want 401", code)
	}

	if err := p.Stop(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	out := p.Output()
	if strings.Contains(out, "development only") {
		t.Errorf("auth configured but the open-mode warning was logged")
	}
	if !strings.Contains(out, "auth enabled") {
		t.Errorf("no 'auth enabled' line in the output")
	}
	for _, tok := range []string{ops, shop, analyst, hashed} {
		if strings.Contains(out, tok) {
			t.Fatalf("a token appears in braid's output")
		}
	}
}
