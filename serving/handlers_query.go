package serving

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
)

// viewInfo describes a view for GET /v1/views.
type viewInfo struct {
	Name       string        `json:"name"`
	Definition string        `json:"definition"`
	Stream     string        `json:"stream"`
	Window     string        `json:"window"`
	Hop        *string       `json:"hop"`
	Step       string        `json:"step"`
	Dims       []string      `json:"dims"`
	Where      string        `json:"where"`
	Measures   []measureInfo `json:"measures"`
	Exact      bool          `json:"exact"`
}

type measureInfo struct {
	Name  string  `json:"name"`
	Kind  string  `json:"kind"`
	Field string  `json:"field"`
	Q     float64 `json:"q"`
	Exact bool    `json:"exact"`
	Error string  `json:"error,omitempty"` // the sketch's error bound (logic.Measure.ErrorBound)
}

func (s *Server) handleViews(w http.ResponseWriter, r *http.Request) {
	out := make([]viewInfo, 0, len(s.opts.Catalog.ViewOrder))
	key := callerKey(r.Context())
	for _, name := range s.opts.Catalog.ViewOrder {
		if key != nil && !key.canRead(name) {
			continue // only the views this key may read
		}
		v := s.opts.Catalog.Views[name]
		vi := viewInfo{Name: name, Definition: v.Definition(), Stream: v.Stream.Name, Window: fmtDuration(v.Window.Size.Milliseconds()),
			Step: fmtDuration(v.Window.Step().Milliseconds()), Dims: append([]string{}, v.Dims...), Where: v.Where, Exact: v.Exact()}
		if v.Window.Hop != 0 && v.Window.Hop != v.Window.Size {
			h := fmtDuration(v.Window.Hop.Milliseconds())
			vi.Hop = &h
		}
		for i := range v.Measures {
			m := &v.Measures[i]
			vi.Measures = append(vi.Measures, measureInfo{Name: m.Name, Kind: m.Kind.String(), Field: m.Field, Q: m.Q, Exact: m.Exact(), Error: m.ErrorBound()})
		}
		out = append(out, vi)
	}
	writeJSON(w, http.StatusOK, map[string]any{"views": out})
}

// DefinitionHeader carries the view's definition on every answer.
const DefinitionHeader = "Braid-View-Definition"

// WarningHeader carries each of an answer's warnings (JSON's "warnings"),
// one header line each, on every format.
const WarningHeader = "Braid-Warning"

// answer is a computed query answer.
type answer struct {
	View      *logic.View
	Query     Query
	Cutoff    int64  // 0: no batch
	Watermark int64  // 0: unknown
	Version   string // batch version id ("": none)
	Seq       uint64 // the speed position the answer was computed at (0: unknown)
	Rows      []ResultRow
	Warnings  []string
}

// errUnavailable marks an answer that cannot be computed now (503).
var errUnavailable = errors.New("unavailable")

// inputs are what an answer depends on besides the stores' contents: the
// batch version and the stream's speed position (read first, cheaply), and
// the view's state they give.
type inputs struct {
	ver   *batchviews.Version
	pos   StreamSpeed
	posOK bool // the position was read (else: no speed status; not cacheable)
	state ViewState
}

// readInputs reads a view's inputs; a view that cannot answer yet is a
// *RebuildingError.
func (s *Server) readInputs(ctx context.Context, v *logic.View) (inputs, error) {
	var in inputs
	if s.opts.Views != nil {
		ver, err := s.opts.Views.Current()
		if err != nil {
			return in, fmt.Errorf("%w: batch views: %w", errUnavailable, err)
		}
		in.ver = ver
	}
	speed := s.opts.Speed != nil && s.opts.SpeedStatus != nil
	switch {
	case s.opts.SpeedStatus != nil:
		pos, err := s.opts.SpeedStatus.StreamStatus(ctx, v.Stream.Name)
		if err != nil {
			return in, fmt.Errorf("%w: speed position: %w", errUnavailable, err)
		}
		in.pos, in.posOK = pos, true
	case s.opts.Speed == nil:
		in.posOK = true // no speed layer at all: the batch version alone determines the answer
	}
	in.state = viewState(v, in.ver, in.pos, speed, s.opts.Views != nil)
	if !in.state.Ready {
		return in, &RebuildingError{View: v.Name, Progress: in.state.Progress}
	}
	return in, nil
}

