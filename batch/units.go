package batch

import (
	"fmt"
	"sort"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
)

// A batch run is split into work units: one per view and window-start date.
// Unit (V, D) computes the rows of view V whose window start falls in
// [D, D+1d) (UTC). It reads the lake files of V's stream dated D .. D+k,
// where k (UnitSpan) covers the windows that start on D and end after its
// midnight: events dated before D never fall in a window starting on D. All
// of one cell's events are in one unit, so exact measures (count_distinct,
// quantiles) stay exact, and a view's rows in a version are the
// concatenation of its parts.

const dayMs = int64(24 * time.Hour / time.Millisecond)

// Unit is one work unit of a run, with everything a worker needs to
// compute it.
type Unit struct {
	Run        string          `json:"run"`
	View       string          `json:"view"`
	Definition string          `json:"definition"` // the view's definition (logic.View.Definition) the run computes
	Date       string          `json:"date"`       // window-start date, UTC, YYYY-MM-DD
	Cutoff     int64           `json:"cutoff"`     // rows that arrived before it count (unix ms, an epoch start)
	Stream     string          `json:"stream"`
	Files      []lake.FileInfo `json:"files"` // the lake files to read (the stream's files dated Date .. Date+k)
}

// ID names the unit within every run: run/view/date.
func (u Unit) ID() string { return u.Run + "/" + u.View + "/" + u.Date }

// Keys are the object keys of the unit's files.
func (u Unit) Keys() []string {
	out := make([]string, len(u.Files))
	for i, f := range u.Files {
		out[i] = f.Key
	}
	return out
}

// UnitResult is the outcome of one unit: its Part (Part.Cutoff set to the
// unit's cutoff), and the lake rows before the cutoff it read, per file key
// and in all; or the error that failed it (Err non-empty: the unit's view
// fails in the run).
type UnitResult struct {
	Unit     Unit             `json:"-"`
	Part     batchviews.Part  `json:"part"`
	RowsRead int64            `json:"rows_read"`
	FileRows map[string]int64 `json:"file_rows,omitempty"`
	Err      string           `json:"error,omitempty"`
}

// UnitSpan is k: the number of days after a window-start date D whose
// events may still fall in a window starting on D (0 or 1 for windows of
// at most a day). Windows are aligned to the UTC epoch: when their step
// divides a day, the last window starting on D starts at D+1d-step, else
// (conservatively) at D+1d-1ms; a window starting on a day whose step is a
// whole number of days starts at D itself.
func UnitSpan(w logic.Window) int {
	step := w.Step().Milliseconds()
	size := w.Size.Milliseconds()
	var last int64 // latest offset from D of a window starting on D
	switch {
	case step <= 0 || size <= 0:
		return 0
	case dayMs%step == 0:
		last = dayMs - step
	case step%dayMs == 0:
		last = 0
	default:
		last = dayMs - 1
	}
	return int((last + size - 1) / dayMs)
}

// dateOf is the UTC date (YYYY-MM-DD) of unix ms.
func dateOf(ms int64) string { return time.UnixMilli(ms).UTC().Format(time.DateOnly) }

// dateMs is the start (unix ms) of a YYYY-MM-DD date, UTC.
func dateMs(date string) (int64, error) {
	t, err := time.Parse(time.DateOnly, date)
	if err != nil {
		return 0, fmt.Errorf("batch: bad date %q: %w", date, err)
	}
	return t.UnixMilli(), nil
}

// addDays shifts a YYYY-MM-DD date by n days.
func addDays(date string, n int) (string, error) {
	ms, err := dateMs(date)
	if err != nil {
		return "", err
	}
	return dateOf(ms + int64(n)*dayMs), nil
}

// PlanInput is what planning one view of a run needs.
type PlanInput struct {
	Run    string
	View   *logic.View
	Files  []lake.FileInfo // the committed files of the view's stream (its manifest's)
	Cutoff int64           // the run's cutoff for the view's stream
	// Prev is the view's entry in the version the run builds on (nil: none,
	// or rows of another definition, which are never reused).
	Prev *batchviews.ViewVersion
	// Horizon, when set (YYYY-MM-DD), is the first window-start date kept:
	// earlier dates get no unit (the stream's retention).
	Horizon string
}

// Plan is a view's share of a run: the units to compute and the parts
// carried over from the version the run builds on, by date.
type Plan struct {
	Compute []Unit
	Reuse   []batchviews.Part
}

// PlanView splits a view's run into units. The dates are the window-start
// dates that may have rows: the date of each file and the UnitSpan dates
// before it. Unit (V, D) reads the files dated D .. D+k. It is reused (the
// previous version's Part for D carried over) when the previous version
// has the view under the same definition with a Part for D, and every file
// the unit would read holds only rows that arrived before both that Part's
// cutoff and the run's (MaxArrival below both): then the part's rows are
// exactly what computing the unit would give. Otherwise it is computed. A
// date with no file to read has no unit and no part.
func PlanView(in PlanInput) (Plan, error) {
	v := in.View
	k := UnitSpan(v.Window)
	byDate := map[string][]lake.FileInfo{}
	dates := map[string]bool{}
	for _, f := range in.Files {
		if _, err := dateMs(f.Date); err != nil {
			return Plan{}, fmt.Errorf("batch: file %s: %w", f.Key, err)
		}
		byDate[f.Date] = append(byDate[f.Date], f)
		for i := 0; i <= k; i++ {
			d, _ := addDays(f.Date, -i)
			if in.Horizon == "" || d >= in.Horizon {
				dates[d] = true
			}
		}
	}
	prev := map[string]batchviews.Part{}
	if in.Prev != nil && in.Prev.Definition == v.Definition() {
		for _, p := range in.Prev.Parts {
			prev[p.Date] = p
		}
	}
	sorted := make([]string, 0, len(dates))
	for d := range dates {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted)
	var out Plan
	for _, d := range sorted {
		var files []lake.FileInfo
		for i := 0; i <= k; i++ {
			di, _ := addDays(d, i)
			files = append(files, byDate[di]...)
		}
		if len(files) == 0 {
			continue
		}
		if p, ok := prev[d]; ok && unchangedSince(files, min(p.Cutoff, in.Cutoff)) {
			out.Reuse = append(out.Reuse, p)
			continue
		}
		sort.Slice(files, func(i, j int) bool { return files[i].First < files[j].First })
		out.Compute = append(out.Compute, Unit{Run: in.Run, View: v.Name, Definition: v.Definition(), Date: d, Cutoff: in.Cutoff, Stream: v.Stream.Name, Files: files})
	}
	return out, nil
}

// unchangedSince reports whether every file holds only rows that arrived
// before c.
func unchangedSince(files []lake.FileInfo, c int64) bool {
	for _, f := range files {
		if f.MaxArrival >= c {
			return false
		}
	}
	return true
}
