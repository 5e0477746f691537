package batchviews

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"

	"github.com/parquet-go/parquet-go"

	"github.com/braid-data/braid/logic"
)

// fileRow is a view row as stored in Parquet: flat columns only, so that
// loading a large view file does not reconstruct nested lists. Num and
// Exact are float64s, little-endian; Sketches is each encoded sketch
// (logic.State.EncodeSketches) after its uvarint length.
type fileRow struct {
	Window   int64  `parquet:"window"`
	Group    string `parquet:"group"`
	Num      []byte `parquet:"num"`
	Sketches []byte `parquet:"sketch_bytes"`
	Exact    []byte `parquet:"exact_f64"`
}

// listFileRow is the earlier layout (nested lists), still read.
type listFileRow struct {
	Window   int64     `parquet:"window"`
	Group    string    `parquet:"group"`
	State    []float64 `parquet:"state,list"`
	Sketches [][]byte  `parquet:"sketches,list"`
	Exact    []float64 `parquet:"exact,list"`
}

func newFileRow(r Row) fileRow {
	fr := fileRow{Window: r.Window, Group: r.Group, Num: appendFloats(nil, r.State.Num)}
	if sk := r.State.EncodeSketches(); len(sk) > 0 {
		for _, b := range sk {
			fr.Sketches = binary.AppendUvarint(fr.Sketches, uint64(len(b)))
			fr.Sketches = append(fr.Sketches, b...)
		}
	}
	if r.State.Exact != nil {
		fr.Exact = appendFloats(nil, r.State.Exact)
	}
	return fr
}

func appendFloats(dst []byte, fs []float64) []byte {
	for _, f := range fs {
		dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
	}
	return dst
}

func readFloats(b []byte) ([]float64, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("%d bytes of float64s", len(b))
	}
	out := make([]float64, len(b)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out, nil
}

func splitSketches(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, errors.New("truncated sketch")
		}
		out = append(out, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	return out, nil
}

// encodeRows renders rows (in the order given) as a view file.
func encodeRows(rows []Row) ([]byte, error) {
	frs := make([]fileRow, len(rows))
	for i, r := range rows {
		frs[i] = newFileRow(r)
	}
	var buf bytes.Buffer
	if err := parquet.Write(&buf, frs, parquet.Compression(&parquet.Zstd)); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// decodeRows reads a view file of either layout, its rows ordered by
// window then group.
func decodeRows(r io.ReaderAt, size int64, v *logic.View) ([]Row, error) {
	pf, err := parquet.OpenFile(r, size)
	if err != nil {
		return nil, err
	}
	var rows []Row
	if _, flat := pf.Schema().Lookup("num"); flat {
		rows, err = readFlatRows(pf, v)
	} else {
		rows, err = readListRows(pf, v)
	}
	if err != nil {
		return nil, fmt.Errorf("view %s: %w", v.Name, err)
	}
	sortRows(rows)
	return rows, nil
}

// readViewFile reads a view file on local disk.
func readViewFile(path string, v *logic.View) ([]Row, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("batchviews: read %s: %w", path, err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("batchviews: read %s: %w", path, err)
	}
	rows, err := decodeRows(f, info.Size(), v)
	if err != nil {
		return nil, fmt.Errorf("batchviews: read %s: %w", path, err)
	}
	return rows, nil
}

func readFlatRows(pf *parquet.File, v *logic.View) ([]Row, error) {
	r := parquet.NewGenericReader[fileRow](pf)
	defer r.Close()
	rows := make([]Row, 0, pf.NumRows())
	buf := make([]fileRow, 4096)
	for {
		n, readErr := r.Read(buf)
		for _, fr := range buf[:n] {
			st := v.NewState()
			var err error
			if st.Num, err = readFloats(fr.Num); err != nil {
				return nil, err
			}
			if len(fr.Exact) > 0 {
				if st.Exact, err = readFloats(fr.Exact); err != nil {
					return nil, err
				}
			}
			if len(fr.Sketches) > 0 {
				sk, err := splitSketches(fr.Sketches)
				if err != nil {
					return nil, err
				}
				if err := v.DecodeSketches(&st, sk); err != nil {
					return nil, err
				}
			}
			rows = append(rows, Row{Window: fr.Window, Group: fr.Group, State: st})
		}
		if errors.Is(readErr, io.EOF) {
			return rows, nil
		}
		if readErr != nil {
			return nil, readErr
		}
	}
}

func readListRows(pf *parquet.File, v *logic.View) ([]Row, error) {
	r := parquet.NewGenericReader[listFileRow](pf)
	defer r.Close()
	frs := make([]listFileRow, pf.NumRows())
	n, err := r.Read(frs)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	frs = frs[:n]
	rows := make([]Row, len(frs))
	for i, fr := range frs {
		st := v.NewState()
		st.Num = fr.State
		if len(fr.Exact) > 0 {
			st.Exact = fr.Exact
		}
		if err := v.DecodeSketches(&st, fr.Sketches); err != nil {
			return nil, err
		}
		rows[i] = Row{Window: fr.Window, Group: fr.Group, State: st}
	}
	return rows, nil
}

func sortRows(rows []Row) {
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Window != rows[j].Window {
			return rows[i].Window < rows[j].Window
		}
		return rows[i].Group < rows[j].Group
	})
}
