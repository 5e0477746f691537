package tests

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

const schemaConfig = `epoch: 1s
batch: { every: 0 }
archive: { max_rows: 500, max_delay: 200ms }
speed: { batch_size: 100, max_wait: 50ms }
streams:
  iot:
    time: ts
    allowed_lateness: 3h
    fields:
      ts: time
      device: string
      temp: int
views:
  by_device:
    stream: iot
    window: 1m
    group_by: [device]
    measures:
      n: count()
      total: sum(temp)
      hi: max(temp)
`

// sensorReading is a test event, kept independently of Braid's types.
type sensorReading struct {
	ts     time.Time
	device string
	temp   float64
	site   string // "" = absent
}

func readingsNDJSON(rs []sensorReading, intTemp bool) []byte {
	var b bytes.Buffer
	for _, r := range rs {
		m := map[string]any{"ts": r.ts.Format(time.RFC3339Nano), "device": r.device, "temp": r.temp}
		if intTemp {
			m["temp"] = int64(r.temp)
		}
		if r.site != "" {
			m["site"] = r.site
		}
		j, _ := json.Marshal(m)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

func postReadings(t *testing.T, base string, rs []sensorReading, intTemp bool) {
	t.Helper()
	var r ingestResp
	if code := httpJSON(t, "POST", base+"/v1/streams/iot/events", "application/x-ndjson", readingsNDJSON(rs, intTemp), &r); code != 200 || r.Accepted != len(rs) {
		t.Fatalf("ingest: status %d, %+v", code, r)
	}
}

// lakeRows counts the rows of the stream's Parquet files with DuckDB.
func lakeRows(t *testing.T, dataDir string) int64 {
	t.Helper()
	files := lakeFiles(t, dataDir, "iot")
	if len(files) == 0 {
		return 0
	}
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow("SELECT count(*) FROM " + storagetest.ParquetSource(files)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSchemaChange: a lake written with device: string. Declaring device
// as int is refused by `braid check` (at the key's line, with the other
// errors of the file) and by the start of every process that reads or
// writes the lake; adding a field and widening temp from int to float is
// accepted, and a batch run over the old and the new files answers what a
// computation from the events gives.
func TestSchemaChange(t *testing.T) {
	st := testenv.NewStack(t, schemaConfig)
	cfgPath, base, dataDir := st.Config, st.Base, st.DataDir
	orig, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	variant := func(name string, edits ...string) string {
		s := string(orig)
		for i := 0; i+1 < len(edits); i += 2 {
			if !strings.Contains(s, edits[i]) {
				t.Fatalf("config lacks %q", edits[i])
			}
			s = strings.Replace(s, edits[i], edits[i+1], 1)
		}
		p := filepath.Join(filepath.Dir(cfgPath), name)
		writeFile(t, p, s)
		return p
	}

	start := time.Now().UTC().Truncate(time.Minute).Add(-90 * time.Minute)
	devices := []string{"dev-1", "dev-2", "dev-3", "dev-4"}
	var old, fresh []sensorReading
	for i := 0; i < 800; i++ {
		old = append(old, sensorReading{ts: start.Add(time.Duration(i) * 4500 * time.Millisecond), device: devices[i%4], temp: float64(i%29 - 5)})
	}
	for i := 0; i < 600; i++ {
		r := sensorReading{ts: start.Add(time.Duration(i)*6*time.Second + 700*time.Millisecond), device: devices[(i+1)%4], temp: float64(i%53)/4 - 2}
		if i%3 != 0 {
			r.site = []string{"north", "south"}[i%2]
		}
		fresh = append(fresh, r)
	}

	// 1. The lake gets the readings with device: string, temp: int.
	p := st.Start("up")
	postReadings(t, base, old[:400], true)
	postReadings(t, base, old[400:], true)
	eventually(t, "the lake holds every reading", 90*time.Second, func() string {
		if n := lakeRows(t, dataDir); n != int64(len(old)) {
			return fmt.Sprintf("%d rows in the lake, want %d", n, len(old))
		}
		return ""
	})
	if err := p.Stop(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}

	// 2. device: int is refused, by the check with every other error...
	intCfg := variant("int.yaml", "device: string", "device: int")
	both := variant("both.yaml", "device: string", "device: int", "views:\n", "views:\n  typo:\n    stream: iott\n    window: 1m\n    measures: {n: count()}\n")
	out, code := testenv.RunBraid(t, "check", "--config", both)
	if code != 1 {
		t.Fatalf("check of device: int: exit %d\n%s", code, out)
	}
	line := 0
	for i, l := range strings.Split(string(orig), "\n") {
		if strings.TrimSpace(l) == "device: string" {
			line = i + 1
		}
	}
	for _, want := range []string{
		fmt.Sprintf("line %d: streams.iot.fields.device: the lake holds device as string in ", line),
		"written since ", "log records 1-", "cannot be read as int",
		"hint: keep device: string; or send the int values under a new field name (e.g. device_int: int)",
		"or remove the ", "views.typo.stream: unknown stream", "2 error(s)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	// ... and by the start of every process that reads or writes the lake.
	for _, args := range [][]string{{"up"}, {"archive"}, {"serve"}, {"batch", "run"}} {
		out, code := testenv.RunBraid(t, append(args, "--config", intCfg)...)
		if code != 1 || !strings.Contains(out, "stream iot, field device: the lake holds device as string") || !strings.Contains(out, "ways out: keep device: string") {
			t.Errorf("braid %s with device: int: exit %d\n%s", strings.Join(args, " "), code, out)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// 3. A new field and int → float are accepted.
	newCfg := variant("new.yaml", "temp: int", "temp: float\n      site: string",
		"views:\n", "views:\n  by_site:\n    stream: iot\n    window: 1h\n    group_by: [site]\n    measures:\n      n: count()\n      total: sum(temp)\n")
	if out, code := testenv.RunBraid(t, "check", "--config", newCfg); code != 0 || !strings.Contains(out, "ok (1 streams, 2 views)") {
		t.Fatalf("check of the compatible change: exit %d\n%s", code, out)
	}
	p = testenv.StartBraid(t, base, "up", "--config", newCfg)
	postReadings(t, base, fresh, false)
	all := append(append([]sensorReading{}, old...), fresh...)

	// The independent computation.
	type agg struct {
		n         int
		total, hi float64
	}
	byDevice, bySite := map[string]*agg{}, map[string]*agg{}
	for _, r := range all {
		k := r.ts.Truncate(time.Minute).Format(time.RFC3339) + "|" + r.device
		if byDevice[k] == nil {
			byDevice[k] = &agg{hi: math.Inf(-1)}
		}
		a := byDevice[k]
		a.n, a.total, a.hi = a.n+1, a.total+r.temp, math.Max(a.hi, r.temp)
		site := "<nil>"
		if r.site != "" {
			site = r.site
		}
		k = r.ts.Truncate(time.Hour).Format(time.RFC3339) + "|" + site
		if bySite[k] == nil {
			bySite[k] = &agg{}
		}
		bySite[k].n++
		bySite[k].total += r.temp
	}
	from, to := start.Truncate(time.Hour), start.Add(3*time.Hour)
	check := func(view, dim string, want map[string]*agg, measures ...string) string {
		rows := viewRows(t, base, view, from, to, "")
		if len(rows) != len(want) {
			return fmt.Sprintf("%s: %d rows, want %d", view, len(rows), len(want))
		}
		for _, r := range rows {
			if d, ok := r[dim].(string); !ok && r[dim] != nil {
				return fmt.Sprintf("%s: %s %v is a %T, want a string", view, dim, r[dim], r[dim])
			} else if ok && d == "" {
				return fmt.Sprintf("%s: empty %s", view, dim)
			}
			k := fmt.Sprint(r["window_start"]) + "|" + fmt.Sprint(r[dim])
			a := want[k]
			if a == nil {
				return fmt.Sprintf("%s: unexpected row %s", view, k)
			}
			if r["source"] != "batch" || r["exact"] != true {
				return fmt.Sprintf("%s row %s: source %v exact %v", view, k, r["source"], r["exact"])
			}
			vals := map[string]float64{"n": float64(a.n), "total": a.total, "hi": a.hi}
			for _, m := range measures {
				got, ok := r[m].(float64)
				if !ok || math.Abs(got-vals[m]) > 1e-9*math.Max(1, math.Abs(vals[m])) {
					return fmt.Sprintf("%s row %s: %s = %v, want %v", view, k, m, r[m], vals[m])
				}
			}
		}
		return ""
	}
	eventually(t, "batch answers over the old and the new files", 120*time.Second, func() string {
		var run map[string]any
		if code := httpJSON(t, "POST", base+"/v1/batch/runs?wait=true", "application/json", []byte(`{}`), &run); code != 200 || run["status"] != "succeeded" {
			return fmt.Sprintf("batch run: status %d %v", code, run)
		}
		if msg := check("by_device", "device", byDevice, "n", "total", "hi"); msg != "" {
			return msg
		}
		return check("by_site", "site", bySite, "n", "total")
	})
	// Arrow answers too: the dimension is one type.
	resp, err := http.Get(fmt.Sprintf("%s/v1/views/by_device?from=%s&to=%s&format=arrow", base, from.Format(time.RFC3339), to.Format(time.RFC3339)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("arrow answer: status %d", resp.StatusCode)
	}
	if err := p.Stop(t); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}

	// The lake's schema record (the stream's manifest): temp as int from
	// the first log record, then as float with site.
	lk, err := lake.OpenReadOnly(filepath.Join(dataDir, "lake"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := lk.Manifest(context.Background(), "iot")
	if err != nil {
		t.Fatal(err)
	}
	rec := m
	if len(rec.Epochs) != 2 || rec.Epochs[0].From != 1 || rec.Epochs[0].Fields["temp"] != "int" || rec.Epochs[0].Fields["site"] != "" ||
		rec.Epochs[1].Fields["temp"] != "float" || rec.Epochs[1].Fields["site"] != "string" || rec.Epochs[1].Fields["device"] != "string" {
		t.Fatalf("schema record: %+v", rec.Epochs)
	}
}
