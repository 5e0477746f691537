package serving_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving"
	"github.com/braid-data/braid/tests/testenv"
)

const (
	tokAdmin  = "tok-admin-0123456789"
	tokShop   = "tok-shop-0123456789"
	tokReader = "tok-reader-0123456789"
	tokIngest = "tok-ingest-0123456789"
	tokHashed = "tok-hashed-0123456789"
)

func authConfig() *config.Config {
	cfg := config.Default()
	sum := sha256.Sum256([]byte(tokHashed))
	cfg.Auth.Keys = []config.Key{
		{Name: "ops", TokenEnv: "T_ADMIN", Scopes: []string{"admin"}},
		{Name: "shop", TokenEnv: "T_SHOP", Scopes: []string{"ingest:orders", "read:orders_*"}},
		{Name: "fraud", TokenEnv: "T_READER", Scopes: []string{"read:fraud_scores"}},
		{Name: "other", TokenEnv: "T_INGEST", Scopes: []string{"ingest:refunds"}},
		{Name: "hashed", SHA256: hex.EncodeToString(sum[:]), Scopes: []string{"read:*"}},
		{Name: "unset", TokenEnv: "T_UNSET", Scopes: []string{"admin"}},
	}
	return &cfg
}

func authEnv(name string) string {
	return map[string]string{"T_ADMIN": tokAdmin, "T_SHOP": tokShop, "T_READER": tokReader, "T_INGEST": tokIngest}[name]
}

