// Package filesource reads events from files for bulk loading: NDJSON, JSON
// arrays, CSV (header row, values typed by the stream schema) and Parquet.
// Every event comes out as one raw JSON object, to go through the same
// logic.Stream.Prepare as HTTP ingest; malformed rows come out as they are
// so they are rejected (and dead-lettered) with a reason, never dropped.
package filesource

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/format"

	"github.com/braid-data/braid/logic"
)

// Source yields raw JSON events. Next returns io.EOF after the last one.
type Source interface {
	Next() ([]byte, error)
	// Progress is how far reading is: done and total in the same unit
	// (bytes for text formats, rows for Parquet).
	Progress() (done, total int64)
	Close() error
}

// Formats the loader understands, by file extension.
var Formats = []string{".ndjson", ".jsonl", ".json", ".csv", ".parquet"}

// Compressions a text file may be in, by a last extension after its
// format's (orders.ndjson.gz).
var Compressions = []string{".gz", ".zst"}

// Open opens a file by its extension (or format when not empty). A text
// format compressed with gzip or zstd (.gz, .zst after the format's
// extension) is decompressed as it is read.
func Open(path, format string, s *logic.Stream) (Source, error) {
	name, compression := path, ""
	for _, c := range Compressions {
		if strings.HasSuffix(strings.ToLower(path), c) {
			name, compression = path[:len(path)-len(c)], c
		}
	}
	if format == "" {
		format = strings.ToLower(filepath.Ext(name))
	}
	format = "." + strings.TrimPrefix(format, ".")
	if compression != "" && format == ".parquet" {
		return nil, fmt.Errorf("filesource: %s: a Parquet file compresses its own pages: load it without %s", path, compression)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("filesource: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("filesource: %w", err)
	}
	cr := &countingReader{r: f} // progress: bytes of the file, compressed or not
	var in io.Reader = cr
	var closer io.Closer = f
	switch compression {
	case ".gz":
		zr, err := gzip.NewReader(cr)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("filesource: %s: %w", path, err)
		}
		in = zr
	case ".zst":
		zr, err := zstd.NewReader(cr, zstd.WithDecoderConcurrency(1))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("filesource: %s: %w", path, err)
		}
		in, closer = zr, closers{zr.IOReadCloser(), f}
	}
	switch format {
	case ".ndjson", ".jsonl":
		sc := bufio.NewScanner(in)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		return &ndjson{f: closer, cr: cr, size: st.Size(), sc: sc}, nil
	case ".json":
		dec := json.NewDecoder(bufio.NewReader(in))
		tok, err := dec.Token()
		if err != nil || tok != json.Delim('[') {
			closer.Close()
			return nil, fmt.Errorf("filesource: %s: want a JSON array of events", path)
		}
		return &jsonArray{f: closer, cr: cr, size: st.Size(), dec: dec}, nil
	case ".csv":
		r := csv.NewReader(bufio.NewReader(in))
		r.ReuseRecord = false
		r.FieldsPerRecord = -1
		header, err := r.Read()
		if err != nil {
			closer.Close()
			return nil, fmt.Errorf("filesource: %s: header row: %w", path, err)
		}
		return &csvSource{f: closer, cr: cr, size: st.Size(), r: r, header: header, s: s}, nil
	case ".parquet":
		pf, err := parquet.OpenFile(f, st.Size())
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("filesource: %s: %w", path, err)
		}
		return newParquet(f, pf), nil
	}
	closer.Close()
	return nil, fmt.Errorf("filesource: %s: unknown format %q (want one of %s, the text ones also as %s)", path, format,
		strings.Join(Formats, ", "), strings.Join(Compressions, " or "))
}

// closers closes each in turn (a decompressor, then its file).
type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type ndjson struct {
	f    io.Closer
	cr   *countingReader
	size int64
	sc   *bufio.Scanner
}

func (s *ndjson) Next() ([]byte, error) {
	for s.sc.Scan() {
		line := bytes.TrimSpace(s.sc.Bytes())
		if len(line) == 0 {
			continue
		}
		return append([]byte(nil), line...), nil
	}
	if err := s.sc.Err(); err != nil {
		return nil, fmt.Errorf("filesource: %w", err)
	}
	return nil, io.EOF
}
func (s *ndjson) Progress() (int64, int64) { return s.cr.n, s.size }
func (s *ndjson) Close() error             { return s.f.Close() }

type jsonArray struct {
	f    io.Closer
	cr   *countingReader
	size int64
	dec  *json.Decoder
}

func (s *jsonArray) Next() ([]byte, error) {
	if !s.dec.More() {
		return nil, io.EOF
	}
	var raw json.RawMessage
	if err := s.dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("filesource: JSON array: %w", err)
	}
	return raw, nil
}
func (s *jsonArray) Progress() (int64, int64) { return s.cr.n, s.size }
func (s *jsonArray) Close() error             { return s.f.Close() }

