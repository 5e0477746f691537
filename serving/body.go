package serving

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// How request bodies are read. Ingest reads a whole body into memory
// before it takes one of the http.max_in_flight slots, so a client that
// sends its body slowly holds memory, not a slot: the slots are for
// requests whose events are being stored. The memory of the bodies being
// read and stored is bounded by http.ingest_memory_bytes (reserved as the
// bytes arrive, so a slow client holds little of it), and each body must
// arrive within http.read_timeout.

// readHeaderTimeout bounds the time a request takes to send its headers.
const readHeaderTimeout = 10 * time.Second

// HTTPServer returns the http.Server that serves s.Handler(): headers
// within 10 s, idle keep-alive connections closed after http.idle_timeout.
// A body's deadline (http.read_timeout) is set per request by
// bodyDeadline. There is no write timeout: live streams write for hours.
//
// Shutdown closes s: live streams end, and bodies still being read are cut
// (503), so Shutdown waits only for requests that are storing events.
func (s *Server) HTTPServer() *http.Server {
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: readHeaderTimeout, IdleTimeout: s.cfg.HTTP.IdleTimeout.D()}
	srv.RegisterOnShutdown(func() { _ = s.Close() })
	return srv
}

// bodyDeadline gives a request's body http.read_timeout, from the start of
// its handling, to arrive: the connection's read deadline, lifted once the
// body has been read to its end, and pulled to now when the server closes
// while the body is still arriving. A request without a body, such as a
// live stream, gets no deadline.
//
// The server's ReadTimeout would bound the same read (net/http lifts it
// when a body ends), but the cut at shutdown must know that end: pulled
// after it, the deadline would fail the connection's background read,
// which cancels the context of a request storing its events.
func (s *Server) bodyDeadline(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := s.cfg.HTTP.ReadTimeout.D()
		if r.Body == nil || r.Body == http.NoBody || d <= 0 {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
			next.ServeHTTP(w, r) // not a network connection (a test recorder)
			return
		}
		b := &deadlineBody{ReadCloser: r.Body, rc: rc}
		b.stop = context.AfterFunc(s.bgCtx, b.cut)
		defer b.stop()
		r.Body = b
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the connection's read deadline when the body has been
// read to its end; cut ends a read in progress.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	stop func() bool

	mu   sync.Mutex
	done bool // read to the end: no deadline any more
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.mu.Lock()
		if !b.done {
			b.done = true
			_ = b.rc.SetReadDeadline(time.Time{})
		}
		b.mu.Unlock()
		b.stop()
	}
	return n, err
}

func (b *deadlineBody) cut() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		_ = b.rc.SetReadDeadline(time.Now())
	}
}

// Media types of ingest bodies. No Content-Type means JSON.
var (
	jsonTypes   = []string{"application/json"}
	ndjsonTypes = []string{"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines", "application/jsonlines"}
	// charsets a body may declare: JSON text is UTF-8 (RFC 8259), and
	// US-ASCII is a subset of it.
	charsets = []string{"utf-8", "utf8", "us-ascii", "ascii"}
	// codings a body may be sent in (Content-Encoding), besides identity.
	codings = []string{"gzip", "zstd"}
)

// refusal is a request refused before its events are read: its status,
// error message and detail, and headers to set.
type refusal struct {
	status int
	msg    string
	detail any
	header map[string]string
}

func (f *refusal) write(w http.ResponseWriter) {
	for k, v := range f.header {
		w.Header().Set(k, v)
	}
	writeError(w, f.status, f.msg, f.detail)
}

