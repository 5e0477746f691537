package serving

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
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
	Name     string        `json:"name"`
	Stream   string        `json:"stream"`
	Window   string        `json:"window"`
	Hop      *string       `json:"hop"`
	Step     string        `json:"step"`
	Dims     []string      `json:"dims"`
	Where    string        `json:"where"`
	Measures []measureInfo `json:"measures"`
	Exact    bool          `json:"exact"`
}

type measureInfo struct {
	Name  string  `json:"name"`
	Kind  string  `json:"kind"`
	Field string  `json:"field"`
	Q     float64 `json:"q"`
	Exact bool    `json:"exact"`
}

func (s *Server) handleViews(w http.ResponseWriter, r *http.Request) {
	out := make([]viewInfo, 0, len(s.opts.Catalog.ViewOrder))
	for _, name := range s.opts.Catalog.ViewOrder {
		v := s.opts.Catalog.Views[name]
		vi := viewInfo{Name: name, Stream: v.Stream.Name, Window: fmtDuration(v.Window.Size.Milliseconds()),
			Step: fmtDuration(v.Window.Step().Milliseconds()), Dims: append([]string{}, v.Dims...), Where: v.Where, Exact: v.Exact()}
		if v.Window.Hop != 0 && v.Window.Hop != v.Window.Size {
			h := fmtDuration(v.Window.Hop.Milliseconds())
			vi.Hop = &h
		}
		for i := range v.Measures {
			m := &v.Measures[i]
			vi.Measures = append(vi.Measures, measureInfo{Name: m.Name, Kind: m.Kind.String(), Field: m.Field, Q: m.Q, Exact: m.Exact()})
		}
		out = append(out, vi)
	}
	writeJSON(w, http.StatusOK, map[string]any{"views": out})
}

// answer is a computed query answer.
type answer struct {
	View      *logic.View
	Query     Query
	Cutoff    int64 // 0: no batch
	Watermark int64 // 0: unknown
	Rows      []ResultRow
	Warnings  []string
}

// errUnavailable marks an answer that cannot be computed now (503).
var errUnavailable = errors.New("unavailable")

// Answer computes a view's merged answer: the current batch version's rows
// for the view (cutoff C) ⊕ the speed cells of epochs >= C, rolled up.
func (s *Server) answer(ctx context.Context, v *logic.View, q Query) (*answer, error) {
	a := &answer{View: v, Query: q}
	var batch []batchviews.Row
	if s.opts.Views != nil {
		ver, err := s.opts.Views.Current()
		if err != nil {
			return nil, fmt.Errorf("%w: batch views: %w", errUnavailable, err)
		}
		if ver != nil {
			if vv, ok := ver.Views[v.Name]; ok && vv.Cutoff > 0 {
				a.Cutoff = vv.Cutoff
				if batch, err = s.opts.Views.Rows(ctx, ver, v, q.From, q.To); err != nil {
					return nil, fmt.Errorf("%w: batch rows: %w", errUnavailable, err)
				}
			}
		}
	} else {
		a.Warnings = append(a.Warnings, "batch views unavailable: answer from the speed layer only")
	}
	var cells []SpeedCell
	if s.opts.Speed != nil {
		var err error
		if cells, err = s.opts.Speed.ReadCells(ctx, v, q.From, q.To, a.Cutoff); err != nil {
			return nil, fmt.Errorf("%w: speed cells: %w", errUnavailable, err)
		}
	} else {
		a.Warnings = append(a.Warnings, "speed layer unavailable: answer from the batch views only")
	}
	a.Watermark = s.watermark(ctx, v.Stream)
	merged, err := Merge(v, a.Cutoff, batch, cells, a.Watermark)
	if err != nil {
		return nil, err
	}
	rows, err := Apply(v, merged, q.Rollup, a.Watermark)
	if err != nil {
		return nil, err
	}
	a.Rows = OrderLimit(rows, q.Order, q.Desc, q.Limit)
	return a, nil
}