// compute computes a view's merged answer: the batch version's rows for
// the view (cutoff C) ⊕ the speed cells of epochs >= C, rolled up, within
// the budget b (a *TooLargeError beyond it). The position (hence the
// watermark) is read before the cells: a commit moves cells and position
// together, so a window marked final has all its cells.
func (s *Server) compute(ctx context.Context, v *logic.View, q Query, in inputs, b *budget) (*answer, error) {
	s.computing.Inc()
	defer s.computing.Dec()
	a, err := s.computeAnswer(ctx, v, q, in, b)
	result := "done"
	if _, tooLarge := isTooLarge(err); tooLarge {
		result = "too_large"
	} else if err != nil && ctx.Err() != nil {
		result = "cancelled"
	} else if err != nil {
		result = "failed"
	}
	s.computations.WithLabelValues(result).Inc()
	return a, err
}

func (s *Server) computeAnswer(ctx context.Context, v *logic.View, q Query, in inputs, b *budget) (*answer, error) {
	a := &answer{View: v, Query: q, Seq: in.pos.Seq}
	var batch []batchviews.Row
	if s.opts.Views != nil {
		if ver := in.ver; ver != nil {
			a.Version = ver.ID
			if vv := in.state.Batch; vv != nil && vv.Cutoff > 0 {
				a.Cutoff = vv.Cutoff
				var err error
				if batch, err = s.opts.Views.Rows(ctx, ver, v, q.From, q.To); err != nil {
					return nil, fmt.Errorf("%w: batch rows: %w", errUnavailable, err)
				}
				if err := b.addCells(len(batch)); err != nil {
					return nil, err
				}
			}
		}
	} else {
		a.Warnings = append(a.Warnings, "batch views unavailable: answer from the speed layer only")
	}
	if in.posOK {
		a.Watermark = logic.Watermark{Max: in.pos.Watermark}.At(v.Stream.AllowedLateness)
	}
	var cells []SpeedCell
	if s.opts.Speed != nil {
		var err error
		if cells, err = s.speedCells(ctx, v, q.From, q.To, a.Cutoff, in, b); err != nil {
			if _, tooLarge := isTooLarge(err); tooLarge || ctx.Err() != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%w: speed cells: %w", errUnavailable, err)
		}
	} else {
		a.Warnings = append(a.Warnings, "speed layer unavailable: answer from the batch views only")
	}
	merged, err := Merge(v, a.Cutoff, batch, cells, a.Watermark)
	if err != nil {
		return nil, err
	}
	batch, cells = nil, nil
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rows, err := Apply(v, merged, q.Rollup, a.Watermark)
	if err != nil {
		return nil, err
	}
	if err := b.addRows(len(rows)); err != nil {
		return nil, err
	}
	a.Rows = OrderLimit(rows, q.Order, q.Desc, q.Limit)
	a.Warnings = append(a.Warnings, overflowWarnings(v, a.Rows)...)
	return a, nil
}

// queryError answers a failed query.
func (s *Server) queryError(w http.ResponseWriter, name string, err error) {
	if te, ok := isTooLarge(err); ok {
		writeTooLarge(w, te)
		return
	}
	var pe *ParamError
	if errors.As(err, &pe) {
		writeError(w, http.StatusBadRequest, "bad parameter "+pe.Param, pe.Msg)
		return
	}
	if re, ok := isRebuilding(err); ok {
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": "view rebuilding", "detail": re.Error(), "progress": re.Progress})
		return
	}
	if errors.Is(err, errUnavailable) {
		s.logger.Warn("query failed", "view", name, "err", err)
		w.Header().Set("Retry-After", "2")
		writeError(w, http.StatusServiceUnavailable, "view unavailable", err.Error())
		return
	}
	s.logger.Error("query failed", "view", name, "err", err)
	writeError(w, http.StatusInternalServerError, "query failed", err.Error())
}

// parseViewQuery resolves the view and parses the query, answering the
// error itself (ok=false).
func (s *Server) parseViewQuery(w http.ResponseWriter, r *http.Request) (*logic.View, Query, bool) {
	name := chi.URLParam(r, "view")
	v := s.opts.Catalog.Views[name]
	if v == nil {
		writeError(w, http.StatusNotFound, "unknown view", name)
		return nil, Query{}, false
	}
	q, err := ParseQuery(v, r.URL.Query())
	if err != nil {
		var pe *ParamError
		if errors.As(err, &pe) {
			writeError(w, http.StatusBadRequest, "bad parameter "+pe.Param, pe.Msg)
			return nil, Query{}, false
		}
		writeError(w, http.StatusBadRequest, "bad query", err.Error())
		return nil, Query{}, false
	}
	return v, q, true
}

