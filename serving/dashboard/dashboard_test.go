package dashboard

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, target string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHandler(t *testing.T) {
	h := Handler()

	idx := get(t, h, "GET", "/", nil)
	if idx.Code != 200 || idx.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", idx.Code, idx.Header().Get("Content-Type"))
	}
	if cc := idx.Header().Get("Cache-Control"); cc != "no-cache" {
		t.Fatalf("index Cache-Control %q, want no-cache", cc)
	}
	if idx.Header().Get("Content-Security-Policy") == "" || idx.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("index lacks security headers: %v", idx.Header())
	}
	body := idx.Body.String()
	refs := regexp.MustCompile(`"(/assets/[a-z.]+)\?v=([0-9a-f]{12})"`).FindAllStringSubmatch(body, -1)
	if len(refs) < 3 {
		t.Fatalf("index references %d versioned assets, want app.js, style.css, favicon.svg:\n%s", len(refs), body)
	}
	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	for _, ref := range refs {
		path, v := ref[1], ref[2]
		rec := get(t, h, "GET", path+"?v="+v, nil)
		if rec.Code != 200 || rec.Body.Len() == 0 {
			t.Fatalf("GET %s: %d (%d bytes)", path, rec.Code, rec.Body.Len())
		}
		ext := path[strings.LastIndex(path, "."):]
		if ct := rec.Header().Get("Content-Type"); ct != types[ext] {
			t.Fatalf("%s: Content-Type %q, want %q", path, ct, types[ext])
		}
		if cc := rec.Header().Get("Cache-Control"); !strings.Contains(cc, "immutable") {
			t.Fatalf("%s with its hash: Cache-Control %q, want immutable", path, cc)
		}
		etag := rec.Header().Get("ETag")
		if etag == "" {
			t.Fatalf("%s: no ETag", path)
		}
		if rec := get(t, h, "GET", path, map[string]string{"If-None-Match": etag}); rec.Code != 304 || rec.Body.Len() != 0 {
			t.Fatalf("%s with If-None-Match: %d, want 304", path, rec.Code)
		}
		if cc := get(t, h, "GET", path+"?v=old", nil).Header().Get("Cache-Control"); strings.Contains(cc, "immutable") {
			t.Fatalf("%s with a stale hash must not be immutable: %q", path, cc)
		}
		if rec := get(t, h, "HEAD", path, nil); rec.Code != 200 || rec.Body.Len() != 0 {
			t.Fatalf("HEAD %s: %d, %d bytes", path, rec.Code, rec.Body.Len())
		}
	}
	for _, p := range []string{"/assets/nope.js", "/favicon.ico", "/v2/x", "/assets/../dashboard.go"} {
		if rec := get(t, h, "GET", p, nil); rec.Code != 404 {
			t.Fatalf("GET %s: %d, want 404", p, rec.Code)
		}
	}
	if rec := get(t, h, "POST", "/", nil); rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Fatalf("POST /: %d allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}
