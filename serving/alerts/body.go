package alerts

import (
	"bytes"
	"encoding/json"
	"math"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/serving/query"
)

// Body is what a delivery sends (the JSON a webhook receives, or the data
// of a NATS message), as the contract names its fields.
type Body struct {
	ID          string         `json:"id"`
	Alert       string         `json:"alert"`
	View        string         `json:"view"`
	WindowStart string         `json:"window_start"`
	Group       map[string]any `json:"group"`
	Values      map[string]any `json:"values"`
	Source      string         `json:"source"`
	Exact       bool           `json:"exact"`
	Final       bool           `json:"final"`
	State       string         `json:"state"`
	At          string         `json:"at"`
}

// makeBody renders a decision on row r of alert a, decided at (unix ms).
func makeBody(a *logic.Alert, id, state string, r *query.ResultRow, at int64) []byte {
	v := a.View
	b := Body{ID: id, Alert: a.Name, View: v.Name, WindowStart: logic.FormatTime(r.Window),
		Group: groupMap(v, r.Dims), Values: valueMap(v, r.Values),
		Source: r.Source, Exact: r.Exact, Final: r.Final, State: state, At: logic.FormatTime(at)}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(b) // maps of plain values: cannot fail
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// groupMap names a row's dimension values.
func groupMap(v *logic.View, dims []logic.Value) map[string]any {
	m := make(map[string]any, len(dims))
	for i, d := range dims {
		if i < len(v.Dims) {
			m[v.Dims[i]] = d.Any()
		}
	}
	return m
}

// valueMap names a row's measures (NaN and infinities: null).
func valueMap(v *logic.View, vals []any) map[string]any {
	m := make(map[string]any, len(vals))
	for i, x := range vals {
		if i >= len(v.Measures) {
			break
		}
		if f, ok := x.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
			x = nil
		}
		m[v.Measures[i].Name] = x
	}
	return m
}

// bodyValues reads the measures of a stored body back in the view's
// order (numbers as json.Number; a measure it lacks is null).
func bodyValues(v *logic.View, body []byte) []any {
	var b struct {
		Values map[string]any `json:"values"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	_ = dec.Decode(&b)
	out := make([]any, len(v.Measures))
	for i := range v.Measures {
		out[i] = b.Values[v.Measures[i].Name]
	}
	return out
}