func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request) {
	v, q, ok := s.parseViewQuery(w, r)
	if !ok {
		return
	}
	if r.URL.Query().Get("format") == "" && acceptsArrow(r.Header.Get("Accept")) {
		q.Format = "arrow"
	}
	start := time.Now()
	body, err := s.queryBody(r.Context(), v, q)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client left: its computation stopped (or goes on for others)
		}
		s.queryError(w, v.Name, err)
		return
	}
	s.queryDur.WithLabelValues(v.Name).Observe(time.Since(start).Seconds())
	w.Header().Set(DefinitionHeader, v.Definition())
	for _, msg := range body.warnings {
		w.Header().Add(WarningHeader, msg)
	}
	w.Header().Set("Content-Type", contentTypes[q.Format])
	w.Header().Set("Content-Length", strconv.Itoa(body.size))
	w.WriteHeader(http.StatusOK)
	_ = body.writeTo(w)
}

// queryBody answers q in its format: from the answer cache; else, for
// JSON, assembled from the final buckets' encoded rows and the open
// buckets (buckets.go); else computed whole and encoded.
func (s *Server) queryBody(ctx context.Context, v *logic.View, q Query) (*answerBody, error) {
	in, err := s.readInputs(ctx, v)
	if err != nil {
		return nil, err
	}
	if key := s.answerKey(v, q, in); q.Format == "json" && key != "" {
		key += "|body"
		if x, ok := s.cache.get(key); ok {
			s.cacheLookups.WithLabelValues("hit").Inc()
			return x.(*answerBody), nil
		}
		// Queries of one answer asking while it is assembled share that
		// work, which stops when none of them waits any more.
		body, err := s.bodies.do(ctx, key, func(ctx context.Context) (*answerBody, error) {
			body, ok, err := s.answerJSON(ctx, v, q, in)
			if err != nil || !ok {
				return nil, err // nil: not on this path
			}
			s.cache.put(key, body, int64(body.fresh+24*len(body.pieces)))
			return body, nil
		})
		if err != nil {
			return nil, err
		}
		if body != nil {
			s.cacheLookups.WithLabelValues("miss").Inc()
			return body, nil
		}
	}
	e, err := s.lookupWith(ctx, v, q, in)
	if err != nil {
		return nil, err
	}
	b, err := e.encoded(q.Format)
	if err != nil {
		return nil, fmt.Errorf("encode answer as %s: %w", q.Format, err)
	}
	return &answerBody{pieces: [][]byte{b}, size: len(b), fresh: len(b), warnings: e.a.Warnings}, nil
}

var contentTypes = map[string]string{"json": "application/json", "csv": "text/csv; charset=utf-8", "arrow": ArrowMediaType}

// encodeAnswer renders the contract's JSON, with the keys of each row in
// order: window_start, the kept dimensions, the measures, source, exact,
// final and, only when a measure overflowed, overflow.
func encodeAnswer(a *answer) []byte {
	var b bytes.Buffer
	b.Grow(256 + len(a.Rows)*(96+24*(len(a.View.Measures)+len(a.Query.GroupBy))))
	writeAnswerHead(&b, a)
	writeRows(&b, a)
	b.WriteString("]}\n")
	return b.Bytes()
}

// encodeRows renders an answer's rows as a JSON array, as encodeAnswer
// does inside the answer.
func encodeRows(a *answer) []byte {
	var b bytes.Buffer
	b.Grow(2 + len(a.Rows)*(96+24*(len(a.View.Measures)+len(a.Query.GroupBy))))
	b.WriteByte('[')
	writeRows(&b, a)
	b.WriteByte(']')
	return b.Bytes()
}

// writeRows renders an answer's rows, comma-separated.
func writeRows(b *bytes.Buffer, a *answer) {
	enc := newRowEncoder(a)
	for i := range a.Rows {
		if i > 0 {
			b.WriteByte(',')
		}
		enc.row(b, &a.Rows[i])
	}
}

// writeAnswerHead renders an answer's JSON up to the opening of its rows.
func writeAnswerHead(b *bytes.Buffer, a *answer) {
	b.WriteString(`{"view":`)
	writeStr(b, a.View.Name)
	b.WriteString(`,"definition":`)
	writeStr(b, a.View.Definition())
	b.WriteString(`,"from":`)
	writeStr(b, logic.FormatTime(a.Query.From))
	b.WriteString(`,"to":`)
	writeStr(b, logic.FormatTime(a.Query.To))
	b.WriteString(`,"step":`)
	writeStr(b, a.Query.StepText)
	b.WriteString(`,"group_by":`)
	gb, _ := json.Marshal(a.Query.GroupBy)
	b.Write(gb)
	b.WriteString(`,"batch_cutoff":`)
	writeTimeOrNull(b, a.Cutoff)
	b.WriteString(`,"watermark":`)
	writeTimeOrNull(b, a.Watermark)
	if len(a.Warnings) > 0 {
		b.WriteString(`,"warnings":`)
		ws, _ := json.Marshal(a.Warnings)
		b.Write(ws)
	}
	b.WriteString(`,"rows":[`)
}

