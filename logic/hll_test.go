package logic

import (
	"fmt"
	"testing"
)

func TestHLLMergeIsUnion(t *testing.T) {
	var a, b, u HLL
	for i := 0; i < 20000; i++ {
		e := []byte(fmt.Sprint("x", i))
		if i%3 == 0 {
			a.Add(e)
		} else {
			b.Add(e)
		}
		u.Add(e)
	}
	a.Merge(&b)
	if !a.Equal(&u) {
		t.Fatal("merge of two sketches differs from the sketch of the union")
	}
}
