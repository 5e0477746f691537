package logic_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic"
)

// whereStream is the schema the where tests run against.
func whereStream(t testing.TB) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{
		Time: "ts",
		ID:   "id",
		Fields: map[string]logic.FieldType{
			"ts": logic.TypeTime, "id": logic.TypeString, "country": logic.TypeString,
			"amount": logic.TypeFloat, "qty": logic.TypeInt, "paid": logic.TypeBool, "note": logic.TypeString,
			"shipped": logic.TypeTime,
		},
	}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func prepare(t testing.TB, s *logic.Stream, raw string) logic.Event {
	t.Helper()
	ev, _, err := s.Prepare([]byte(raw), time.Now().UnixMilli())
	if err != nil {
		t.Fatalf("prepare %s: %v", raw, err)
	}
	return ev
}

func TestWhereMatch(t *testing.T) {
	s := whereStream(t)
	full := `{"ts":"2024-05-01T12:00:00Z","id":"a","country":"FR","amount":12.5,"qty":3,"paid":true,"note":"it's","shipped":1714564800000}`
	nulls := `{"ts":"2024-05-01T12:00:00Z","id":"b"}`
	neg := `{"ts":1714564800001,"id":"c","country":"US","amount":-0.5,"qty":-2,"paid":false}`
	cases := []struct {
		expr string
		ev   string
		want bool
	}{
		{"amount > 0", full, true},
		{"amount > 12.5", full, false},
		{"amount >= 12.5", full, true},
		{"amount = 12.5", full, true},
		{"amount <> 12.5", full, false},
		{"amount != 12.5", full, false},
		{"amount < 13", full, true},
		{"amount <= 12.4999", full, false},
		{"12.5 = amount", full, true},
		{"13 > amount", full, true},
		{"13 < amount", full, false},
		{"amount > -1", neg, true},
		{"amount > -0.25", neg, false},
		{"amount > 1e1", full, true},
		{"amount < 1.25E+1", full, false},
		{"qty = 3", full, true},
		{"qty > 2.5", full, true},
		{"qty < 3.0", full, false},
		{"qty = 3.0", full, true},
		{"qty >= -2", neg, true},
		{"qty in (1, 2, 3)", full, true},
		{"qty in (1, 2.5)", full, false},
		{"qty not in (1, 2)", full, true},
		{"qty not in (3)", full, false},
		{"country = 'FR'", full, true},
		{`country = "FR"`, full, true},
		{"country = 'fr'", full, false},
		{"country < 'G'", full, true},
		{"country >= 'FR'", full, true},
		{"country > 'FRA'", full, false},
		{"country in ('DE', 'FR')", full, true},
		{"country IN ('DE','US')", full, false},
		{"country not in ('DE','US')", full, true},
		{"note = 'it''s'", full, true},
		{`note = "it's"`, full, true},
		{"paid = true", full, true},
		{"paid = false", full, false},
		{"paid != true", neg, true},
		{"paid <> false", neg, false},
		{"paid in (false)", neg, true},
		{"ts = '2024-05-01T12:00:00Z'", full, true},
		{"ts = 1714564800000", full, true},
		{"ts > '2024-05-01T12:00:00Z'", neg, true},
		{"ts > '2024-05-01T14:00:00+02:00'", neg, true},
		{"ts >= '2024-05-01T12:00:00.002Z'", neg, false},
		{"ts < 1714564800001", full, true},
		{"ts in ('2024-05-01T12:00:00Z', 5)", full, true},
		{"shipped = '2024-05-01T12:00:00Z'", full, true},
		{"country is null", full, false},
		{"country is not null", full, true},
		{"country IS NULL", nulls, true},
		{"country is not null", nulls, false},
		// Three-valued logic: a comparison with a null field is UNKNOWN.
		{"country = 'FR'", nulls, false},
		{"country != 'FR'", nulls, false},
		{"not country = 'FR'", nulls, false},
		{"not (country = 'FR')", nulls, false},
		{"not not country = 'FR'", nulls, false},
		{"country in ('FR')", nulls, false},
		{"country not in ('FR')", nulls, false},
		{"amount > 0 or true = paid", nulls, false},
		{"country = 'FR' or id = 'b'", nulls, true},         // UNKNOWN OR TRUE = TRUE
		{"country = 'FR' and id = 'x'", nulls, false},       // UNKNOWN AND FALSE = FALSE
		{"not (country = 'FR' and id = 'x')", nulls, true},  // NOT FALSE
		{"not (country = 'FR' and id = 'b')", nulls, false}, // NOT UNKNOWN
		{"not (country = 'FR' or id = 'x')", nulls, false},  // NOT UNKNOWN
		{"shipped < 0 or shipped >= 0", neg, false},
		{"shipped is null", neg, true},
		// Precedence: not > and > or.
		{"country = 'US' or country = 'FR' and qty = 99", full, false},
		{"(country = 'US' or country = 'FR') and qty = 3", full, true},
		{"country = 'FR' or country = 'US' and qty = 99", full, true},
		{"not country = 'US' and qty = 3", full, true},
		{"not (country = 'FR' and qty = 3) or paid = true", full, true},
		{"not (country = 'FR' and qty = 3) or paid = false", full, false},
		{"NOT country = 'FR' OR NOT qty = 3", full, false},
		{"((((amount > 0))))", full, true},
		{"amount > 0 And qty > 0 aNd paid = TRUE and country = 'FR'", full, true},
		{"  amount>0\tand\nqty>0  ", full, true},
	}
	for _, c := range cases {
		p, err := logic.ParseWhere(c.expr, s)
		if err != nil {
			t.Errorf("%q: %v", c.expr, err)
			continue
		}
		ev := prepare(t, s, c.ev)
		if got := p.Match(&ev); got != c.want {
			t.Errorf("%q on %s: got %v want %v (sql %s)", c.expr, c.ev, got, c.want, p.SQL())
		}
	}
}

