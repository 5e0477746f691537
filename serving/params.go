package serving

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving/query"
)

// MaxBuckets bounds the rows per group an answer may have: the buckets of
// its range, windows of the view or steps of a rollup (`all` is one). It
// bounds the range a step may cover, not what a query reads: what it reads
// and computes is bounded apart (http.query_max_cells, http.query_max_rows).
const MaxBuckets = 100_000

// ParamError is a bad query parameter (answered 400).
type ParamError struct {
	Param string
	Msg   string
}

func (e *ParamError) Error() string { return e.Param + ": " + e.Msg }

func perr(param, format string, args ...any) *ParamError {
	return &ParamError{Param: param, Msg: fmt.Sprintf(format, args...)}
}

// ParseQuery reads from, to, step, group_by, where, format, order and limit
// for view v. Errors are *ParamError.
func ParseQuery(v *logic.View, q url.Values) (query.Query, error) {
	out := query.Query{Order: -1, Format: "json"}
	var err error
	if out.From, err = parseTime(q, "from"); err != nil {
		return out, err
	}
	if out.To, err = parseTime(q, "to"); err != nil {
		return out, err
	}
	if out.From >= out.To {
		return out, perr("from", "must be before to")
	}
	viewStep := v.Window.Step().Milliseconds()
	size := v.Window.Size.Milliseconds()
	switch step := strings.TrimSpace(q.Get("step")); step {
	case "":
		out.StepText = fmtDuration(viewStep)
	case "all":
		out.All, out.StepText = true, "all"
	default:
		d, err := config.ParseDuration(step)
		if err != nil || d <= 0 || d%time.Millisecond != 0 {
			return out, perr("step", "bad duration %q (e.g. 5m, 1h, 1d or all)", step)
		}
		ms := d.Milliseconds()
		switch {
		case ms == viewStep:
		case viewStep != size && ms%size != 0:
			return out, perr("step", "%s is not a multiple of the window %s of this hopping view (or its hop %s)", step, fmtDuration(size), fmtDuration(viewStep))
		case ms%viewStep != 0:
			return out, perr("step", "%s is not a multiple of the view's window %s", step, fmtDuration(viewStep))
		}
		out.Step, out.StepText = ms, step
	}
	if !out.All {
		unit := max(out.Step, viewStep)
		if n := floorDiv(out.To-1, unit) - floorDiv(out.From, unit) + 1; n > MaxBuckets {
			what := "windows of " + fmtDuration(viewStep)
			if out.Step != 0 && out.Step != viewStep {
				what = "steps of " + out.StepText
			}
			return out, perr("to", "the range spans %d %s, at most %d are answered (a coarser step, or step=all, answers a longer range)", n, what, MaxBuckets)
		}
	}
	if vals, ok := q["group_by"]; ok {
		out.Dims = []int{}
		out.GroupBy = []string{}
		for _, s := range vals {
			for _, name := range strings.Split(s, ",") {
				name = strings.TrimSpace(name)
				if name == "" {
					continue
				}
				i := slices.Index(v.Dims, name)
				if i < 0 {
					return out, perr("group_by", "unknown dimension %q (the view's dimensions: %s)", name, strings.Join(v.Dims, ", "))
				}
				if slices.Contains(out.Dims, i) {
					return out, perr("group_by", "dimension %q is listed twice", name)
				}
				out.Dims = append(out.Dims, i)
				out.GroupBy = append(out.GroupBy, name)
			}
		}
	} else {
		out.GroupBy = slices.Clone(v.Dims)
	}
	byDim := map[int]int{}
	for _, s := range q["where"] {
		cur := -1 // the filter the items that name no dimension add values to
		for _, it := range splitWhere(s) {
			if it.text == "" && it.colon < 0 {
				continue
			}
			i := -1
			if it.colon >= 0 {
				name := strings.TrimSpace(it.text[:it.colon])
				if name == "" {
					return out, perr("where", "want dim:value, got %q", it.raw)
				}
				if i = slices.Index(v.Dims, name); i < 0 {
					return out, perr("where", "unknown dimension %q in %q (the view's dimensions: %s; a colon in a value after a comma is written \\:)",
						name, it.raw, strings.Join(v.Dims, ", "))
				}
			}
			val := it.text
			switch {
			case i >= 0:
				val = it.text[it.colon+1:]
				if j, ok := byDim[i]; ok {
					cur = j
				} else {
					cur = len(out.Filters)
					byDim[i] = cur
					out.Filters = append(out.Filters, query.Filter{Dim: i})
				}
			case cur < 0:
				return out, perr("where", "want dim:value, got %q", it.raw)
			}
			out.Filters[cur].Values = append(out.Filters[cur].Values, val)
		}
	}
	switch f := q.Get("format"); f {
	case "", "json":
	case "csv", "arrow":
		out.Format = f
	default:
		return out, perr("format", "unsupported format %q (json, csv or arrow)", f)
	}
	if o := strings.TrimSpace(q.Get("order")); o != "" {
		name := o
		switch o[0] {
		case '-':
			out.Desc, name = true, o[1:]
		case '+':
			name = o[1:]
		}
		out.Order = slices.IndexFunc(v.Measures, func(m logic.Measure) bool { return m.Name == name })
		if out.Order < 0 {
			return out, perr("order", "unknown measure %q", name)
		}
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 {
			return out, perr("limit", "want a positive integer, got %q", l)
		}
		out.Limit = n
	}
	return out, nil
}

// whereItem is one comma-separated item of a where parameter: its text
// with escapes resolved, the place of its first unescaped colon in text
// (-1: none) and the item as written.
type whereItem struct {
	text  string
	colon int
	raw   string
}

// splitWhere splits a where parameter at its unescaped commas. `\,` is a
// comma, `\:` a colon that separates nothing and `\\` a backslash; any
// other backslash stands for itself.
func splitWhere(s string) []whereItem {
	var out []whereItem
	var b strings.Builder
	colon, start := -1, 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && (s[i+1] == ',' || s[i+1] == ':' || s[i+1] == '\\'):
			i++
			b.WriteByte(s[i])
		case c == ',':
			out = append(out, whereItem{text: b.String(), colon: colon, raw: s[start:i]})
			b.Reset()
			colon, start = -1, i+1
		case c == ':' && colon < 0:
			colon = b.Len()
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return append(out, whereItem{text: b.String(), colon: colon, raw: s[start:]})
}

func parseTime(q url.Values, name string) (int64, error) {
	s := q.Get(name)
	if s == "" {
		return 0, perr(name, "required (RFC 3339, e.g. 2026-11-25T16:00:00Z)")
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, perr(name, "bad time %q: want RFC 3339, e.g. 2026-11-25T16:00:00Z", s)
	}
	ms := t.UnixMilli()
	if ms < logic.MinTimeMs || ms > logic.MaxTimeMs {
		return 0, perr(name, "time %q is outside 1970..9999", s)
	}
	return ms, nil
}

// fmtDuration renders milliseconds compactly: 1d, 1h30m, 10s, 250ms.
func fmtDuration(ms int64) string {
	if ms <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		n    int64
		name string
	}{{86_400_000, "d"}, {3_600_000, "h"}, {60_000, "m"}, {1000, "s"}, {1, "ms"}} {
		if ms >= u.n {
			b.WriteString(strconv.FormatInt(ms/u.n, 10))
			b.WriteString(u.name)
			ms %= u.n
		}
	}
	return b.String()
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
