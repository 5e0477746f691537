package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/braid-data/braid/storage/objstore"
)

// S3 is a versitygw S3 server running as a process of its own over a temp
// directory, with one bucket.
type S3 struct {
	Endpoint  string // http://127.0.0.1:port
	Region    string
	AccessKey string
	SecretKey string
	Bucket    string
	Dir       string // the directory versitygw serves (a bucket per subdirectory)

	mu   sync.Mutex
	out  strings.Builder
	cmd  *exec.Cmd
	done chan error
}

// VersitygwBin returns the versitygw binary the tests run:
// $BRAID_VERSITYGW (make test: bin/versitygw), else bin/versitygw under the
// repository; it fails the test when there is none (scripts/provision, run
// by make provision and make test, builds it).
func VersitygwBin(t testing.TB) string {
	t.Helper()
	p := os.Getenv("BRAID_VERSITYGW")
	if p == "" {
		p = filepath.Join(RepoRoot(t), "bin", "versitygw")
	}
	if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		t.Fatalf("versitygw not found at %s: run `make provision` (scripts/provision builds bin/versitygw), or set BRAID_VERSITYGW to a versitygw binary", p)
	}
	return p
}

// StartS3 starts versitygw on a free port with its own temp directory,
// waits until it answers, creates a bucket and returns the server; it is
// stopped at the end of the test (SIGTERM, then SIGKILL).
func StartS3(t testing.TB) *S3 {
	t.Helper()
	bin := VersitygwBin(t)
	port := FreePort(t)
	s := &S3{
		Endpoint:  fmt.Sprintf("http://127.0.0.1:%d", port),
		Region:    "us-east-1",
		AccessKey: "braidtest" + strconv.Itoa(port),
		SecretKey: "braid-test-secret-" + strconv.Itoa(port),
		Bucket:    "braid-test",
		Dir:       t.TempDir(),
	}
	cmd := exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", port),
		"--access", s.AccessKey, "--secret", s.SecretKey, "--region", s.Region, "posix", s.Dir)
	cmd.Stdout = lockedWriter{&s.mu, &s.out}
	cmd.Stderr = lockedWriter{&s.mu, &s.out}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start versitygw: %v", err)
	}
	s.cmd, s.done = cmd, make(chan error, 1)
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("versitygw output:\n%s", s.Output())
		}
	})

	c := s.Client(t)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := c.MakeBucket(ctx, s.Bucket, minio.MakeBucketOptions{Region: s.Region})
		cancel()
		if err == nil {
			return s
		}
		select {
		case err := <-s.done:
			s.cmd = nil
			t.Fatalf("versitygw exited before ready: %v\n%s", err, s.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw on %s not ready after 60s: %v\n%s", s.Endpoint, err, s.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URL is the storage URL of the bucket under prefix: s3://bucket/prefix.
func (s *S3) URL(prefix string) string {
	return "s3://" + s.Bucket + "/" + strings.TrimPrefix(prefix, "/")
}

// Store returns the server's bucket under prefix as an object store
// (path style, the server's keys); every call a handle of its own, as a
// process would open it.
func (s *S3) Store(t testing.TB, prefix string) *objstore.S3 {
	t.Helper()
	st, err := objstore.NewS3(objstore.S3Config{URL: s.URL(prefix), Endpoint: s.Endpoint, Region: s.Region, PathStyle: true,
		AccessKey: s.AccessKey, SecretKey: s.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Client returns a path-style client of the server.
func (s *S3) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Region:       s.Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatalf("s3 client: %v", err)
	}
	return c
}

// Stop sends SIGTERM, then SIGKILL after 10 s, and waits (idempotent).
func (s *S3) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Output is what the server printed so far.
func (s *S3) Output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}
