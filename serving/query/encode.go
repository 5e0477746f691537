package query

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/braid-data/braid/logic"
)

// encodeAnswer renders the contract's JSON, with the keys of each row in
// order: window_start, the kept dimensions, the measures, source, exact,
// final and, only when a measure overflowed, overflow.
func encodeAnswer(a *answer) []byte {
	var b bytes.Buffer
	b.Grow(256 + len(a.Rows)*(96+24*(len(a.View.Measures)+len(a.Query.GroupBy))))
	writeAnswerHead(&b, a)
	writeRows(&b, a)
	b.WriteString("]}\n")
	return b.Bytes()
}

// encodeRows renders an answer's rows as a JSON array, as encodeAnswer
// does inside the answer.
func encodeRows(a *answer) []byte {
	var b bytes.Buffer
	b.Grow(2 + len(a.Rows)*(96+24*(len(a.View.Measures)+len(a.Query.GroupBy))))
	b.WriteByte('[')
	writeRows(&b, a)
	b.WriteByte(']')
	return b.Bytes()
}

// writeRows renders an answer's rows, comma-separated.
func writeRows(b *bytes.Buffer, a *answer) {
	enc := newRowEncoder(a)
	for i := range a.Rows {
		if i > 0 {
			b.WriteByte(',')
		}
		enc.row(b, &a.Rows[i])
	}
}

// writeAnswerHead renders an answer's JSON up to the opening of its rows.
func writeAnswerHead(b *bytes.Buffer, a *answer) {
	b.WriteString(`{"view":`)
	writeStr(b, a.View.Name)
	b.WriteString(`,"definition":`)
	writeStr(b, a.View.Definition())
	b.WriteString(`,"tier":`)
	writeStr(b, a.View.Tier.String())
	b.WriteString(`,"from":`)
	writeStr(b, logic.FormatTime(a.Query.From))
	b.WriteString(`,"to":`)
	writeStr(b, logic.FormatTime(a.Query.To))
	b.WriteString(`,"step":`)
	writeStr(b, a.Query.StepText)
	b.WriteString(`,"group_by":`)
	gb, _ := json.Marshal(a.Query.GroupBy)
	b.Write(gb)
	b.WriteString(`,"batch_cutoff":`)
	writeTimeOrNull(b, a.Cutoff)
	b.WriteString(`,"watermark":`)
	writeTimeOrNull(b, a.Watermark)
	if len(a.Warnings) > 0 {
		b.WriteString(`,"warnings":`)
		ws, _ := json.Marshal(a.Warnings)
		b.Write(ws)
	}
	b.WriteString(`,"rows":[`)
}

// rowEncoder renders rows as JSON objects with the keys quoted once per
// answer and the last window's timestamp reused (rows come by window).
type rowEncoder struct {
	dimKeys, measureKeys [][]byte // `,"name":`
	lastWindow           int64
	lastStart            []byte // `{"window_start":"…"`
}

func newRowEncoder(a *answer) *rowEncoder {
	e := &rowEncoder{lastWindow: math.MinInt64}
	key := func(name string) []byte {
		return append(logic.AppendJSONString([]byte{','}, name), ':')
	}
	for _, g := range a.Query.GroupBy {
		e.dimKeys = append(e.dimKeys, key(g))
	}
	for j := range a.View.Measures {
		e.measureKeys = append(e.measureKeys, key(a.View.Measures[j].Name))
	}
	return e
}

// row renders one row (keys in the order window_start, the kept
// dimensions, the measures, source, exact, final and, when a measure
// overflowed, overflow: the names of those measures).
func (e *rowEncoder) row(b *bytes.Buffer, row *ResultRow) {
	if row.Window != e.lastWindow {
		e.lastWindow = row.Window
		e.lastStart = logic.AppendJSONString(append(e.lastStart[:0], `{"window_start":`...), logic.FormatTime(row.Window))
	}
	b.Write(e.lastStart)
	for j, d := range row.Dims {
		b.Write(e.dimKeys[j])
		writeAny(b, d.Any())
	}
	for j := range e.measureKeys {
		b.Write(e.measureKeys[j])
		writeAny(b, row.Values[j])
	}
	switch row.Source {
	case SourceBatch:
		b.WriteString(`,"source":"batch"`)
	case SourceSpeed:
		b.WriteString(`,"source":"speed"`)
	case SourceBoth:
		b.WriteString(`,"source":"batch+speed"`)
	default:
		b.WriteString(`,"source":`)
		writeStr(b, row.Source)
	}
	if row.Exact {
		b.WriteString(`,"exact":true`)
	} else {
		b.WriteString(`,"exact":false`)
	}
	if row.Final {
		b.WriteString(`,"final":true`)
	} else {
		b.WriteString(`,"final":false`)
	}
	if row.Overflow != nil {
		b.WriteString(`,"overflow":[`)
		for i, j := range row.Overflow {
			if i > 0 {
				b.WriteByte(',')
			}
			b.Write(e.measureKeys[j][1 : len(e.measureKeys[j])-1]) // the quoted name
		}
		b.WriteByte(']')
	}
	b.WriteByte('}')
}

func writeStr(b *bytes.Buffer, s string) {
	b.Write(logic.AppendJSONString(b.AvailableBuffer(), s))
}

func writeTimeOrNull(b *bytes.Buffer, ms int64) {
	if ms <= 0 {
		b.WriteString("null")
		return
	}
	writeStr(b, logic.FormatTime(ms))
}

func writeAny(b *bytes.Buffer, x any) {
	switch y := x.(type) {
	case nil:
		b.WriteString("null")
	case int64:
		b.Write(strconv.AppendInt(b.AvailableBuffer(), y, 10))
	case float64:
		if math.IsNaN(y) || math.IsInf(y, 0) {
			b.WriteString("null")
			return
		}
		b.Write(strconv.AppendFloat(b.AvailableBuffer(), y, 'g', -1, 64))
	case bool:
		b.WriteString(strconv.FormatBool(y))
	case string:
		writeStr(b, y)
	case time.Time:
		writeStr(b, logic.FormatTime(y.UnixMilli()))
	default:
		j, err := json.Marshal(y)
		if err != nil {
			b.WriteString("null")
			return
		}
		b.Write(j)
	}
}

func csvValue(x any) string {
	switch y := x.(type) {
	case nil:
		return ""
	case int64:
		return strconv.FormatInt(y, 10)
	case float64:
		if math.IsNaN(y) || math.IsInf(y, 0) {
			return ""
		}
		return strconv.FormatFloat(y, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(y)
	case string:
		return y
	case time.Time:
		return logic.FormatTime(y.UnixMilli())
	}
	return fmt.Sprint(x)
}

func writeCSV(w io.Writer, a *answer) error {
	cw := csv.NewWriter(w)
	head := []string{"window_start"}
	head = append(head, a.Query.GroupBy...)
	for i := range a.View.Measures {
		head = append(head, a.View.Measures[i].Name)
	}
	head = append(head, "source", "exact", "final")
	if err := cw.Write(head); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	rec := make([]string, 0, len(head))
	for i := range a.Rows {
		row := &a.Rows[i]
		rec = append(rec[:0], logic.FormatTime(row.Window))
		for _, d := range row.Dims {
			rec = append(rec, csvValue(d.Any()))
		}
		for _, x := range row.Values {
			rec = append(rec, csvValue(x))
		}
		rec = append(rec, row.Source, strconv.FormatBool(row.Exact), strconv.FormatBool(row.Final))
		if err := cw.Write(rec); err != nil {
			return fmt.Errorf("write csv: %w", err)
		}
	}
	cw.Flush()
	return cw.Error()
}
