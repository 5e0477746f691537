package filesource_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/braid-data/braid/logic"
	"github.com/braid-data/braid/storage/filesource"
	"github.com/braid-data/braid/storage/lake"
)

func stream(t *testing.T) *logic.Stream {
	s, err := logic.NewStream("orders", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{
		"ts": logic.TypeTime, "country": logic.TypeString, "amount": logic.TypeFloat, "items": logic.TypeInt, "gift": logic.TypeBool}}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

type row struct {
	TS      int64   `json:"ts"`
	Country string  `json:"country"`
	Amount  float64 `json:"amount"`
	Items   int64   `json:"items"`
	Gift    bool    `json:"gift"`
}

func rows() []row {
	var out []row
	for i := 0; i < 50; i++ {
		out = append(out, row{TS: 1764000000000 + int64(i)*1000, Country: []string{"DE", "FR"}[i%2], Amount: float64(i) + 0.25, Items: int64(i % 4), Gift: i%3 == 0})
	}
	return out
}

// readAll prepares every event of a source and returns the canonical records.
func readAll(t *testing.T, src filesource.Source, s *logic.Stream) (recs []string, rejected int) {
	t.Helper()
	defer src.Close()
	for {
		raw, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		_, rec, err := s.Prepare(raw, 0)
		if err != nil {
			rejected++
			continue
		}
		recs = append(recs, string(rec))
	}
	if done, total := src.Progress(); done != total {
		t.Fatalf("progress %d/%d at the end", done, total)
	}
	return recs, rejected
}

func TestEveryFormatGivesTheSameEvents(t *testing.T) {
	s := stream(t)
	dir := t.TempDir()
	rs := rows()
	var want []string
	var nd strings.Builder
	var csv strings.Builder
	csv.WriteString("ts,country,amount,items,gift\n")
	for _, r := range rs {
		b, _ := json.Marshal(r)
		nd.Write(b)
		nd.WriteByte('\n')
		fmt.Fprintf(&csv, "%d,%s,%v,%d,%v\n", r.TS, r.Country, r.Amount, r.Items, r.Gift)
		_, rec, err := s.Prepare(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, string(rec))
	}
	arr, _ := json.Marshal(rs)
	files := map[string]string{"e.ndjson": nd.String() + "{broken\n", "e.json": string(arr), "e.csv": csv.String() + "1764000000000,DE,notanumber,1,true\n"}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The text formats compressed: gzip (.gz) and zstd (.zst).
	for name, body := range maps.Clone(files) {
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		_, _ = zw.Write([]byte(body))
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		enc, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		for ext, data := range map[string][]byte{".gz": gz.Bytes(), ".ZST": enc.EncodeAll([]byte(body), nil)} {
			if err := os.WriteFile(filepath.Join(dir, name+ext), data, 0o644); err != nil {
				t.Fatal(err)
			}
			files[name+ext] = ""
		}
		enc.Close()
	}
	// Parquet: the lake's own files are a valid input.
	lk, err := lake.OpenDir(filepath.Join(dir, "lake"))
	if err != nil {
		t.Fatal(err)
	}
	var lrows []lake.Row
	for i, w := range want {
		ev, err := s.Decode([]byte(w))
		if err != nil {
			t.Fatal(err)
		}
		lrows = append(lrows, lake.Row{Seq: uint64(i + 1), Arrival: 1, Event: ev})
	}
	paths, err := lk.Write(s, lrows)
	if err != nil || len(paths) != 1 {
		t.Fatalf("lake write: %v %v", paths, err)
	}
	files[paths[0]] = ""

	for name := range files {
		path := name
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, name)
		}
		src, err := filesource.Open(path, "", s)
		if err != nil {
			t.Fatal(err)
		}
		got, rejected := readAll(t, src, s)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("%s: events differ:\n%v\nwant\n%v", name, got[:min(3, len(got))], want[:3])
		}
		if wantRej := map[bool]int{true: 1, false: 0}[strings.HasPrefix(name, "e.nd") || strings.HasPrefix(name, "e.csv")]; rejected != wantRej {
			t.Fatalf("%s: %d rejected, want %d", name, rejected, wantRej)
		}
	}
	if _, err := filesource.Open(filepath.Join(dir, "e.ndjson"), "xml", s); err == nil {
		t.Fatal("unknown format accepted")
	}
	if _, err := filesource.Open(filepath.Join(dir, "e.parquet.gz"), "", s); err == nil || !strings.Contains(err.Error(), "Parquet") {
		t.Fatalf("a compressed Parquet file: %v", err)
	}
	// A .gz file that is not gzip fails to open with the reason.
	if err := os.WriteFile(filepath.Join(dir, "plain.ndjson.gz"), []byte(nd.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := filesource.Open(filepath.Join(dir, "plain.ndjson.gz"), "", s); err == nil || !strings.Contains(err.Error(), "gzip") {
		t.Fatalf("a .gz file that is not gzip: %v", err)
	}
}
