package testenv

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

// TestStartS3: the server answers with the keys it was given, serves the
// bucket from its directory, refuses other keys, and is gone after Stop.
func TestStartS3(t *testing.T) {
	s := StartS3(t)
	ctx := context.Background()
	c := s.Client(t)
	ok, err := c.BucketExists(ctx, s.Bucket)
	if err != nil || !ok {
		t.Fatalf("bucket %s: exists %v, %v", s.Bucket, ok, err)
	}
	want := []byte("braid " + s.Endpoint)
	if _, err := c.PutObject(ctx, s.Bucket, "a/b.txt", bytes.NewReader(want), int64(len(want)), minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	// The posix backend keeps the object as a file under the directory.
	if got, err := os.ReadFile(s.Dir + "/" + s.Bucket + "/a/b.txt"); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("object file: %q, %v; want %q", got, err, want)
	}
	obj, err := c.GetObject(ctx, s.Bucket, "a/b.txt", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("get: %q, %v; want %q", got, err, want)
	}

	wrong := &S3{Endpoint: s.Endpoint, Region: s.Region, AccessKey: s.AccessKey, SecretKey: "not-" + s.SecretKey}
	if _, err := wrong.Client(t).BucketExists(ctx, s.Bucket); err == nil {
		t.Fatalf("a wrong secret key was accepted")
	}

	addr := strings.TrimPrefix(s.Endpoint, "http://")
	s.Stop()
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("versitygw still listening on %s after Stop", addr)
	}
	s.Stop() // idempotent
}

// TestStartS3WithoutVersitygw: with no versitygw the fixture fails the test
// (it never skips) and says how to get one. The check runs this test binary
// again with BRAID_VERSITYGW pointing nowhere.
func TestStartS3WithoutVersitygw(t *testing.T) {
	if os.Getenv("BRAID_TESTENV_NO_VERSITYGW") == "1" {
		StartS3(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestStartS3WithoutVersitygw$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "BRAID_TESTENV_NO_VERSITYGW=1", "BRAID_VERSITYGW="+t.TempDir()+"/versitygw")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("StartS3 without versitygw passed:\n%s", out)
	}
	for _, want := range []string{"--- FAIL: TestStartS3WithoutVersitygw", "make provision"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
