package objstore_test

import (
	"testing"

	"github.com/braid-data/braid/storage/objstore"
	"github.com/braid-data/braid/storage/storagetest"
)

func TestFilesConformance(t *testing.T) {
	storagetest.RunObjectStore(t, func(t *testing.T) func() objstore.Store {
		dir := t.TempDir()
		return func() objstore.Store {
			st, err := objstore.NewFiles(dir)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	})
}