func TestWhereErrors(t *testing.T) {
	s := whereStream(t)
	cases := []struct {
		expr string
		pos  int
		msg  string
	}{
		{"amount > 0 and amout < 5", 16, `unknown field "amout"`},
		{"", 1, "empty expression"},
		{"   ", 4, "empty expression"},
		{"amount >", 9, "end of expression"},
		{"amount", 7, "end of expression"},
		{"amount 5", 8, "comparison operator"},
		{"country = 5", 11, `field "country" is string: want a quoted string, got number 5`},
		{"amount = 'x'", 10, `field "amount" is float: want a number`},
		{"qty = true", 7, `want a number`},
		{"paid = 1", 8, "true or false"},
		{"paid > true", 6, "only = and != apply"},
		{"ts = 'yesterday'", 6, `bad time "yesterday"`},
		{"ts = 1.5", 6, "integer epoch milliseconds"},
		{"ts = '2024-05-01T00:00:00.0001Z'", 6, "more precise than a millisecond"},
		{"amount = 1e400", 10, "out of range"},
		{"amount = null", 10, "use is null"},
		{"country = 'FR", 11, "unterminated string"},
		{`country = "FR`, 11, "unterminated string"},
		{"(amount > 0", 12, `want ")"`},
		{"amount > 0)", 11, "unexpected \")\""},
		{"amount > 0 and", 15, "end of expression"},
		{"amount > 0 or or qty = 1", 15, "unexpected or"},
		{"amount == 1", 9, "unexpected \"=\""},
		{"amount ! 1", 8, "want !="},
		{"amount > 1.2.3", 13, "bad number"},
		{"amount > 12abc", 12, "bad number"},
		{"amount > 1e", 10, "exponent"},
		{"country in ()", 13, "empty list"},
		{"country in 'FR'", 12, `want "("`},
		{"country in ('FR' 'DE')", 18, `want "," or ")"`},
		{"country not 'FR'", 13, "want in"},
		{"country is 'FR'", 12, "want null"},
		{"country is not 5", 16, "want null"},
		{"amount > qty", 10, "comparing two fields"},
		{"and = 1", 1, "want a field"},
		{"country = 'FR' # x", 16, "unexpected character '#'"},
		{"país = 'x'", 3, "unexpected character 'í'"},
		{"note = 'ñ' and amout > 1", 16, `unknown field "amout"`},
		{"amount > 0 amount", 12, "want and, or or the end"},
		{"country = 'a\x00b'", 11, "NUL"},
		{"country = '\xff'", 12, "invalid UTF-8"},
		{strings.Repeat("(", 100) + "amount > 0" + strings.Repeat(")", 100), 65, "nested"},
		{"5 = 5", 5, "want a field"},
		{"not", 4, "end of expression"},
	}
	for _, c := range cases {
		_, err := logic.ParseWhere(c.expr, s)
		if err == nil {
			t.Errorf("%q: no error", c.expr)
			continue
		}
		var we *logic.WhereError
		if !errors.As(err, &we) {
			t.Errorf("%q: %T %v is not a *WhereError", c.expr, err, err)
			continue
		}
		if we.Pos != c.pos || !strings.Contains(err.Error(), c.msg) || !strings.HasPrefix(err.Error(), "where: at ") {
			t.Errorf("%q: got %q (pos %d), want position %d and %q", c.expr, err, we.Pos, c.pos, c.msg)
		}
	}
}

