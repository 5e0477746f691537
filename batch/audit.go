package batch

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/eventlog"
	"github.com/braid-data/braid/storage/lake"
)

// AuditRequest says what to audit: the speed layer's windows of View that
// start in [From, To), over arrival epochs >= Cutoff (the batch cutoff: the
// part of the answer the speed layer gives).
type AuditRequest struct {
	View     *logic.View
	From, To int64
	Cutoff   int64
	Wait     time.Duration // how long to wait for the lake to reach the speed position
	// Late lists the places (partition, sequence, index) of events the
	// speed layer skipped as too late (eventlog's late records): the
	// recomputation leaves them out too, as the speed layer's answer does
	// until the next batch run.
	Late []eventlog.EventRef
}

// AuditMeasure is one measure's drift in one window: the largest over the
// window's groups.
type AuditMeasure struct {
	Name  string  `json:"name"`
	Kind  string  `json:"kind"`
	Drift float64 `json:"drift"` // additive, count_distinct: absolute; quantile: relative to max(|v_lo|, |v_hi|), the values quantile_cont interpolates between
	Bound float64 `json:"bound"` // the largest drift the measure's definition allows there
	OK    bool    `json:"ok"`
}

// AuditWindow is one window of the audit.
type AuditWindow struct {
	Window   int64          `json:"window_start"` // unix ms; RFC 3339 in JSON
	Groups   int            `json:"groups"`
	Missing  []string       `json:"missing,omitempty"` // groups only one side has, with the side
	Measures []AuditMeasure `json:"measures"`
	OK       bool           `json:"ok"`
}

// AuditReport is the result of Audit.
type AuditReport struct {
	View   string `json:"view"`
	Cutoff int64  `json:"cutoff"` // unix ms (0: none); RFC 3339 or null in JSON
	Seq    uint64 `json:"seq"`    // the speed position audited (a log record): events of the records up to it; with stream partitions the sum of Positions
	// Positions is the speed position audited per stream partition, when
	// the stream has more than one.
	Positions []uint64      `json:"positions,omitempty"`
	Events    int64         `json:"events"` // lake events recomputed (arrival >= cutoff, at or before the position of their partition, not too late)
	Late      int           `json:"late"`   // too-late events left out
	Windows   []AuditWindow `json:"windows"`
	OK        bool          `json:"ok"`
}

// MarshalJSON renders a drift or bound that is not a finite number (one
// side answered null, or a value overflowed) as null.
func (m AuditMeasure) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name  string   `json:"name"`
		Kind  string   `json:"kind"`
		Drift *float64 `json:"drift"`
		Bound *float64 `json:"bound"`
		OK    bool     `json:"ok"`
	}{m.Name, m.Kind, finiteOrNil(m.Drift), finiteOrNil(m.Bound), m.OK})
}

func finiteOrNil(x float64) *float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return nil
	}
	return &x
}

// MarshalJSON renders window_start as RFC 3339 in UTC, like query rows.
func (w AuditWindow) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Window   string         `json:"window_start"`
		Groups   int            `json:"groups"`
		Missing  []string       `json:"missing,omitempty"`
		Measures []AuditMeasure `json:"measures"`
		OK       bool           `json:"ok"`
	}{logic.FormatTime(w.Window), w.Groups, w.Missing, w.Measures, w.OK})
}

// MarshalJSON renders the cutoff as RFC 3339 in UTC (null: no batch
// cutoff), like query answers.
func (r AuditReport) MarshalJSON() ([]byte, error) {
	var cutoff *string
	if r.Cutoff > 0 {
		c := logic.FormatTime(r.Cutoff)
		cutoff = &c
	}
	return json.Marshal(struct {
		View      string        `json:"view"`
		Cutoff    *string       `json:"cutoff"`
		Seq       uint64        `json:"seq"`
		Positions []uint64      `json:"positions,omitempty"`
		Events    int64         `json:"events"`
		Late      int           `json:"late"`
		Windows   []AuditWindow `json:"windows"`
		OK        bool          `json:"ok"`
	}{r.View, cutoff, r.Seq, r.Positions, r.Events, r.Late, r.Windows, r.OK})
}

// ErrLakeBehind is returned when the lake does not reach the speed
// layer's position within the request's Wait.
var ErrLakeBehind = errors.New("the lake has not archived up to the speed position yet")