// watermark is the stream's watermark (largest event time seen by the speed
// layer minus the allowed lateness), 0 when unknown.
func (s *Server) watermark(ctx context.Context, st *logic.Stream) int64 {
	if s.opts.SpeedStatus == nil {
		return 0
	}
	pos, err := s.opts.SpeedStatus.StreamStatus(ctx, st.Name)
	if err != nil {
		s.logger.Warn("speed status", "stream", st.Name, "err", err)
		return 0
	}
	return logic.Watermark{Max: pos.Watermark}.At(st.AllowedLateness)
}

func (s *Server) handleQuery(w http.ResponseWriter, r *http.Request) {
	name := chi.URLParam(r, "view")
	v := s.opts.Catalog.Views[name]
	if v == nil {
		writeError(w, http.StatusNotFound, "unknown view", name)
		return
	}
	q, err := ParseQuery(v, r.URL.Query())
	if err != nil {
		var pe *ParamError
		if errors.As(err, &pe) {
			writeError(w, http.StatusBadRequest, "bad parameter "+pe.Param, pe.Msg)
			return
		}
		writeError(w, http.StatusBadRequest, "bad query", err.Error())
		return
	}
	start := time.Now()
	a, err := s.answer(r.Context(), v, q)
	if err != nil {
		if errors.Is(err, errUnavailable) {
			s.logger.Warn("query failed", "view", name, "err", err)
			w.Header().Set("Retry-After", "2")
			writeError(w, http.StatusServiceUnavailable, "view unavailable", err.Error())
			return
		}
		s.logger.Error("query failed", "view", name, "err", err)
		writeError(w, http.StatusInternalServerError, "query failed", err.Error())
		return
	}
	s.queryDur.WithLabelValues(name).Observe(time.Since(start).Seconds())
	if q.Format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_ = writeCSV(w, a)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(encodeAnswer(a))
}

// encodeAnswer renders the contract's JSON, with the keys of each row in
// order: window_start, the kept dimensions, the measures, source, exact, final.
func encodeAnswer(a *answer) []byte {
	var b bytes.Buffer
	b.WriteString(`{"view":`)
	writeStr(&b, a.View.Name)
	b.WriteString(`,"from":`)
	writeStr(&b, logic.FormatTime(a.Query.From))
	b.WriteString(`,"to":`)
	writeStr(&b, logic.FormatTime(a.Query.To))
	b.WriteString(`,"step":`)
	writeStr(&b, a.Query.StepText)
	b.WriteString(`,"group_by":`)
	gb, _ := json.Marshal(a.Query.GroupBy)
	b.Write(gb)
	b.WriteString(`,"batch_cutoff":`)
	writeTimeOrNull(&b, a.Cutoff)
	b.WriteString(`,"watermark":`)
	writeTimeOrNull(&b, a.Watermark)
	if len(a.Warnings) > 0 {
		b.WriteString(`,"warnings":`)
		ws, _ := json.Marshal(a.Warnings)
		b.Write(ws)
	}
	b.WriteString(`,"rows":[`)
	for i := range a.Rows {
		row := &a.Rows[i]
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"window_start":`)
		writeStr(&b, logic.FormatTime(row.Window))
		for j, d := range row.Dims {
			b.WriteByte(',')
			writeStr(&b, a.Query.GroupBy[j])
			b.WriteByte(':')
			writeAny(&b, d.Any())
		}
		for j := range a.View.Measures {
			b.WriteByte(',')
			writeStr(&b, a.View.Measures[j].Name)
			b.WriteByte(':')
			writeAny(&b, row.Values[j])
		}
		b.WriteString(`,"source":`)
		writeStr(&b, row.Source)
		b.WriteString(`,"exact":`)
		b.WriteString(strconv.FormatBool(row.Exact))
		b.WriteString(`,"final":`)
		b.WriteString(strconv.FormatBool(row.Final))
		b.WriteByte('}')
	}
	b.WriteString("]}\n")
	return b.Bytes()
}

func writeStr(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s)
	b.Write(q)
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
		b.WriteString(strconv.FormatInt(y, 10))
	case float64:
		if math.IsNaN(y) || math.IsInf(y, 0) {
			b.WriteString("null")
			return
		}
		b.WriteString(strconv.FormatFloat(y, 'g', -1, 64))
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

func writeCSV(w http.ResponseWriter, a *answer) error {
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