func newAuthServer(t *testing.T, logger *slog.Logger) *httptest.Server {
	t.Helper()
	s := testenv.OrdersStream(t)
	cat := testCatalog(s, testView(t, s, "orders_by_country", time.Minute, 0), testView(t, s, "orders_by_device", time.Minute, 0),
		testView(t, s, "fraud_scores", time.Minute, 0))
	root := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "dashboard") })
	srv, err := serving.New(serving.Options{Config: authConfig(), Catalog: cat, Root: root, Getenv: authEnv,
		Registry: prometheus.NewRegistry(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(srv.Handler())
	t.Cleanup(h.Close)
	t.Cleanup(func() { _ = srv.Close() })
	return h
}

// authDo sends a request with an Authorization header (none when auth is "")
// and returns the status; live streams are closed after the headers.
func authDo(t *testing.T, method, url, auth string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		return resp.StatusCode, resp.Header, nil
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// TestAuthScopes: one row per scope rule. The stores are absent, so a
// request that passes access control gets the handler's own answer (200,
// 404 or 503) and never 401/403.
func TestAuthScopes(t *testing.T) {
	h := newAuthServer(t, discardLogger())
	const rng = "?from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z"
	b := func(tok string) string { return "Bearer " + tok }
	for _, tc := range []struct {
		name, method, path, auth string
		want                     int
	}{
		// 401: no token, unknown token, wrong scheme, empty token, disabled key.
		{"no token", "GET", "/v1/views", "", 401},
		{"unknown token", "GET", "/v1/views", b("nope"), 401},
		{"basic scheme", "GET", "/v1/views", "Basic " + tokAdmin, 401},
		{"empty bearer", "GET", "/v1/views", "Bearer ", 401},
		{"unknown route needs a token", "GET", "/v1/nothing", "", 401},
		{"unknown route with a token", "GET", "/v1/nothing", b(tokShop), 404},
		{"lowercase scheme", "GET", "/v1/views", "bearer " + tokShop, 200},
		// ingest:<stream>
		{"ingest: admin", "POST", "/v1/streams/orders/events", b(tokAdmin), 503},
		{"ingest: its stream", "POST", "/v1/streams/orders/events", b(tokShop), 503},
		{"ingest: another stream's key", "POST", "/v1/streams/orders/events", b(tokIngest), 403},
		{"ingest: read-only key", "POST", "/v1/streams/orders/events", b(tokReader), 403},
		{"ingest: read:* is not ingest", "POST", "/v1/streams/orders/events", b(tokHashed), 403},
		{"ingest: no token", "POST", "/v1/streams/orders/events", "", 401},
		// read:<view pattern>
		{"read: admin", "GET", "/v1/views/orders_by_country" + rng, b(tokAdmin), 200},
		{"read: pattern match", "GET", "/v1/views/orders_by_device" + rng, b(tokShop), 200},
		{"read: pattern miss", "GET", "/v1/views/fraud_scores" + rng, b(tokShop), 403},
		{"read: exact name", "GET", "/v1/views/fraud_scores" + rng, b(tokReader), 200},
		{"read: exact name miss", "GET", "/v1/views/orders_by_country" + rng, b(tokReader), 403},
		{"read: ingest-only key", "GET", "/v1/views/orders_by_country" + rng, b(tokIngest), 403},
		{"read: sha256 key read:*", "GET", "/v1/views/fraud_scores" + rng, b(tokHashed), 200},
		{"read: unknown view, no scope", "GET", "/v1/views/nope" + rng, b(tokShop), 403},
		{"read: unknown view, read:*", "GET", "/v1/views/nope" + rng, b(tokHashed), 404},
		{"read: no token", "GET", "/v1/views/orders_by_country" + rng, "", 401},
		{"live: pattern match", "GET", "/v1/views/orders_by_country/live" + rng, b(tokShop), 200},
		{"live: pattern miss", "GET", "/v1/views/orders_by_country/live" + rng, b(tokReader), 403},
		{"live: no token", "GET", "/v1/views/orders_by_country/live" + rng, "", 401},
		// read:<pattern> names entities too (no entities here: 404 past access control)
		{"entity: pattern match", "GET", "/v1/entities/orders_x/k1", b(tokShop), 404},
		{"entity: pattern miss", "GET", "/v1/entities/fraud/k1", b(tokShop), 403},
		{"entity lookup: pattern match", "POST", "/v1/entities/orders_x:lookup", b(tokShop), 404},
		{"entity lookup: pattern miss", "POST", "/v1/entities/fraud:lookup", b(tokShop), 403},
		{"entity: no token", "GET", "/v1/entities/orders_x/k1", "", 401},
		// any valid key
		{"views list: ingest-only key", "GET", "/v1/views", b(tokIngest), 200},
		{"openapi: any key", "GET", "/v1/openapi.json", b(tokIngest), 200},
		{"openapi: no token", "GET", "/v1/openapi.json", "", 401},
		// admin
		{"status: admin", "GET", "/v1/status", b(tokAdmin), 200},
		{"status: not admin", "GET", "/v1/status", b(tokShop), 403},
		{"status: read:*", "GET", "/v1/status", b(tokHashed), 403},
		{"batch start: admin", "POST", "/v1/batch/runs", b(tokAdmin), 503},
		{"batch start: not admin", "POST", "/v1/batch/runs", b(tokShop), 403},
		{"batch runs: admin", "GET", "/v1/batch/runs", b(tokAdmin), 503},
		{"batch runs: not admin", "GET", "/v1/batch/runs", b(tokReader), 403},
		{"batch run: not admin", "GET", "/v1/batch/runs/x", b(tokShop), 403},
		{"dlq: admin", "GET", "/v1/dlq/orders", b(tokAdmin), 503},
		{"dlq: ingest key of the stream", "GET", "/v1/dlq/orders", b(tokShop), 403},
		{"dlq replay: not admin", "POST", "/v1/dlq/orders/replay", b(tokShop), 403},
		{"dlq replay: admin", "POST", "/v1/dlq/orders/replay", b(tokAdmin), 503},
		{"blocked: admin", "GET", "/v1/streams/orders/blocked", b(tokAdmin), 503},
		{"blocked: ingest key of the stream", "GET", "/v1/streams/orders/blocked", b(tokShop), 403},
		{"blocked: read:*", "GET", "/v1/streams/orders/blocked?outcome=review", b(tokHashed), 403},
		// open routes
		{"healthz open", "GET", "/healthz", "", 200},
		{"readyz open", "GET", "/readyz", "", 200},
		{"metrics open", "GET", "/metrics", "", 200},
		{"dashboard open", "GET", "/", "", 200},
		{"dashboard asset open", "GET", "/app.js", "", 200},
	} {
		code, hdr, body := authDo(t, tc.method, h.URL+tc.path, tc.auth)
		if code != tc.want {
			t.Errorf("%s: %s %s = %d %s, want %d", tc.name, tc.method, tc.path, code, body, tc.want)
			continue
		}
		if code == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("%s: 401 without WWW-Authenticate", tc.name)
		}
		if code == 401 || code == 403 {
			var e struct{ Error string }
			if json.Unmarshal(body, &e) != nil || e.Error == "" {
				t.Errorf("%s: %d body %q is not an error object", tc.name, code, body)
			}
		}
	}

	// GET /v1/views lists only the views a key may read.
	for _, tc := range []struct {
		tok  string
		want string
	}{{tokAdmin, "orders_by_country,orders_by_device,fraud_scores"}, {tokShop, "orders_by_country,orders_by_device"},
		{tokReader, "fraud_scores"}, {tokIngest, ""}, {tokHashed, "orders_by_country,orders_by_device,fraud_scores"}} {
		_, _, body := authDo(t, "GET", h.URL+"/v1/views", "Bearer "+tc.tok)
		var vl struct{ Views []struct{ Name string } }
		if err := json.Unmarshal(body, &vl); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, v := range vl.Views {
			names = append(names, v.Name)
		}
		if got := strings.Join(names, ","); got != tc.want {
			t.Errorf("views for %s: %q, want %q", tc.tok[:8], got, tc.want)
		}
	}
}

// TestAuthOpenModeWarns: without keys every route is open and the start
// logs a loud development-only warning.
func TestAuthOpenModeWarns(t *testing.T) {
	var buf syncBuffer
	s := testenv.OrdersStream(t)
	srv, err := serving.New(serving.Options{Catalog: testCatalog(s, testView(t, s, "v", time.Minute, 0)),
		Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if out := buf.String(); !strings.Contains(out, "development only") || !strings.Contains(out, `"level":"WARN"`) {
		t.Fatalf("no open-mode warning: %s", out)
	}
	h := httptest.NewServer(srv.Handler())
	defer h.Close()
	for _, p := range []string{"/v1/views", "/v1/status", "/v1/openapi.json"} {
		if code, _, body := authDo(t, "GET", h.URL+p, ""); code != 200 {
			t.Errorf("open mode %s: %d %s", p, code, body)
		}
	}
}

// TestAuthTokensNeverLogged: valid, invalid and forbidden tokens, in the
// header and in the query string, never reach the log (debug level).
func TestAuthTokensNeverLogged(t *testing.T) {
	var buf syncBuffer
	h := newAuthServer(t, slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	const wrong = "tok-wrong-0123456789"
	for _, r := range []struct{ path, auth string }{
		{"/v1/views", "Bearer " + tokAdmin},
		{"/v1/views", "Bearer " + wrong},
		{"/v1/status", "Bearer " + tokShop},
		{"/v1/views?token=" + tokReader, ""},
		{"/v1/views?token=" + tokReader + "&access_token=" + tokIngest, "Bearer " + tokReader},
		{"/v1/streams/orders/events?token=" + tokHashed, "Bearer " + tokReader},
		{"/healthz?token=" + tokAdmin, "Bearer " + tokAdmin},
	} {
		authDo(t, "GET", h.URL+r.path, r.auth)
	}
	out := buf.String()
	if !strings.Contains(out, "unauthenticated request") || !strings.Contains(out, "forbidden request") {
		t.Fatalf("the failures were not logged at all:\n%s", out)
	}
	for _, tok := range []string{tokAdmin, tokShop, tokReader, tokIngest, tokHashed, wrong, "tok-"} {
		if strings.Contains(out, tok) {
			t.Fatalf("token %q appears in the log:\n%s", tok, out)
		}
	}
}