type csvSource struct {
	f      io.Closer
	cr     *countingReader
	size   int64
	r      *csv.Reader
	header []string
	s      *logic.Stream
}

// Next turns a CSV record into a JSON object: empty cells are absent, cells
// of numeric, bool and epoch-ms time fields become JSON numbers or booleans
// when they parse as such (else strings, which Prepare then rejects with
// the field's name), everything else a string.
func (c *csvSource) Next() ([]byte, error) {
	rec, err := c.r.Read()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			// A malformed line is an event to reject, not a reason to stop.
			q, _ := json.Marshal(fmt.Sprintf("malformed CSV line %d: %v", pe.Line, pe.Err))
			return q, nil
		}
		return nil, fmt.Errorf("filesource: CSV: %w", err)
	}
	b := []byte{'{'}
	first := true
	for i, cell := range rec {
		if i >= len(c.header) || cell == "" {
			continue
		}
		name := c.header[i]
		if !first {
			b = append(b, ',')
		}
		first = false
		k, _ := json.Marshal(name)
		b = append(append(b, k...), ':')
		b = appendTyped(b, cell, c.fieldType(name))
	}
	return append(b, '}'), nil
}

func (c *csvSource) fieldType(name string) logic.FieldType {
	if i := c.s.FieldIndex(name); i >= 0 {
		return c.s.Fields[i].Type
	}
	return logic.TypeString
}

func appendTyped(b []byte, cell string, t logic.FieldType) []byte {
	switch t {
	case logic.TypeInt, logic.TypeFloat, logic.TypeTime:
		if _, err := strconv.ParseFloat(cell, 64); err == nil && json.Valid([]byte(cell)) {
			return append(b, cell...)
		}
	case logic.TypeBool:
		if v, err := strconv.ParseBool(cell); err == nil {
			return strconv.AppendBool(b, v)
		}
	}
	q, _ := json.Marshal(cell)
	return append(b, q...)
}

type parquetSource struct {
	f      *os.File
	pf     *parquet.File
	rows   parquet.Rows
	buf    []parquet.Row
	i, n   int
	done   int64
	total  int64
	names  []string
	leaves []parquet.Node
}

func newParquet(f *os.File, pf *parquet.File) *parquetSource {
	p := &parquetSource{f: f, pf: pf, total: pf.NumRows(), buf: make([]parquet.Row, 256)}
	for _, path := range pf.Schema().Columns() {
		p.names = append(p.names, strings.Join(path, "."))
		leaf, _ := pf.Schema().Lookup(path...)
		p.leaves = append(p.leaves, leaf.Node)
	}
	p.rows = parquet.MultiRowGroup(pf.RowGroups()...).Rows()
	return p
}

func (p *parquetSource) Next() ([]byte, error) {
	if p.i >= p.n {
		n, err := p.rows.ReadRows(p.buf)
		if n == 0 {
			if err == nil || err == io.EOF {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("filesource: parquet: %w", err)
		}
		p.i, p.n = 0, n
	}
	row := p.buf[p.i]
	p.i++
	p.done++
	obj := map[string]any{}
	for _, v := range row {
		col := v.Column()
		if v.IsNull() || col < 0 || col >= len(p.names) {
			continue
		}
		obj[p.names[col]] = parquetValue(v, p.leaves[col])
	}
	return json.Marshal(obj)
}

func parquetValue(v parquet.Value, leaf parquet.Node) any {
	lt := leaf.Type().LogicalType()
	switch v.Kind() {
	case parquet.Boolean:
		return v.Boolean()
	case parquet.Int32:
		return v.Int32()
	case parquet.Int64:
		if ts, ok := timestampType(lt); ok {
			n := v.Int64()
			switch u := ts.Unit.String(); {
			case strings.Contains(u, "MICRO"):
				return time.UnixMicro(n).UTC().Format(time.RFC3339Nano)
			case strings.Contains(u, "NANO"):
				return time.Unix(0, n).UTC().Format(time.RFC3339Nano)
			default:
				return time.UnixMilli(n).UTC().Format(time.RFC3339Nano)
			}
		}
		return v.Int64()
	case parquet.Float:
		return float64(v.Float())
	case parquet.Double:
		return v.Double()
	case parquet.ByteArray, parquet.FixedLenByteArray:
		return string(v.ByteArray())
	}
	return v.String()
}

func (p *parquetSource) Progress() (int64, int64) { return p.done, p.total }
func (p *parquetSource) Close() error {
	_ = p.rows.Close()
	return p.f.Close()
}

func (c *csvSource) Progress() (int64, int64) { return c.cr.n, c.size }
func (c *csvSource) Close() error             { return c.f.Close() }

func timestampType(lt *format.LogicalType) (*format.TimestampType, bool) {
	if lt == nil {
		return nil, false
	}
	ts, ok := lt.Value.(*format.TimestampType)
	return ts, ok
}