// Audit recomputes the speed layer's windows exactly from the lake and
// reports, per window, each measure's drift against its bound: additive
// measures must be equal (up to float rounding of sums added in another
// order), count_distinct within logic.DistinctTolerance and quantiles
// within logic.QuantileErrorBound of the exact quantile_cont. It reads a consistent snapshot
// of the speed layer (its position unchanged across the read), waits for
// the lake to hold every event up to that position, and recomputes over
// exactly those events with DuckDB. With stream partitions, the position
// is one per partition (each read unchanged across the read), and the
// recomputation takes each partition's events up to its position. Events
// the speed layer skipped as too late show as drift until the next batch
// run absorbs them.
func Audit(ctx context.Context, lk LakeReader, sp SpeedSnapshot, req AuditRequest) (*AuditReport, error) {
	v := req.View
	n := max(1, v.Stream.Partitions)
	positions := func() ([]uint64, error) {
		out := make([]uint64, n)
		for p := range n {
			seq, _, err := sp.Position(ctx, v.Stream.Name, p)
			if err != nil {
				return nil, err
			}
			out[p] = seq
		}
		return out, nil
	}
	var seqs []uint64
	var cells []SpeedCell
	for attempt := 0; ; attempt++ {
		p1, err := positions()
		if err != nil {
			return nil, err
		}
		if cells, err = sp.Cells(ctx, v, req.From, req.To, req.Cutoff); err != nil {
			return nil, err
		}
		p2, err := positions()
		if err != nil {
			return nil, err
		}
		if slices.Equal(p1, p2) {
			seqs = p2
			break
		}
		if attempt == 50 {
			return nil, fmt.Errorf("audit: the speed layer kept committing during 50 reads; retry when ingest is quieter")
		}
	}
	deadline := time.Now().Add(req.Wait)
	for p := 0; p < n; {
		cp, err := lk.PartCheckpoint(v.Stream.Name, p)
		if err != nil {
			return nil, err
		}
		if cp.Seq >= seqs[p] {
			p++
			continue
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w: partition %d: lake at seq %d, speed at %d", ErrLakeBehind, p, cp.Seq, seqs[p])
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	files, err := lk.Files(v.Stream.Name)
	if err != nil {
		return nil, err
	}

	db, err := sql.Open("duckdb", "")
	if err != nil {
		return nil, fmt.Errorf("audit: open duckdb: %w", err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: duckdb: %w", err)
	}
	defer conn.Close()
	// Each partition's events up to its speed position.
	upTo := make([]string, n)
	var total uint64
	for p, seq := range seqs {
		upTo[p] = fmt.Sprintf("(%s = %d AND %s <= %d)", lake.ColPart, p, lake.ColSeq, seq)
		total += seq
	}
	var skip strings.Builder
	for i, r := range req.Late {
		if i == 0 {
			skip.WriteString(" AND NOT EXISTS (SELECT 1 FROM (VALUES ")
		} else {
			skip.WriteString(", ")
		}
		fmt.Fprintf(&skip, "(%d, %d, %d)", r.Part, r.Seq, r.Index)
		if i == len(req.Late)-1 {
			skip.WriteString(") AS late(p, s, i) WHERE late.p = l._part AND late.s = l._seq AND late.i = l._idx)")
		}
	}
	src := fmt.Sprintf("(SELECT * FROM (%s) AS l WHERE (%s) AND _arrival >= %d%s)", sourceSQL(v.Stream, files), strings.Join(upTo, " OR "), req.Cutoff, skip.String())
	rep := &AuditReport{View: v.Name, Cutoff: req.Cutoff, Seq: total, Late: len(req.Late), OK: true}
	if n > 1 {
		rep.Positions = seqs
	}
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM "+src+" AS s").Scan(&rep.Events); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	exact, err := queryView(ctx, conn, v, src, math.MaxInt64, math.MinInt64, math.MaxInt64)
	if err != nil {
		return nil, fmt.Errorf("audit: view %s: %w", v.Name, err)
	}
	ranks := map[cellKey][]float64{}
	nq := 0
	for _, m := range v.Measures {
		if m.Kind == logic.Quantile {
			nq++
		}
	}
	if nq > 0 {
		err := scanCells(ctx, conn, v, v.QuantileRanksSQL(src, math.MaxInt64), 2*nq, func(k cellKey, vals []any) error {
			r := make([]float64, 2*nq)
			for i := range r {
				x, err := float(vals[i])
				if err != nil {
					return err
				}
				r[i] = x
			}
			ranks[k] = r
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("audit: view %s: %w", v.Name, err)
		}
	}

	// The speed layer's answer per cell: its epochs merged.
	speed := map[cellKey]*logic.State{}
	for _, c := range cells {
		k := cellKey{c.Window, c.Group}
		if st, ok := speed[k]; ok {
			v.MergeState(st, c.State)
			continue
		}
		st := c.State.Clone()
		speed[k] = &st
	}
	byWindow := map[int64]*AuditWindow{}
	window := func(w int64) *AuditWindow {
		aw := byWindow[w]
		if aw == nil {
			aw = &AuditWindow{Window: w, OK: true}
			for _, m := range v.Measures {
				aw.Measures = append(aw.Measures, AuditMeasure{Name: m.Name, Kind: m.Kind.String(), OK: true})
			}
			byWindow[w] = aw
		}
		return aw
	}
	for _, row := range exact {
		if row.Window < req.From || row.Window >= req.To {
			continue
		}
		k := cellKey{row.Window, row.Group}
		aw := window(row.Window)
		aw.Groups++
		st, ok := speed[k]
		if !ok {
			aw.Missing = append(aw.Missing, "lake only: "+groupLabel(v, row.Group))
			aw.OK = false
			continue
		}
		delete(speed, k)
		got, want := v.Finalize(st), v.Finalize(&row.State)
		qi := 0
		for i, m := range v.Measures {
			var lo, hi float64
			if m.Kind == logic.Quantile {
				r := ranks[k]
				lo, hi = r[2*qi], r[2*qi+1]
				qi++
			}
			drift, bound := measureDrift(&m, got[i], want[i], lo, hi)
			am := &aw.Measures[i]
			am.Drift = math.Max(am.Drift, drift)
			am.Bound = math.Max(am.Bound, bound)
			if drift > bound {
				am.OK, aw.OK = false, false
			}
		}
	}
	for k := range speed {
		aw := window(k.w)
		aw.Groups++
		aw.Missing = append(aw.Missing, "speed only: "+groupLabel(v, k.g))
		aw.OK = false
	}
	for _, aw := range byWindow {
		sort.Strings(aw.Missing)
		rep.Windows = append(rep.Windows, *aw)
		rep.OK = rep.OK && aw.OK
	}
	sort.Slice(rep.Windows, func(i, j int) bool { return rep.Windows[i].Window < rep.Windows[j].Window })
	return rep, nil
}

// measureDrift returns a measure's drift between the speed layer's answer
// and the exact one, and the bound the measure allows. lo and hi are the
// values of the ranks a quantile interpolates between; a quantile's drift
// is relative to the larger of their magnitudes.
func measureDrift(m *logic.Measure, got, want any, lo, hi float64) (drift, bound float64) {
	if m.Kind == logic.Last || m.Kind == logic.First {
		// Exact, of any type: the same value or a drift of 1.
		if sameAnswer(got, want) {
			return 0, 0
		}
		return 1, 0
	}
	g, gok := number(got)
	w, wok := number(want)
	if gok != wok {
		return math.Inf(1), 0
	}
	if !gok {
		return 0, 0 // both null
	}
	switch m.Kind {
	case logic.CountDistinct:
		return math.Abs(g - w), logic.DistinctTolerance(int64(w))
	case logic.Quantile:
		// The exact answer is quantile_cont, interpolated between lo and
		// hi; the sketch estimates it within logic.QuantileErrorBound.
		d := math.Abs(g - w)
		scale := math.Max(math.Abs(lo), math.Abs(hi))
		if scale == 0 {
			return d, 0
		}
		return d / scale, logic.QuantileErrorBound(lo, hi) / scale
	}
	// Additive: equal, up to rounding of float sums added in another order.
	return math.Abs(g - w), 1e-9 * math.Max(1, math.Abs(w))
}

// sameAnswer reports whether two finalized values are equal (times by
// instant).
func sameAnswer(x, y any) bool {
	if a, ok := x.(time.Time); ok {
		b, ok := y.(time.Time)
		return ok && a.Equal(b)
	}
	return x == y
}

func number(x any) (float64, bool) {
	switch y := x.(type) {
	case int64:
		return float64(y), true
	case float64:
		return y, true
	}
	return 0, false
}

func groupLabel(v *logic.View, g string) string {
	vals, err := v.DecodeGroup(g)
	if err != nil || len(vals) == 0 {
		return "(all)"
	}
	s := ""
	for i, x := range vals {
		if i > 0 {
			s += ","
		}
		s += v.Dims[i] + "=" + x.String()
		if x.Null() {
			s += "null"
		}
	}
	return s
}
