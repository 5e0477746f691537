package batchviews_test

import (
	"testing"

	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/storagetest"
)

var _ storagetest.ViewStore = (*batchviews.Store)(nil)

// TestConformance holds the store on local disk to the batch view store's
// contract.
func TestConformance(t *testing.T) {
	storagetest.RunViewStore(t, func(t *testing.T) func() storagetest.ViewStore {
		dir := t.TempDir()
		return func() storagetest.ViewStore {
			st, err := batchviews.OpenDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	})
}
