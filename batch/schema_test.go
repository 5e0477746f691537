package batch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/batch"
	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
)

// iotConfig is a configuration of the iot stream with the given fields and
// views.
func iotConfig(t *testing.T, fields, views string) *config.Catalog {
	t.Helper()
	cfg, err := config.Parse([]byte("epoch: 1s\nstreams:\n  iot:\n    time: ts\n    fields: {"+fields+"}\nviews:\n"+views), nil)
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile([]byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// reading is a test event, kept independently of Braid's types.
type reading struct {
	ts     int64 // ms
	device string
	temp   float64
	site   *string
	day    string // the field named date
}

// archive writes readings as one log record each, from seq on, through
// Prepare and the lake writer, and commits them.
func archive(t *testing.T, lk *lake.Lake, s *logic.Stream, seq uint64, rs []reading, asInt bool) uint64 {
	t.Helper()
	var rows []lake.Row
	for i, r := range rs {
		m := map[string]any{"ts": r.ts, "device": r.device, "date": r.day, "temp": r.temp}
		if asInt {
			m["temp"] = int64(r.temp)
		}
		if r.site != nil {
			m["site"] = *r.site
		}
		raw, _ := json.Marshal(m)
		ev, _, err := s.Prepare(raw, r.ts)
		if err != nil {
			t.Fatalf("prepare %s: %v", raw, err)
		}
		rows = append(rows, lake.Row{Seq: seq + uint64(i), Arrival: 1_700_000_000_000 + int64(seq) + int64(i), Event: ev})
	}
	if _, err := lk.Write(s, rows); err != nil {
		t.Fatal(err)
	}
	last := rows[len(rows)-1]
	if err := lk.Commit(s.Name, lake.Checkpoint{Seq: last.Seq, Arrival: last.Arrival, CoveredUntil: last.Arrival + 5000}); err != nil {
		t.Fatal(err)
	}
	return last.Seq + 1
}

// TestRunOverSchemaChanges: the lake holds readings written with temp as
// int and without site, then readings with temp as float and a site. The
// configuration that widens temp and adds site passes the check, and a
// batch run over both kinds of files matches a computation from the
// readings; device: int is refused.
func TestRunOverSchemaChanges(t *testing.T) {
	dir := t.TempDir()
	lk, err := lake.OpenDir(filepath.Join(dir, "lake"))
	if err != nil {
		t.Fatal(err)
	}
	const views = `  by_device:
    stream: iot
    window: 1h
    group_by: [device]
    measures:
      n: count()
      total: sum(temp)
      lo: min(temp)
      hi: max(temp)
      mean: avg(temp)
      sites: count(site)
      days: count_distinct(date)
      med: "quantile(temp, 0.5)"
  by_site:
    stream: iot
    window: 1d
    group_by: [site, device]
    measures: {n: count(), total: sum(temp)}
`
	old := iotConfig(t, "ts: time, device: string, temp: int, date: string", "  by_device: {stream: iot, window: 1h, group_by: [device], measures: {n: count(), total: sum(temp)}}\n")
	now := iotConfig(t, "ts: time, device: string, temp: float, date: string, site: string", views)

	base := time.Date(2026, 11, 27, 20, 0, 0, 0, time.UTC).UnixMilli()
	devices := []string{"a", "b", "c"}
	sites := []string{"north", "south"}
	var readings []reading
	for i := 0; i < 600; i++ {
		r := reading{ts: base + int64(i)*47*60*1000/10, device: devices[i%3], day: fmt.Sprintf("d%d", i%4)}
		if i < 300 {
			r.temp = float64(i%37 - 10) // written as int
		} else {
			r.temp = float64(i%41)/4 - 3 // quarter degrees: sums are exact
			if i%5 != 0 {
				r.site = &sites[i%2]
			}
		}
		readings = append(readings, r)
	}
	next := archive(t, lk, old.Streams["iot"], 1, readings[:150], true)
	next = archive(t, lk, old.Streams["iot"], next, readings[150:300], true)

	if cs, err := lk.CheckFields("iot", lake.DeclaredTypes(now.Streams["iot"])); err != nil || len(cs) != 0 {
		t.Fatalf("int → float and a new field refused: %v %v", cs, err)
	}
	bad := iotConfig(t, "ts: time, device: int, temp: float, date: string, site: string", "  v: {stream: iot, window: 1h, measures: {n: count()}}\n")
	cs, err := lk.CheckFields("iot", lake.DeclaredTypes(bad.Streams["iot"]))
	if err != nil || len(cs) != 1 || cs[0].Field != "device" || cs[0].Held != logic.TypeString || cs[0].Declared != logic.TypeInt {
		t.Fatalf("device: int: %+v %v", cs, err)
	}

	archive(t, lk, now.Streams["iot"], next, readings[300:], false)
	var se *lake.SchemaError
	if _, err := lk.Write(bad.Streams["iot"], []lake.Row{{Seq: 601, Event: logic.Event{Values: make([]logic.Value, 5)}}}); !errors.As(err, &se) {
		t.Fatalf("writing device as int: %v", err)
	}
	if es, err := lk.Epochs("iot"); err != nil || len(es) != 2 || es[1].From != 301 || es[1].Fields["temp"] != "float" || es[0].Fields["temp"] != "int" {
		t.Fatalf("epochs %+v %v", es, err)
	}

	views2, err := batchviews.Open(filepath.Join(dir, "batch"))
	if err != nil {
		t.Fatal(err)
	}
	r := batch.NewRunner(batch.RunnerConfig{Epoch: time.Second}, lk, views2, nil, now, quietLogger(), prometheus.NewRegistry())
	run, err := r.Run(context.Background(), nil)
	if err != nil || run.Status != batchviews.StatusSucceeded || run.RowsRead != 600 {
		t.Fatalf("run %+v %v", run, err)
	}
	ver, err := views2.Current()
	if err != nil {
		t.Fatal(err)
	}

	// The independent computation, per window and group.
	type cell struct {
		n, sites int
		total    float64
		lo, hi   float64
		temps    []float64
		days     map[string]bool
	}
	want := map[string]map[string]*cell{"by_device": {}, "by_site": {}}
	for _, rd := range readings {
		site := "nil"
		if rd.site != nil {
			site = *rd.site
		}
		for view, k := range map[string]string{
			"by_device": fmt.Sprintf("%d|%s", rd.ts/3600_000*3600_000, rd.device),
			"by_site":   fmt.Sprintf("%d|%s|%s", rd.ts/86400_000*86400_000, site, rd.device),
		} {
			c := want[view][k]
			if c == nil {
				c = &cell{lo: math.Inf(1), hi: math.Inf(-1), days: map[string]bool{}}
				want[view][k] = c
			}
			c.n++
			c.total += rd.temp
			c.lo, c.hi = math.Min(c.lo, rd.temp), math.Max(c.hi, rd.temp)
			c.temps = append(c.temps, rd.temp)
			c.days[rd.day] = true
			if rd.site != nil {
				c.sites++
			}
		}
	}
	for _, name := range []string{"by_device", "by_site"} {
		v := now.Views[name]
		rows, err := views2.Rows(context.Background(), ver, v, math.MinInt64, math.MaxInt64)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != len(want[name]) {
			t.Fatalf("%s: %d rows, want %d", name, len(rows), len(want[name]))
		}
		for _, row := range rows {
			k := fmt.Sprintf("%d|%s", row.Window, groupString(t, v, row.Group))
			c := want[name][k]
			if c == nil {
				t.Fatalf("%s: unexpected cell %s", name, k)
			}
			got := v.Finalize(&row.State)
			xs := slices.Sorted(slices.Values(c.temps))
			rank := 0.5 * float64(len(xs)-1)
			med := xs[int(rank)]
			if int(rank)+1 < len(xs) {
				med += (rank - float64(int(rank))) * (xs[int(rank)+1] - xs[int(rank)])
			}
			exp := []any{int64(c.n), c.total}
			if name == "by_device" {
				exp = []any{int64(c.n), c.total, c.lo, c.hi, c.total / float64(c.n), int64(c.sites), int64(len(c.days)), med}
			}
			for i := range exp {
				g, w := got[i], exp[i]
				if gf, ok := g.(float64); ok {
					if wf, ok := w.(float64); ok && math.Abs(gf-wf) <= 1e-9*math.Max(1, math.Abs(wf)) {
						continue
					}
				}
				if g != w {
					t.Fatalf("%s cell %s measure %s: got %v (%T), want %v (%T)", name, k, v.Measures[i].Name, g, g, w, w)
				}
			}
		}
	}
}
