package logic

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// A view's definition is a fingerprint of everything that shapes its
// state: the stream and its event-time field, the window and hop, the
// dimensions, the where clause, the measures' expressions, and the type
// and PII mode of every field the view reads. State written under one
// definition (speed cells, batch rows) is stored under it and never read
// under another (View.StateKey, and the definition a batch version records
// per view).
//
// The view's tier (live, batch) is not part of it either: it decides
// whether speed state is kept, not what any state means, so a switch
// keeps the batch rows and only drops or rebuilds the speed state.
//
// Measure names are not part of it, and neither is the order the
// measures are declared in: a view's numeric slots and sketches are laid
// out in the canonical order of the measures' expressions (canonicalOrder),
// so renaming or reordering measures leaves the state as it was, and the
// definition with it. Anything else changes the definition, and the view
// is rebuilt.
//
// definitionFormat is part of the fingerprint: bump it when the state's
// layout or meaning changes in logic itself (a sketch's parameters, the
// slot rules), so every view is rebuilt once.
const definitionFormat = "braid view definition 1"

// pickFormat is part of the fingerprint of views with last or first
// measures only: the layout of their picks (pick.go).
const pickFormat = "picks 1"

// Definition is the view's definition fingerprint, 16 hex digits.
func (v *View) Definition() string { return v.def }

// StateKey names the view's state in the stores: "{name}@{definition}".
func (v *View) StateKey() string { return v.Name + "@" + v.def }

// SplitStateKey splits a StateKey into the view's name and definition
// (definition "" for a key written before definitions existed).
func SplitStateKey(key string) (name, def string) {
	name, def, _ = strings.Cut(key, "@")
	return name, def
}

// canonicalExpr renders a measure's expression in one form: kind, field
// and quantile, whatever the spacing or the name it was declared under.
func (m *Measure) canonicalExpr() string {
	switch m.Kind {
	case Quantile:
		return m.Kind.String() + "(" + m.Field + "," + strconv.FormatFloat(m.Q, 'g', -1, 64) + ")"
	}
	return m.Kind.String() + "(" + m.Field + ")"
}

// canonicalOrder returns the measures' indices sorted by canonical
// expression (declared order among equal ones: equal expressions have
// equal state, so their order does not matter).
func canonicalOrder(ms []Measure) []int {
	idx := make([]int, len(ms))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(ms[a].canonicalExpr(), ms[b].canonicalExpr()) })
	return idx
}

// fingerprint computes the view's definition from its compiled form.
func (v *View) fingerprint() string {
	s := v.Stream
	var b strings.Builder
	field := func(role string, i int) {
		f := s.Fields[i]
		fmt.Fprintf(&b, "%s %q %s pii=%d\n", role, f.Name, f.Type, f.PII)
	}
	b.WriteString(definitionFormat + "\n")
	fmt.Fprintf(&b, "stream %q\n", s.Name)
	field("time", s.TimeField)
	fmt.Fprintf(&b, "window %d hop %d\n", v.Window.Size.Milliseconds(), v.Window.Step().Milliseconds())
	for _, i := range v.dims {
		field("dim", i)
	}
	if v.where != nil {
		fmt.Fprintf(&b, "where %q\n", v.where.SQL())
		for _, i := range v.where.fields() {
			field("where-field", i)
		}
	}
	if len(v.picks) > 0 {
		// last and first were parsed before they kept any state: a view
		// defined with them then is rebuilt once, with picks.
		b.WriteString(pickFormat + "\n")
	}
	for _, mi := range canonicalOrder(v.Measures) {
		m := &v.Measures[mi]
		fmt.Fprintf(&b, "measure %q\n", m.canonicalExpr())
		if m.field >= 0 {
			field("measure-field", m.field)
		}
	}
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:8])
}

// fields lists the stream fields the predicate reads, each once, in
// stream order.
func (p *Predicate) fields() []int {
	seen := map[int]bool{}
	var walk func(n *wnode)
	walk = func(n *wnode) {
		if n.kind == wAnd || n.kind == wOr || n.kind == wNot {
			for _, k := range n.kids {
				walk(k)
			}
			return
		}
		seen[n.field] = true
	}
	walk(p.root)
	out := make([]int, 0, len(seen))
	for i := range seen {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}
