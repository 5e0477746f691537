package lake_test

import (
	"path/filepath"
	"testing"

	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/objstore"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
)

var _ storagetest.Lake = (*lake.Lake)(nil)

// TestConformance holds the lake on local files to the lake's contract.
func TestConformance(t *testing.T) {
	storagetest.RunLake(t, func(t *testing.T) func(storagetest.LakeOptions) storagetest.Lake {
		dir := t.TempDir()
		return func(o storagetest.LakeOptions) storagetest.Lake {
			st, err := objstore.NewFiles(filepath.Join(dir, "lake"))
			if err != nil {
				t.Fatal(err)
			}
			// Each handle (process) has a work directory of its own.
			lk, err := lake.Open(st, lake.Options{WorkDir: t.TempDir(), Grace: o.Grace})
			if err != nil {
				t.Fatal(err)
			}
			return lk
		}
	})
}

// TestConformanceS3 holds the lake on a real S3 server (versitygw) to the
// lake's contract, each subtest under a prefix of its own of one bucket;
// each handle copies what DuckDB reads into a cache of its own.
func TestConformanceS3(t *testing.T) {
	s3 := testenv.StartS3(t)
	storagetest.RunLake(t, func(t *testing.T) func(storagetest.LakeOptions) storagetest.Lake {
		prefix := "lake/" + testenv.Namespace(t)
		return func(o storagetest.LakeOptions) storagetest.Lake {
			lk, err := lake.Open(s3.Store(t, prefix), lake.Options{WorkDir: t.TempDir(), Grace: o.Grace})
			if err != nil {
				t.Fatal(err)
			}
			return lk
		}
	})
}
