package batchviews_test

import (
	"sync"
	"testing"
	"time"

	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/storagetest"
	"github.com/braid-data/braid/tests/testenv"
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

// sharedLock is a run lock every handle of one store shares, as the
// lock of a shared service (NATS) would be.
type sharedLock struct{ mu sync.Mutex }

func (l *sharedLock) Lock() (func(), error) {
	if !l.mu.TryLock() {
		return nil, batchviews.ErrLocked
	}
	var once sync.Once
	return func() { once.Do(l.mu.Unlock) }, nil
}

// TestS3Conformance holds the store on a real S3 server (versitygw) to the
// contract, each subtest in a prefix of its own of one bucket, with a
// pointer TTL of its own and a run lock shared by the handles.
func TestS3Conformance(t *testing.T) {
	s3 := testenv.StartS3(t)
	storagetest.RunViewStore(t, func(t *testing.T) func() storagetest.ViewStore {
		prefix := "views/" + testenv.Namespace(t)
		lock := &sharedLock{}
		return func() storagetest.ViewStore {
			st, err := batchviews.Open(s3.Store(t, prefix), batchviews.WithRunLock(lock), batchviews.WithPointerTTL(150*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			return st
		}
	})
}
