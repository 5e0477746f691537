package query

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/braid-data/braid/logic"
)

// arrowType maps a field type onto its Arrow column type.
func arrowType(t logic.FieldType) arrow.DataType {
	switch t {
	case logic.TypeInt:
		return arrow.PrimitiveTypes.Int64
	case logic.TypeFloat:
		return arrow.PrimitiveTypes.Float64
	case logic.TypeBool:
		return arrow.FixedWidthTypes.Boolean
	case logic.TypeTime:
		return arrow.FixedWidthTypes.Timestamp_ms
	}
	return arrow.BinaryTypes.String
}

// arrowSchema: window_start timestamp[ms, UTC]; the kept dimensions typed
// like their fields (nullable); the measures typed by their result type
// (nullable): int64 or float64, last and first like their field; source
// string; exact and final bool. The metadata holds view, definition, tier,
// step and, when the answer has any, its warnings (a JSON array of strings).
func arrowSchema(a *answer) *arrow.Schema {
	fields := []arrow.Field{{Name: "window_start", Type: arrow.FixedWidthTypes.Timestamp_ms}}
	st := a.View.Stream
	for _, d := range a.Query.GroupBy {
		ft := logic.TypeString
		if i := st.FieldIndex(d); i >= 0 {
			ft = st.Fields[i].Type
		}
		fields = append(fields, arrow.Field{Name: d, Type: arrowType(ft), Nullable: true})
	}
	for i := range a.View.Measures {
		m := &a.View.Measures[i]
		fields = append(fields, arrow.Field{Name: m.Name, Type: arrowType(m.ResultType()), Nullable: true})
	}
	fields = append(fields,
		arrow.Field{Name: "source", Type: arrow.BinaryTypes.String},
		arrow.Field{Name: "exact", Type: arrow.FixedWidthTypes.Boolean},
		arrow.Field{Name: "final", Type: arrow.FixedWidthTypes.Boolean})
	keys, vals := []string{"view", "definition", "tier", "step"}, []string{a.View.Name, a.View.Definition(), a.View.Tier.String(), a.Query.StepText}
	if len(a.Warnings) > 0 {
		ws, _ := json.Marshal(a.Warnings)
		keys, vals = append(keys, "warnings"), append(vals, string(ws))
	}
	md := arrow.NewMetadata(keys, vals)
	return arrow.NewSchema(fields, &md)
}

// appendArrow appends x (nil, int64, float64, bool, string, time.Time,
// logic.Value) to
// a column builder of one of arrowType's types.
func appendArrow(b array.Builder, x any) error {
	if v, ok := x.(logic.Value); ok {
		if v.Null() {
			b.AppendNull()
			return nil
		}
		switch v.Kind {
		case logic.TypeString:
			x = v.S
		case logic.TypeFloat:
			x = v.F
		case logic.TypeBool:
			x = v.I != 0
		case logic.TypeTime:
			b.(*array.TimestampBuilder).Append(arrow.Timestamp(v.I))
			return nil
		default:
			x = v.I
		}
	}
	if x == nil {
		b.AppendNull()
		return nil
	}
	switch bb := b.(type) {
	case *array.TimestampBuilder:
		y, ok := x.(time.Time)
		if !ok {
			return fmt.Errorf("arrow: %T in a timestamp column", x)
		}
		bb.Append(arrow.Timestamp(y.UnixMilli()))
	case *array.Int64Builder:
		switch y := x.(type) {
		case int64:
			bb.Append(y)
		case float64:
			bb.Append(int64(y))
		default:
			return fmt.Errorf("arrow: %T in an int64 column", x)
		}
	case *array.Float64Builder:
		switch y := x.(type) {
		case float64:
			if math.IsNaN(y) || math.IsInf(y, 0) {
				bb.AppendNull()
			} else {
				bb.Append(y)
			}
		case int64:
			bb.Append(float64(y))
		default:
			return fmt.Errorf("arrow: %T in a float64 column", x)
		}
	case *array.BooleanBuilder:
		y, ok := x.(bool)
		if !ok {
			return fmt.Errorf("arrow: %T in a bool column", x)
		}
		bb.Append(y)
	case *array.StringBuilder:
		bb.Append(fmt.Sprint(x))
	default:
		return fmt.Errorf("arrow: unexpected builder %T", b)
	}
	return nil
}

// encodeArrow renders an answer as an Arrow IPC stream: the schema and one
// record batch (none when there are no rows).
func encodeArrow(a *answer) ([]byte, error) {
	mem := memory.NewGoAllocator()
	schema := arrowSchema(a)
	rb := array.NewRecordBuilder(mem, schema)
	defer rb.Release()
	rb.Reserve(len(a.Rows))
	nd := len(a.Query.GroupBy)
	for i := range a.Rows {
		row := &a.Rows[i]
		rb.Field(0).(*array.TimestampBuilder).Append(arrow.Timestamp(row.Window))
		for j, d := range row.Dims {
			if err := appendArrow(rb.Field(1+j), d); err != nil {
				return nil, err
			}
		}
		for j, x := range row.Values {
			if err := appendArrow(rb.Field(1+nd+j), x); err != nil {
				return nil, err
			}
		}
		n := 1 + nd + len(row.Values)
		rb.Field(n).(*array.StringBuilder).Append(row.Source)
		rb.Field(n + 1).(*array.BooleanBuilder).Append(row.Exact)
		rb.Field(n + 2).(*array.BooleanBuilder).Append(row.Final)
	}
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema), ipc.WithAllocator(mem))
	if len(a.Rows) > 0 {
		rec := rb.NewRecordBatch()
		err := w.Write(rec)
		rec.Release()
		if err != nil {
			return nil, fmt.Errorf("arrow: write: %w", err)
		}
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("arrow: close: %w", err)
	}
	return buf.Bytes(), nil
}
