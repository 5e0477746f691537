package alerts

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/serving/query"
	"github.com/braid-data/braid/storage/alertbox"
)

const decideDoc = `
streams:
  sensors:
    time: ts
    fields: { ts: time, site: string, temp: float }
views:
  temps:
    stream: sensors
    window: 30s
    group_by: [site]
    measures: { readings: count(), avg_temp: avg(temp), max_temp: max(temp) }
alerts:
  hot:
    view: temps
    when: "avg_temp > 50"
    action: { webhook: "http://127.0.0.1:9/hook" }
  hot_final:
    view: temps
    when: "avg_temp > 50"
    on: final
    action: { nats: "alerts.hot" }
  busy:
    view: temps
    when: "readings >= 3 and site != 'lab'"
    action: { webhook: "http://127.0.0.1:9/hook" }
`

func decideCatalog(t *testing.T) *config.Catalog {
	t.Helper()
	cfg, err := config.Parse([]byte(decideDoc), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile(nil)
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// step is one evaluation of a row: its values (readings, avg_temp,
// max_temp), whether its window is final, and the batch version.
type step struct {
	readings int64
	avg      float64
	final    bool
	version  string
}

func (s step) row(site string) *query.ResultRow {
	return &query.ResultRow{Window: 60_000, Dims: []logic.Value{{Kind: logic.TypeString, S: site}},
		Values: []any{s.readings, s.avg, s.avg + 1}, Source: query.SourceSpeed, Exact: true, Final: s.final}
}

// run evaluates the steps one after the other as the evaluator does, and
// returns the decisions of each step as "state[@version]", separated by
// "+", steps by " ".
func run(a *logic.Alert, site string, steps []step) string {
	var s rowState
	var out []string
	for _, st := range steps {
		ds, next := decide(a, s, st.row(site), st.version)
		var got []string
		for _, d := range ds {
			if d.state == logic.AlertCorrected || d.state == stateBaseline {
				got = append(got, d.state+"@"+d.version)
			} else {
				got = append(got, d.state)
			}
		}
		if len(got) == 0 {
			got = []string{"-"}
		}
		out = append(out, strings.Join(got, "+"))
		s = next
	}
	return strings.Join(out, " ")
}

// TestDecide: the rules of the package comment of decide.go, step by
// step, for each mode.
func TestDecide(t *testing.T) {
	cat := decideCatalog(t)
	hot, hotFinal, busy := cat.Alerts["hot"], cat.Alerts["hot_final"], cat.Alerts["busy"]
	for _, c := range []struct {
		name  string
		a     *logic.Alert
		site  string
		steps []step
		want  string
	}{
		{"never crosses", hot, "a", []step{{1, 20, false, "v1"}, {2, 30, false, "v1"}, {3, 40, true, "v1"}, {3, 45, true, "v2"}}, "- - - -"},
		{"crosses once while open, stays up", hot, "a", []step{{1, 20, false, "v1"}, {2, 60, false, "v1"}, {3, 70, false, "v1"}}, "- firing -"},
		{"first seen above: fires at once", hot, "a", []step{{2, 60, false, ""}}, "firing"},
		{"drops back: resolved once, no second firing", hot, "a",
			[]step{{1, 60, false, "v1"}, {2, 40, false, "v1"}, {3, 70, false, "v1"}, {4, 30, false, "v1"}}, "firing resolved - -"},
		{"fired row becomes final: a baseline", hot, "a", []step{{1, 60, false, "v1"}, {2, 65, true, "v1"}, {2, 65, true, "v1"}}, "firing baseline@v1 -"},
		{"a batch run that changes a final fired row corrects it once", hot, "a",
			[]step{{1, 60, false, "v1"}, {2, 65, true, "v1"}, {3, 70, true, "v2"}, {3, 70, true, "v2"}, {3, 70, true, "v3"}}, "firing baseline@v1 corrected@v2 - -"},
		{"a batch run that leaves the values alone corrects nothing", hot, "a",
			[]step{{1, 60, true, "v1"}, {1, 60, true, "v2"}, {2, 61, true, "v3"}}, "firing - corrected@v3"},
		{"a later change of a final row is corrected at the version of then", hot, "a",
			[]step{{1, 60, true, "v1"}, {1, 60, true, "v2"}, {2, 61, true, "v2"}, {2, 61, true, "v2"}}, "firing - corrected@v2 -"},
		{"a speed change of a final row waits for the next batch version", hot, "a",
			[]step{{1, 60, true, "v1"}, {2, 62, true, "v1"}, {2, 62, true, "v2"}}, "firing - corrected@v2"},
		{"a correction that makes it drop back also resolves", hot, "a",
			[]step{{1, 60, true, "v1"}, {2, 40, true, "v2"}}, "firing resolved+corrected@v2"},
		{"a resolved row is still corrected", hot, "a",
			[]step{{1, 60, false, "v1"}, {2, 40, true, "v1"}, {3, 30, true, "v2"}}, "firing resolved corrected@v2"},
		{"a batch run that makes a final row cross fires it", hot, "a", []step{{1, 40, true, "v1"}, {2, 55, true, "v2"}}, "- firing"},
		{"on final: open rows are not evaluated", hotFinal, "a",
			[]step{{1, 60, false, "v1"}, {2, 70, false, "v1"}, {3, 65, true, "v1"}, {3, 65, true, "v1"}}, "- - firing -"},
		{"on final: corrected after a batch run", hotFinal, "a", []step{{3, 65, true, "v1"}, {4, 66, true, "v2"}}, "firing corrected@v2"},
		{"on final: below, then a batch run crosses", hotFinal, "a", []step{{3, 45, true, "v1"}, {4, 66, true, "v2"}}, "- firing"},
		{"condition over a dimension", busy, "lab", []step{{5, 1, false, ""}}, "-"},
		{"condition over a count", busy, "b", []step{{2, 1, false, ""}, {3, 1, false, ""}}, "- firing"},
	} {
		if got := run(c.a, c.site, c.steps); got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

// TestFoldRebuildsDecide: the state an evaluator rebuilds from the
// records it stored (fold over the bodies as stored) decides what the
// state it kept decides, at every step of random histories; and the
// decisions never repeat an id.
func TestFoldRebuildsDecide(t *testing.T) {
	cat := decideCatalog(t)
	rng := rand.New(rand.NewPCG(7, 11))
	for trial := range 2000 {
		a := []*logic.Alert{cat.Alerts["hot"], cat.Alerts["hot_final"]}[trial%2]
		k := rowKey{60_000, "a"}
		var kept rowState
		var stored []alertbox.Record
		ids := map[string]bool{}
		version := 1
		final := false
		n := 2 + rng.IntN(12)
		for i := range n {
			if rng.IntN(3) == 0 {
				version++
			}
			if !final && rng.IntN(3) == 0 {
				final = true
			}
			st := step{readings: int64(i + 1), avg: float64(rng.IntN(4)) * 20, final: final, version: fmt.Sprint("v", version)}
			r := st.row("a")
			// The state rebuilt from what was stored so far.
			var rebuilt rowState
			for _, rec := range stored {
				var vals []any
				if rec.Final {
					vals = bodyValues(a.View, rec.Body)
				}
				fold(&rebuilt, rec, vals)
			}
			dk, nextKept := decide(a, kept, r, st.version)
			dr, _ := decide(a, rebuilt, r, st.version)
			if !reflect.DeepEqual(dk, dr) {
				t.Fatalf("trial %d step %d: kept state %+v decides %v, rebuilt %+v decides %v", trial, i, kept, dk, rebuilt, dr)
			}
			for _, d := range dk {
				id := recordID(a, k, d)
				if ids[id] {
					t.Fatalf("trial %d step %d: id %s decided twice", trial, i, id)
				}
				ids[id] = true
				stored = append(stored, alertbox.Record{ID: id, State: d.state, Version: d.version, Final: r.Final,
					Body: makeBody(a, id, d.state, r, 0)})
			}
			kept = nextKept
		}
	}
}

func TestSameValues(t *testing.T) {
	for _, c := range []struct {
		a, b []any
		want bool
	}{
		{[]any{int64(3), 1.5, nil}, []any{int64(3), 1.5, nil}, true},
		{[]any{int64(3)}, []any{3.0}, true},
		{[]any{0.1 + 0.2}, []any{0.3}, true},
		{[]any{1.0}, []any{1.0001}, false},
		{[]any{nil}, []any{0.0}, false},
		{[]any{"DE"}, []any{"DE"}, true},
		{[]any{"DE"}, []any{"FR"}, false},
		{[]any{int64(1)}, []any{int64(1), int64(2)}, false},
	} {
		if got := sameValues(c.a, c.b); got != c.want {
			t.Errorf("sameValues(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
