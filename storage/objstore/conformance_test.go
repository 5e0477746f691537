package objstore_test

import (
	"testing"

	"github.com/braid-data/braid/storage/objstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
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

// TestS3Conformance runs the suite on a real S3 server (versitygw), each
// subtest in a prefix of its own of one bucket.
func TestS3Conformance(t *testing.T) {
	s3 := testenv.StartS3(t)
	storagetest.RunObjectStore(t, func(t *testing.T) func() objstore.Store {
		prefix := "suite/" + testenv.Namespace(t)
		return func() objstore.Store { return s3.Store(t, prefix) }
	})
}
