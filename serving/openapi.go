package serving

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the hand-written OpenAPI 3 description of every route
// (TestOpenAPI in formats_test.go checks it against the router both ways and validates it).
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the OpenAPI 3 document (JSON).
func OpenAPI() []byte { return append([]byte(nil), openAPIDoc...) }

// handleOpenAPI: GET /v1/openapi.json.
func (s *Server) handleOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDoc)
}