// bodyType reads a request's Content-Type: ndjson for the NDJSON types,
// else JSON. Another type, or a charset other than UTF-8 (US-ASCII), is a
// 415.
func bodyType(ct string) (ndjson bool, _ *refusal) {
	if ct == "" {
		return false, nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return false, &refusal{status: http.StatusUnsupportedMediaType, msg: "bad content type", detail: ct}
	}
	switch {
	case slices.Contains(jsonTypes, mt):
	case slices.Contains(ndjsonTypes, mt):
		ndjson = true
	default:
		return false, &refusal{status: http.StatusUnsupportedMediaType, msg: "unsupported content type",
			detail: fmt.Sprintf("%s: want application/json (an object or an array), or NDJSON as one of %s", mt, strings.Join(ndjsonTypes, ", "))}
	}
	if cs, ok := params["charset"]; ok && !slices.Contains(charsets, strings.ToLower(cs)) {
		return false, &refusal{status: http.StatusUnsupportedMediaType, msg: "unsupported charset",
			detail: fmt.Sprintf("charset %s: send the body as UTF-8 (charset=utf-8, or no charset)", cs)}
	}
	return ndjson, nil
}

// bodyCoding reads a request's Content-Encoding: "" (none, or identity),
// gzip (also x-gzip) or zstd. Another coding, or more than one, is a 415
// saying which are accepted (Accept-Encoding, RFC 7694).
func bodyCoding(h http.Header) (string, *refusal) {
	var found []string
	for _, v := range h.Values("Content-Encoding") {
		for c := range strings.SplitSeq(v, ",") {
			switch c = strings.ToLower(strings.TrimSpace(c)); c {
			case "", "identity":
			case "x-gzip":
				found = append(found, "gzip")
			default:
				found = append(found, c)
			}
		}
	}
	accepted := map[string]string{"Accept-Encoding": strings.Join(codings, ", ")}
	switch {
	case len(found) == 0:
		return "", nil
	case len(found) > 1:
		return "", &refusal{status: http.StatusUnsupportedMediaType, msg: "unsupported content encoding",
			detail: fmt.Sprintf("%s: one content coding at most, %s", strings.Join(found, ", "), strings.Join(codings, " or ")), header: accepted}
	case !slices.Contains(codings, found[0]):
		return "", &refusal{status: http.StatusUnsupportedMediaType, msg: "unsupported content encoding",
			detail: fmt.Sprintf("%s: want %s, or none", found[0], strings.Join(codings, " or ")), header: accepted}
	}
	return found[0], nil
}

