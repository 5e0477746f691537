package logic_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/braid-data/braid/logic"
)

func FuzzPrepare(f *testing.F) {
	for _, seed := range []string{
		`{"ts":"2024-05-01T12:00:00Z","country":"FR","amount":12.5,"items":3,"paid":true,"email":"a@b.c","card":"4111111111111111","name":"Ann"}`,
		`{"ts":1714564800000,"country":"","order_id":"o-1","amount":-0,"items":1e3}`,
		`{"ts":0,"country":"\u001f\u0000\"","extra":[1,{"a":null}]}`,
		`{"ts":"9999-12-31T23:59:59.999Z","country":"x","amount":1.7976931348623157e308}`,
		`{"ts":1,"country":"FR"} trailing`,
		`{"ts":1,"country":"FR","amount":1e400}`,
		`null`, ``, `[]`, "\xff",
	} {
		f.Add([]byte(seed), false)
	}
	loose := shopStream(f, false, "fuzz-key")
	strict := shopStream(f, true, "fuzz-key")
	f.Fuzz(func(t *testing.T, raw []byte, useStrict bool) {
		s := loose
		if useStrict {
			s = strict
		}
		ev, rec, err := s.Prepare(raw, testNow)
		if err != nil {
			var re *logic.RejectError
			if !errors.As(err, &re) {
				t.Fatalf("%q: error %v is not a rejection", raw, err)
			}
			return
		}
		if !utf8.Valid(rec) {
			t.Fatalf("record %q is not UTF-8", rec)
		}
		back, err := s.Decode(rec)
		if err != nil {
			t.Fatalf("Decode(%s) of accepted %q: %v", rec, raw, err)
		}
		if back.Time != ev.Time || back.ID != ev.ID || len(back.Values) != len(ev.Values) {
			t.Fatalf("%q: decoded %+v, prepared %+v", raw, back, ev)
		}
		for i := range ev.Values {
			if back.Values[i] != ev.Values[i] {
				t.Fatalf("%q: field %s %+v decoded as %+v", raw, s.Fields[i].Name, ev.Values[i], back.Values[i])
			}
		}
		if again := s.Encode(back); !bytes.Equal(again, rec) {
			t.Fatalf("re-encoding %s gave %s", rec, again)
		}
		if ev.Time < logic.MinTimeMs || ev.Time > logic.MaxTimeMs {
			t.Fatalf("accepted time %d", ev.Time)
		}
		if e := ev.Values[s.FieldIndex("email")]; !e.Null() && !strings.HasPrefix(e.S, "h:") {
			t.Fatalf("email %q is not hashed", e.S)
		}
	})
}

func FuzzWhere(f *testing.F) {
	for _, seed := range []struct{ expr, ev string }{
		{"amount > 0 and country in ('FR', 'DE')", `{"ts":1,"id":"a","country":"FR","amount":2}`},
		{"not (qty < 2.5 or paid = true) or note is null", `{"ts":1,"id":"a","qty":3}`},
		{"ts >= '2024-05-01T00:00:00Z' and shipped not in (1, 2)", `{"ts":1714564800000,"id":"a","shipped":3}`},
		{`note = "it""s" or 'x' < country`, `{"ts":1,"id":"a","note":"it\"s"}`},
		{"((amount = 1e5", `{"ts":1,"id":"a"}`},
		{"country = 'unterminated", `{}`},
		{"qty in (1, -2, +3.5e-1)", `{"ts":1,"id":"a","qty":-2}`},
	} {
		f.Add(seed.expr, []byte(seed.ev))
	}
	s := whereStream(f)
	f.Fuzz(func(t *testing.T, expr string, raw []byte) {
		p, err := logic.ParseWhere(expr, s)
		if err != nil {
			var we *logic.WhereError
			if !errors.As(err, &we) {
				t.Fatalf("%q: %T %v", expr, err, err)
			}
			if we.Pos < 1 || we.Pos > utf8.RuneCountInString(expr)+1 {
				t.Fatalf("%q: position %d outside the expression", expr, we.Pos)
			}
			return
		}
		if p.SQL() == "" || p.String() != expr {
			t.Fatalf("%q: SQL %q", expr, p.SQL())
		}
		ev, _, err := s.Prepare(raw, testNow)
		if err != nil {
			ev = logic.Event{} // every field null: still evaluates
		}
		m := p.Match(&ev)
		// A predicate and its negation are never both TRUE.
		if np, err := logic.ParseWhere("not ("+expr+")", s); err == nil && m && np.Match(&ev) {
			t.Fatalf("%q and its negation both match %s", expr, raw)
		}
	})
}