func TestWhereSQL(t *testing.T) {
	s := whereStream(t)
	cases := []struct{ expr, sql string }{
		{"amount > 2.5", `"amount" > CAST('2.5' AS DOUBLE)`},
		{"amount > 2", `"amount" > CAST('2' AS DOUBLE)`},
		{"qty >= 2", `"qty" >= CAST(2 AS BIGINT)`},
		{"qty < 2.5", `"qty" < CAST('2.5' AS DOUBLE)`},
		{"2 < qty", `"qty" > CAST(2 AS BIGINT)`},
		{"country = 'it''s' or note != \"a\"\"b\"", `("country" = 'it''s' OR "note" <> 'a"b')`},
		{"paid = true and not paid = false", `("paid" = true AND (NOT "paid" = false))`},
		{"ts >= '2024-05-01T00:00:00Z'", `epoch_ms("ts") >= CAST(1714521600000 AS BIGINT)`},
		{"ts is null", `"ts" IS NULL`},
		{"country is not null", `"country" IS NOT NULL`},
		{"country not in ('a', 'b')", `"country" NOT IN ('a', 'b')`},
		{"qty in (1, 2.5)", `"qty" IN (CAST('1' AS DOUBLE), CAST('2.5' AS DOUBLE))`},
		{"amount > 1e300", `"amount" > CAST('1e+300' AS DOUBLE)`},
	}
	for _, c := range cases {
		p, err := logic.ParseWhere(c.expr, s)
		if err != nil {
			t.Fatalf("%q: %v", c.expr, err)
		}
		if p.SQL() != c.sql {
			t.Errorf("%q: SQL %s, want %s", c.expr, p.SQL(), c.sql)
		}
		if p.String() != c.expr {
			t.Errorf("String() = %q", p.String())
		}
	}
	var nilp *logic.Predicate
	if !nilp.Match(&logic.Event{}) || nilp.SQL() != "true" {
		t.Error("a nil predicate must match everything")
	}
}

func TestWhereMatchDoesNotAllocate(t *testing.T) {
	s := whereStream(t)
	p, err := logic.ParseWhere("(country in ('DE','FR') and not qty < 1.5 or ts > '2024-01-01T00:00:00Z') and note is null", s)
	if err != nil {
		t.Fatal(err)
	}
	ev := prepare(t, s, `{"ts":"2024-05-01T12:00:00Z","id":"a","country":"FR","amount":12.5,"qty":3}`)
	if !p.Match(&ev) {
		t.Fatal("want a match")
	}
	if n := testing.AllocsPerRun(100, func() { p.Match(&ev) }); n != 0 {
		t.Fatalf("Match allocates %v times", n)
	}
}

func TestViewWhere(t *testing.T) {
	s := whereStream(t)
	def := logic.ViewDef{Stream: "orders", Window: time.Minute, GroupBy: []string{"country"}, Where: "amount > 0 and amout < 5",
		Measures: []logic.MeasureDef{{Name: "n", Expr: "count()"}}}
	_, err := logic.NewView("v", def, s)
	var we *logic.WhereError
	if !errors.As(err, &we) || we.Pos != 16 || err.Error() != `where: at 16: unknown field "amout"` {
		t.Fatalf("NewView error %v", err)
	}
	def.Where = "amount > 10 or country = 'DE'"
	v, err := logic.NewView("v", def, s)
	if err != nil {
		t.Fatal(err)
	}
	if v.Predicate() == nil || v.Predicate().String() != def.Where {
		t.Fatal("view lost its predicate")
	}
	sql := v.SQL("src", 1000)
	if !strings.Contains(sql, `WHERE _arrival < 1000 AND (("amount" > CAST('10' AS DOUBLE) OR "country" = 'DE'))`) {
		t.Fatalf("SQL lacks the predicate: %s", sql)
	}
	d := v.NewDelta()
	for _, raw := range []string{
		`{"ts":1000,"country":"FR","amount":12}`, // passes
		`{"ts":1000,"country":"FR","amount":2}`,  // rejected
		`{"ts":1000,"country":"DE"}`,             // passes (UNKNOWN or TRUE)
		`{"ts":1000,"amount":3}`,                 // rejected (FALSE or UNKNOWN)
		`{"ts":1000,"country":"FR","amount":11}`, // passes
	} {
		ev := prepare(t, s, raw)
		d.Fold(0, &ev)
	}
	got := map[string]float64{}
	for k, st := range d.Cells {
		got[k.Group] = st.Num[0]
	}
	fr, de := v.GroupKey([]logic.Value{{Kind: logic.TypeString, S: "FR"}}), v.GroupKey([]logic.Value{{Kind: logic.TypeString, S: "DE"}})
	if len(got) != 2 || got[fr] != 2 || got[de] != 1 {
		t.Fatalf("cells %v", got)
	}
	// No where: no AND in the SQL.
	def.Where = "  "
	v, err = logic.NewView("v", def, s)
	if err != nil || v.Predicate() != nil || strings.Contains(v.SQL("src", 1), " AND ") {
		t.Fatalf("blank where: %v %v", err, v.SQL("src", 1))
	}
}