// rowEncoder renders rows as JSON objects with the keys quoted once per
// answer and the last window's timestamp reused (rows come by window).
type rowEncoder struct {
	dimKeys, measureKeys [][]byte // `,"name":`
	lastWindow           int64
	lastStart            []byte // `{"window_start":"…"`
}

func newRowEncoder(a *answer) *rowEncoder {
	e := &rowEncoder{lastWindow: math.MinInt64}
	key := func(name string) []byte {
		return append(logic.AppendJSONString([]byte{','}, name), ':')
	}
	for _, g := range a.Query.GroupBy {
		e.dimKeys = append(e.dimKeys, key(g))
	}
	for j := range a.View.Measures {
		e.measureKeys = append(e.measureKeys, key(a.View.Measures[j].Name))
	}
	return e
}

// row renders one row (keys in the order window_start, the kept
// dimensions, the measures, source, exact, final and, when a measure
// overflowed, overflow: the names of those measures).
func (e *rowEncoder) row(b *bytes.Buffer, row *ResultRow) {
	if row.Window != e.lastWindow {
		e.lastWindow = row.Window
		e.lastStart = logic.AppendJSONString(append(e.lastStart[:0], `{"window_start":`...), logic.FormatTime(row.Window))
	}
	b.Write(e.lastStart)
	for j, d := range row.Dims {
		b.Write(e.dimKeys[j])
		writeAny(b, d.Any())
	}
	for j := range e.measureKeys {
		b.Write(e.measureKeys[j])
		writeAny(b, row.Values[j])
	}
	switch row.Source {
	case SourceBatch:
		b.WriteString(`,"source":"batch"`)
	case SourceSpeed:
		b.WriteString(`,"source":"speed"`)
	case SourceBoth:
		b.WriteString(`,"source":"batch+speed"`)
	default:
		b.WriteString(`,"source":`)
		writeStr(b, row.Source)
	}
	if row.Exact {
		b.WriteString(`,"exact":true`)
	} else {
		b.WriteString(`,"exact":false`)
	}
	if row.Final {
		b.WriteString(`,"final":true`)
	} else {
		b.WriteString(`,"final":false`)
	}
	if row.Overflow != nil {
		b.WriteString(`,"overflow":[`)
		for i, j := range row.Overflow {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(e.measureKeys[j][1 : len(e.measureKeys[j])-1]) // the quoted name
		}
		b.WriteByte(']')
	}
	b.WriteByte('}')
}

func writeStr(b *bytes.Buffer, s string) {
	b.Write(logic.AppendJSONString(b.AvailableBuffer(), s))
}

func writeTimeOrNull(b *bytes.Buffer, ms int64) {
	if ms <= 0 {
		b.WriteString("null")
		return
	}
	writeStr(b, logic.FormatTime(ms))
}

func writeAny(b *bytes.Buffer, x any) {
	switch y := x.(type) {
	case nil:
		b.WriteString("null")
	case int64:
		b.Write(strconv.AppendInt(b.AvailableBuffer(), y, 10))
	case float64:
		if math.IsNaN(y) || math.IsInf(y, 0) {
			b.WriteString("null")
			return
		}
		b.Write(strconv.AppendFloat(b.AvailableBuffer(), y, 'g', -1, 64))
	case bool:
		b.WriteString(strconv.FormatBool(y))
	case string:
		writeStr(b, y)
	default:
		j, err := json.Marshal(y)
		if err != nil {
			b.WriteString("null")
			return
		}
		b.Write(j)
	}
}

func csvValue(x any) string {
	switch y := x.(type) {
	case nil:
		return ""
	case int64:
		return strconv.FormatInt(y, 10)
	case float64:
		if math.IsNaN(y) || math.IsInf(y, 0) {
			return ""
		}
		return strconv.FormatFloat(y, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(y)
	case string:
		return y
	}
	return fmt.Sprint(x)
}

func writeCSV(w io.Writer, a *answer) error {
	cw := csv.NewWriter(w)
	head := []string{"window_start"}
	head = append(head, a.Query.GroupBy...)
	for i := range a.View.Measures {
		head = append(head, a.View.Measures[i].Name)
	}
	head = append(head, "source", "exact", "final")
	if err := cw.Write(head); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	rec := make([]string, 0, len(head))
	for i := range a.Rows {
		row := &a.Rows[i]
		rec = append(rec[:0], logic.FormatTime(row.Window))
		for _, d := range row.Dims {
			rec = append(rec, csvValue(d.Any()))
		}
		for _, x := range row.Values {
			rec = append(rec, csvValue(x))
		}
		rec = append(rec, row.Source, strconv.FormatBool(row.Exact), strconv.FormatBool(row.Final))
		if err := cw.Write(rec); err != nil {
			return fmt.Errorf("write csv: %w", err)
		}
	}
	cw.Flush()
	return cw.Error()
}
