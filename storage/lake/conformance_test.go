package lake_test

import (
	"testing"

	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/storagetest"
)

var _ storagetest.Lake = (*lake.Lake)(nil)

// TestConformance holds the lake on local disk to the lake's contract.
func TestConformance(t *testing.T) {
	storagetest.RunLake(t, func(t *testing.T) func() storagetest.Lake {
		dir := t.TempDir()
		return func() storagetest.Lake {
			lk, err := lake.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			return lk
		}
	})
}
