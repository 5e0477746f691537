package logic

import "testing"

// TestReadableAs checks every pair of field types against the rule written
// out by hand: only the same type and int widened to float are readable.
func TestReadableAs(t *testing.T) {
	types := []FieldType{TypeString, TypeInt, TypeFloat, TypeBool, TypeTime}
	readable := map[[2]string]bool{
		{"string", "string"}: true,
		{"int", "int"}:       true,
		{"int", "float"}:     true,
		{"float", "float"}:   true,
		{"bool", "bool"}:     true,
		{"time", "time"}:     true,
	}
	for _, held := range types {
		for _, declared := range types {
			want := readable[[2]string{held.String(), declared.String()}]
			if got := ReadableAs(held, declared); got != want {
				t.Errorf("ReadableAs(%s, %s) = %v, want %v", held, declared, got, want)
			}
		}
	}
}
