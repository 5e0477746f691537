package serving

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"path"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/logic/config"
)

// Access control. With auth.keys configured every /v1 route needs
// `Authorization: Bearer TOKEN`; tokens are known only by their SHA-256
// (read from the environment at start and hashed at once, or given as
// sha256 in the file) and compared in constant time. Scopes:
//
//	admin            every route
//	ingest:<stream>  POST /v1/streams/<stream>/events
//	read:<pattern>   GET /v1/views/<view> and /live for views matching the
//	                 path.Match pattern (read:orders_* , read:*)
//
// Any valid token may call GET /v1/views (it lists only the views the key
// may read) and GET /v1/openapi.json. /healthz, /readyz, /metrics and the
// dashboard (/) are not under /v1 and stay open.

// apiKey is one configured key: its name, the SHA-256 of its token and its
// scopes.
type apiKey struct {
	name   string
	hash   [sha256.Size]byte
	admin  bool
	ingest []string // stream names
	read   []string // view patterns
}

// auth holds the keys; an auth with no keys is open mode.
type auth struct {
	keys []apiKey
}

// newAuth reads the keys: token_env values are hashed at once (the tokens
// are not kept); a key whose variable is empty is disabled with a warning
// (it can never match). warn receives those warnings.
func newAuth(keys []config.Key, getenv func(string) string, warn func(msg string, args ...any)) (*auth, error) {
	a := &auth{}
	for i, k := range keys {
		ak := apiKey{name: k.Name}
		switch {
		case k.SHA256 != "":
			b, err := hex.DecodeString(strings.TrimSpace(k.SHA256))
			if err != nil || len(b) != sha256.Size {
				return nil, fmt.Errorf("auth.keys[%d] (%s): sha256 must be 64 hex digits", i, k.Name)
			}
			copy(ak.hash[:], b)
		case k.TokenEnv != "":
			tok := strings.TrimSpace(getenv(k.TokenEnv))
			if tok == "" {
				warn("auth key disabled: its token variable is empty", "key", k.Name, "token_env", k.TokenEnv)
				continue
			}
			ak.hash = sha256.Sum256([]byte(tok))
		default:
			return nil, fmt.Errorf("auth.keys[%d] (%s): set token_env or sha256", i, k.Name)
		}
		for _, sc := range k.Scopes {
			switch {
			case sc == "admin":
				ak.admin = true
			case strings.HasPrefix(sc, "ingest:") && len(sc) > len("ingest:"):
				ak.ingest = append(ak.ingest, strings.TrimPrefix(sc, "ingest:"))
			case strings.HasPrefix(sc, "read:") && len(sc) > len("read:"):
				p := strings.TrimPrefix(sc, "read:")
				if _, err := path.Match(p, ""); err != nil {
					return nil, fmt.Errorf("auth.keys[%d] (%s): bad view pattern %q: %w", i, k.Name, p, err)
				}
				ak.read = append(ak.read, p)
			default:
				return nil, fmt.Errorf("auth.keys[%d] (%s): unknown scope %q (admin, ingest:<stream>, read:<view pattern>)", i, k.Name, sc)
			}
		}
		a.keys = append(a.keys, ak)
	}
	return a, nil
}

// lookup finds the key of a presented token. Every key's hash is compared
// (no early exit), in constant time.
func (a *auth) lookup(token string) *apiKey {
	if token == "" {
		return nil
	}
	h := sha256.Sum256([]byte(token))
	found := -1
	for i := range a.keys {
		if subtle.ConstantTimeCompare(h[:], a.keys[i].hash[:]) == 1 && found < 0 {
			found = i
		}
	}
	if found < 0 {
		return nil
	}
	return &a.keys[found]
}

func (k *apiKey) canIngest(stream string) bool {
	if k.admin {
		return true
	}
	for _, s := range k.ingest {
		if s == stream {
			return true
		}
	}
	return false
}

func (k *apiKey) canRead(view string) bool {
	if k.admin {
		return true
	}
	for _, p := range k.read {
		if ok, _ := path.Match(p, view); ok {
			return true
		}
	}
	return false
}

type keyCtx struct{}

// callerKey is the authenticated key of a request (nil in open mode).
func callerKey(ctx context.Context) *apiKey {
	k, _ := ctx.Value(keyCtx{}).(*apiKey)
	return k
}

// bearer extracts the token of an `Authorization: Bearer TOKEN` header.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// authenticate is the /v1 middleware: in open mode it passes everything;
// otherwise a valid bearer token is required (401). The token itself is
// never logged or echoed.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authOn {
			next.ServeHTTP(w, r)
			return
		}
		k := s.auth.lookup(bearer(r))
		if k == nil {
			s.authFailures.WithLabelValues("401").Inc()
			s.logger.Info("unauthenticated request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr,
				"has_authorization", r.Header.Get("Authorization") != "")
			w.Header().Set("WWW-Authenticate", `Bearer realm="braid"`)
			writeError(w, http.StatusUnauthorized, "unauthorized", "send Authorization: Bearer TOKEN with a configured API key")
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), keyCtx{}, k)))
	})
}

// scope names the permission a route needs.
type scope int

const (
	scopeAny        scope = iota // any valid key
	scopeAdmin                   // admin
	scopeIngest                  // ingest:{stream}
	scopeRead                    // read:{view}
	scopeReadEntity              // read:{entity}: the read patterns name entities too
)

// need guards a route with a scope (403 when the key lacks it). In open
// mode it passes everything.
func (s *Server) need(sc scope) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			k := callerKey(r.Context())
			if !s.authOn {
				next.ServeHTTP(w, r)
				return
			}
			ok, what := false, ""
			switch sc {
			case scopeAny:
				ok = k != nil
			case scopeAdmin:
				ok, what = k != nil && k.admin, "admin"
			case scopeIngest:
				st := chi.URLParam(r, "stream")
				ok, what = k != nil && k.canIngest(st), "ingest:"+st
			case scopeRead:
				v := chi.URLParam(r, "view")
				ok, what = k != nil && k.canRead(v), "read:"+v
			case scopeReadEntity:
				en := chi.URLParam(r, "entity")
				if en == "" {
					en, _ = strings.CutSuffix(chi.URLParam(r, "target"), ":lookup")
				}
				ok, what = k != nil && k.canRead(en), "read:"+en
			}
			if !ok {
				s.authFailures.WithLabelValues("403").Inc()
				name := ""
				if k != nil {
					name = k.name
				}
				s.logger.Info("forbidden request", "method", r.Method, "path", r.URL.Path, "key", name, "needs", what)
				writeError(w, http.StatusForbidden, "forbidden", "this key lacks the scope "+what)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}
