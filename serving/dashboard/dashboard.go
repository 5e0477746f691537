// Package dashboard is Braid's live dashboard: one static page (HTML, CSS
// and vanilla JS, embedded in the binary, no build step) that reads the
// public HTTP API (/v1/views, /v1/views/{view}, its /live stream,
// /v1/status, /v1/batch/runs) and draws every view as an inline-SVG time
// series with the batch cutoff and the watermark marked.
//
// Handler serves index.html at "/" and the assets under "/assets/". The
// page references each asset as /assets/NAME?v=HASH (HASH = a digest of the
// embedded asset), so asset answers for the current hash are cacheable for a
// year; index.html itself is revalidated on every load (ETag), so a new
// binary's page is picked up at once.
package dashboard

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assetFS embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	body  []byte
	ctype string
	etag  string // strong ETag, quoted
	hash  string // short digest used as the ?v= cache buster
}

// site is the prepared set of files.
type site struct {
	index  asset
	assets map[string]asset // by name under assets/ (not index.html)
}

// contentTypes fixes the types of the files we ship, independent of the
// host's mime tables.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
}

func contentType(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if ct, ok := contentTypes[ext]; ok {
		return ct
	}
	if ct := mime.TypeByExtension(ext); ct != "" {
		return ct
	}
	return "application/octet-stream"
}

func newAsset(name string, body []byte) asset {
	sum := sha256.Sum256(body)
	h := hex.EncodeToString(sum[:])
	return asset{body: body, ctype: contentType(name), etag: `"` + h[:32] + `"`, hash: h[:12]}
}

// load reads the embedded files and rewrites index.html's asset references
// ("/assets/NAME") to carry the asset's hash.
func load() (*site, error) {
	s := &site{assets: map[string]asset{}}
	err := fs.WalkDir(assetFS, "assets", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := assetFS.ReadFile(p)
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(p, "assets/")
		if name != "index.html" {
			s.assets[name] = newAsset(name, b)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard: read assets: %w", err)
	}
	idx, err := assetFS.ReadFile("assets/index.html")
	if err != nil {
		return nil, fmt.Errorf("dashboard: read index.html: %w", err)
	}
	for name, a := range s.assets {
		ref := []byte(`"/assets/` + name + `"`)
		idx = bytes.ReplaceAll(idx, ref, []byte(`"/assets/`+name+`?v=`+a.hash+`"`))
	}
	s.index = newAsset("index.html", idx)
	return s, nil
}

// The page talks only to its own origin; no inline script or style.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"

// Handler serves the dashboard: index.html at "/" (also "/index.html") and
// the embedded assets under "/assets/". Only GET and HEAD are allowed;
// anything else under the handler answers 404.
func Handler() http.Handler {
	s, err := load()
	if err != nil {
		// The files are compiled in; failing here is a build defect.
		panic(err)
	}
	return s
}

func (s *site) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	switch {
	case p == "/" || p == "" || p == "/index.html":
		h.Set("Content-Security-Policy", csp)
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cache-Control", "no-cache")
		serve(w, r, s.index)
	case strings.HasPrefix(p, "/assets/"):
		a, ok := s.assets[strings.TrimPrefix(p, "/assets/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if v := r.URL.Query().Get("v"); v != "" && v == a.hash {
			h.Set("Cache-Control", "public, max-age=31536000, immutable")
		} else {
			h.Set("Cache-Control", "public, max-age=300, must-revalidate")
		}
		serve(w, r, a)
	default:
		http.NotFound(w, r)
	}
}

// serve writes a with its type and ETag, answering 304 to a matching
// If-None-Match.
func serve(w http.ResponseWriter, r *http.Request, a asset) {
	h := w.Header()
	h.Set("Content-Type", a.ctype)
	h.Set("ETag", a.etag)
	if match := r.Header.Get("If-None-Match"); match != "" && etagMatch(match, a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	// ServeContent handles Range and HEAD; a zero modtime leaves
	// Last-Modified out (the ETag is the validator).
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

func etagMatch(header, etag string) bool {
	for _, part := range strings.Split(header, ",") {
		part = strings.TrimSpace(part)
		part = strings.TrimPrefix(part, "W/")
		if part == etag || part == "*" {
			return true
		}
	}
	return false
}
