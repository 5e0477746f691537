package batch_test

import (
	"database/sql"
	"math"
	"math/rand/v2"
	"testing"

	_ "github.com/duckdb/duckdb-go/v2"

	"github.com/braid-data/braid/logic"
)

// TestQuantileBucketSQLMatchesGo: the bucket function rendered for DuckDB
// gives the same key as the Go one on every value, including values on and
// next to bucket boundaries, so batch-built and speed-built sketches merge.
func TestQuantileBucketSQLMatchesGo(t *testing.T) {
	db, err := sql.Open("duckdb", "")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE v (i INTEGER, x DOUBLE)`); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	xs := []float64{0, 1, -1, 1e-9, -1e-9, 1e-10, 123.45, 1e300, -1e300, 5e-324}
	gamma := (1 + logic.QuantileAlpha) / (1 - logic.QuantileAlpha)
	for k := -200; k <= 200; k++ { // boundaries and their neighbours
		b := math.Pow(gamma, float64(k))
		xs = append(xs, b, math.Nextafter(b, 0), math.Nextafter(b, math.Inf(1)), -b)
	}
	for i := 0; i < 10000; i++ {
		xs = append(xs, math.Exp(rng.NormFloat64()*10)*float64(1-2*rng.IntN(2)), math.Round(rng.Float64()*1e6)/100)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	st, err := tx.Prepare(`INSERT INTO v VALUES (?, ?)`)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range xs {
		if _, err := st.Exec(i, x); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT i, ` + logic.QuantileBucketSQL("x") + ` FROM v ORDER BY i`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	mismatches, n := 0, 0
	for rows.Next() {
		var i int
		var k int32
		if err := rows.Scan(&i, &k); err != nil {
			t.Fatal(err)
		}
		n++
		if want := logic.QuantileBucket(xs[i]); k != want {
			mismatches++
			if mismatches < 5 {
				t.Errorf("x=%v: DuckDB bucket %d, Go %d", xs[i], k, want)
			}
		}
	}
	if n != len(xs) || mismatches > 0 {
		t.Fatalf("%d values, %d mismatches", n, mismatches)
	}
	t.Logf("%d values, 0 mismatches between DuckDB and Go buckets", n)
}
