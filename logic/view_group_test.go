package logic

import "testing"

func TestGroupKeysEscapeTheSeparator(t *testing.T) {
	s, err := NewStream("s", StreamDef{Time: "ts", Fields: map[string]FieldType{"ts": TypeTime, "a": TypeString, "b": TypeString}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewView("v", ViewDef{Window: 60e9, GroupBy: []string{"a", "b"}, Measures: []MeasureDef{{Name: "n", Expr: "count()"}}}, s)
	if err != nil {
		t.Fatal(err)
	}
	str := func(x string) Value { return Value{Kind: TypeString, S: x} }
	groups := [][]Value{{str("a\x1fsb"), str("c")}, {str("a"), str("b\x1fsc")}, {str("\x1b"), str("\x1b\x1f")}, {{}, str("")}}
	seen := map[string]int{}
	for i, g := range groups {
		k := v.GroupKey(g)
		if j, dup := seen[k]; dup {
			t.Fatalf("groups %d and %d share key %q", j, i, k)
		}
		seen[k] = i
		back, err := v.DecodeGroup(k)
		if err != nil || len(back) != 2 || back[0] != g[0] || back[1] != g[1] {
			t.Fatalf("round trip of %q: %v %v", g, back, err)
		}
	}
}
