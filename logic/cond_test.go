package logic

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func condSchema() CondSchema {
	return CondSchema{
		"amount": TypeFloat, "items": TypeInt, "country": TypeString, "vip": TypeBool, "ts": TypeTime,
		"features.avg_basket_30d": TypeFloat, "features.last_country": TypeString, "features.orders_1h": TypeInt,
	}
}

func TestCondEval(t *testing.T) {
	row := map[string]Value{
		"amount": {Kind: TypeFloat, F: 120}, "items": {Kind: TypeInt, I: 3}, "country": {Kind: TypeString, S: "DE"},
		"vip": {Kind: TypeBool, I: 1}, "ts": {Kind: TypeTime, I: 1764089880000},
		"features.avg_basket_30d": {Kind: TypeFloat, F: 20}, "features.last_country": {Kind: TypeString, S: "FR"},
		// features.orders_1h: null
	}
	get := func(n string) Value { return row[n] }
	for _, c := range []struct {
		expr string
		want bool
	}{
		{"amount > 5 * features.avg_basket_30d and country != features.last_country", true},
		{"amount > 6 * features.avg_basket_30d", false},
		{"amount >= 6 * features.avg_basket_30d", true},
		{"amount - 100 = 20", true},
		{"-amount < -119.5", true},
		{"items * 40 = amount", true},
		{"items / 2 = 1.5", true},
		{"items % 2 = 1", true},
		{"(items + 1) * 2 = 8", true},
		{"items + 1 * 2 = 5", true},
		{"vip", true},
		{"not vip", false},
		{"vip = false", false},
		{"country in ('FR', 'DE')", true},
		{"country not in ('FR', 'DE')", false},
		{"features.orders_1h > 3", false},
		{"not features.orders_1h > 3", false}, // NOT UNKNOWN is UNKNOWN
		{"features.orders_1h > 3 or vip", true},
		{"features.orders_1h > 3 and vip", false},
		{"features.orders_1h is null", true},
		{"features.orders_1h + 1 is not null", false},
		{"amount / (items - 3) > 0", false}, // division by zero is null
		{"ts >= '2025-11-25T16:58:00Z'", true},
		{"ts > '2025-11-25T16:58:00.001Z'", false},
		{"ts = 1764089880000", true},
		{"NOT country = 'DE' OR items = 3", true},
		{"9223372036854775807 + items > 0", false}, // int overflow is null
	} {
		cond, err := ParseCond(c.expr, condSchema())
		if err != nil {
			t.Fatalf("%s: %v", c.expr, err)
		}
		if got := cond.Eval(get); got != c.want {
			t.Errorf("%s = %v, want %v", c.expr, got, c.want)
		}
	}
}

func TestCondErrors(t *testing.T) {
	for _, c := range []struct{ expr, msg string }{
		{"", "empty"},
		{"amount", "not a test"},
		{"amount > 'x'", "cannot compare a number with a string"},
		{"country + 1 > 2", "+ takes numbers"},
		{"vip > true", "= and != only"},
		{"features.nope > 1", `unknown name "features.nope"`},
		{"amount > 1 and items", "and takes tests"},
		{"ts > 'yesterday'", "not an RFC 3339 time"},
		{"amount > (1", "want )"},
		{"amount > 1 1", "unexpected"},
		{"country in ('DE', 2)", "cannot compare"},
		{"amount > features.", "want a name after ."},
	} {
		_, err := ParseCond(c.expr, condSchema())
		var ce *CondError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: got %v, want a CondError with %q", c.expr, err, c.msg)
		}
	}
}

// TestCondArithmeticAgainstGo checks random linear conditions against the
// same arithmetic done directly in Go.
func TestCondArithmeticAgainstGo(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		a, b, x, y := r.IntN(200)-100, r.IntN(200)-100, r.Float64()*100-50, r.IntN(50)
		cond, err := ParseCond("amount * "+strconv.Itoa(a)+" + items * "+strconv.Itoa(b)+" > 10", condSchema())
		if err != nil {
			t.Fatal(err)
		}
		row := map[string]Value{"amount": {Kind: TypeFloat, F: x}, "items": {Kind: TypeInt, I: int64(y)}}
		want := x*float64(a)+float64(y*b) > 10
		if got := cond.Eval(func(n string) Value { return row[n] }); got != want {
			t.Fatalf("a=%d b=%d x=%v y=%d: got %v want %v", a, b, x, y, got, want)
		}
	}
}
