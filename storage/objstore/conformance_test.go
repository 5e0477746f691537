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
		cfg := objstore.S3Config{
			URL:       s3.URL("suite/" + testenv.Namespace(t)),
			Endpoint:  s3.Endpoint,
			Region:    s3.Region,
			PathStyle: true,
			AccessKey: s3.AccessKey,
			SecretKey: s3.SecretKey,
		}
		return func() objstore.Store {
			st, err := objstore.NewS3(cfg)
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	})
}