// memBudget bounds the bytes that ingest bodies hold together.
type memBudget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes; false when they do not fit.
func (m *memBudget) take(n int64) bool {
	for {
		u := m.used.Load()
		if u+n > m.max {
			return false
		}
		if m.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (m *memBudget) give(n int64) { m.used.Add(-n) }

// errNoMemory: the ingest memory budget cannot hold a body's next bytes.
var errNoMemory = errors.New("ingest bodies in memory are at http.ingest_memory_bytes")

// minBodyChunk is the first allocation of a body whose size is unknown or
// larger: the buffer then doubles as bytes arrive, so a client holds about
// what it sent (a connection that sends nothing holds 512 bytes).
const minBodyChunk = 512

// zstdMaxWindow bounds the window a zstd frame may declare (a window is
// history kept while decoding; zstd's levels 1-19 use at most 8 MiB,
// --long 128 MiB). The history grows with the decoded bytes, which
// max_body_bytes bounds.
const zstdMaxWindow = 128 << 20

// body is a request body read into memory, its bytes reserved from the
// ingest memory budget until release.
type body struct {
	buf      []byte
	reserved int64
	budget   *memBudget
}

func (b *body) release() {
	b.budget.give(b.reserved)
	b.reserved, b.buf = 0, nil
}

// readBody reads a request body, decoded by its content coding, into
// memory: at most max bytes as sent and max bytes decoded (a 413 beyond
// either), its buffer reserved from the budget as it grows. The caller
// releases the body. A failure is a refusal.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, coding string, max int64) (*body, *refusal) {
	wire := &wireReader{r: http.MaxBytesReader(w, r.Body, max)}
	b := &body{budget: s.bodyMem}
	var err error
	switch coding {
	case "":
		err = b.readFrom(wire, r.ContentLength, max)
	case "gzip":
		var zr *gzip.Reader
		if zr, err = gzip.NewReader(wire); err == nil {
			err = b.readFrom(zr, 0, max)
			zr.Close()
		}
	case "zstd":
		var zr *zstd.Decoder
		if zr, err = zstd.NewReader(wire, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(zstdMaxWindow)); err == nil {
			err = b.readFrom(zr, 0, max)
			zr.Close()
		}
	default:
		err = fmt.Errorf("serving: content coding %q", coding)
	}
	if err == nil {
		return b, nil
	}
	b.release()
	return nil, s.bodyRefusal(err, wire.err, coding, max)
}

// bodyRefusal says why a body could not be read: err from reading (or
// decoding) it, wireErr from reading the connection.
func (s *Server) bodyRefusal(err, wireErr error, coding string, max int64) *refusal {
	closeConn := map[string]string{"Connection": "close"}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(wireErr, &mbe):
		return &refusal{status: http.StatusRequestEntityTooLarge, msg: "body too large", detail: map[string]int64{"max_body_bytes": mbe.Limit}, header: closeConn}
	case errors.As(err, &mbe):
		return &refusal{status: http.StatusRequestEntityTooLarge, msg: "body too large once decoded", detail: map[string]any{"max_body_bytes": mbe.Limit, "content_encoding": coding}, header: closeConn}
	case errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrDecoderSizeExceeded):
		return &refusal{status: http.StatusRequestEntityTooLarge, msg: "body too large once decoded",
			detail: fmt.Sprintf("zstd window larger than %d bytes (%v)", zstdMaxWindow, err), header: closeConn}
	case errors.Is(err, errNoMemory):
		return &refusal{status: http.StatusTooManyRequests, msg: "too many ingest bodies in memory",
			detail: map[string]int64{"ingest_memory_bytes": s.bodyMem.max}, header: map[string]string{"Retry-After": "1"}}
	case wireErr != nil && isTimeout(wireErr):
		if s.bgCtx.Err() != nil {
			return &refusal{status: http.StatusServiceUnavailable, msg: "shutting down", detail: "the server stopped before the body arrived",
				header: map[string]string{"Retry-After": "2", "Connection": "close"}}
		}
		return &refusal{status: http.StatusRequestTimeout, msg: "body not received in time",
			detail: map[string]string{"read_timeout": s.cfg.HTTP.ReadTimeout.D().String()}, header: closeConn}
	case wireErr != nil:
		return &refusal{status: http.StatusBadRequest, msg: "read body", detail: wireErr.Error(), header: closeConn}
	}
	return &refusal{status: http.StatusBadRequest, msg: "bad " + coding + " body", detail: err.Error(), header: closeConn}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// wireReader keeps the error of reading the connection, to tell it from
// an error of decoding what was read.
type wireReader struct {
	r   io.Reader
	err error
}

func (w *wireReader) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF {
		w.err = err
	}
	return n, err
}

// readFrom reads r to its end into b.buf, at most limit bytes (a
// *http.MaxBytesError beyond). The buffer grows as bytes arrive, by
// doubling and to hint+1 when the size is known (hint > 0), each growth
// reserved from the budget first (errNoMemory when it does not fit).
func (b *body) readFrom(r io.Reader, hint, limit int64) error {
	for {
		if len(b.buf) == cap(b.buf) {
			if err := b.grow(hint, limit); err != nil {
				return err
			}
		}
		n, err := r.Read(b.buf[len(b.buf):cap(b.buf)])
		b.buf = b.buf[:len(b.buf)+n]
		if int64(len(b.buf)) > limit {
			return &http.MaxBytesError{Limit: limit}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// grow enlarges a full buffer: one byte beyond limit at most, which is
// enough to see that a body is too large.
func (b *body) grow(hint, limit int64) error {
	c := int64(cap(b.buf))
	n := max(2*c, minBodyChunk)
	if hint > 0 && c <= hint {
		n = min(n, hint+1) // +1: the read that sees the end needs no growth
	}
	n = min(n, limit+1)
	if n <= c {
		return &http.MaxBytesError{Limit: limit}
	}
	if !b.budget.take(n - c) {
		return errNoMemory
	}
	b.reserved += n - c
	buf := make([]byte, len(b.buf), n)
	copy(buf, b.buf)
	b.buf = buf
	return nil
}
