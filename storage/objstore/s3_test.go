package objstore_test

import (
	"testing"

	"github.com/braid-data/braid/storage/objstore"
)

func TestParseS3URL(t *testing.T) {
	for _, tc := range []struct{ url, bucket, prefix string }{
		{"s3://braid-lake/prod", "braid-lake", "prod"},
		{"s3://braid-lake/prod/eu/", "braid-lake", "prod/eu"},
		{"s3://braid-lake", "braid-lake", ""},
		{"s3://braid-lake/", "braid-lake", ""},
	} {
		b, p, err := objstore.ParseS3URL(tc.url)
		if err != nil || b != tc.bucket || p != tc.prefix {
			t.Errorf("ParseS3URL(%q) = %q, %q, %v; want %q, %q", tc.url, b, p, err, tc.bucket, tc.prefix)
		}
	}
	for _, bad := range []string{"", "braid-lake/prod", "http://braid-lake/prod", "s3:///prod", "s3://b/p?x=1", "s3://b:9000/p", "s3://user@b/p", "s3://b/a//c", "s3://b/a/../c"} {
		if b, p, err := objstore.ParseS3URL(bad); err == nil {
			t.Errorf("ParseS3URL(%q) = %q, %q; want an error", bad, b, p)
		}
	}
}

func TestNewS3Endpoint(t *testing.T) {
	for _, ep := range []string{"http://127.0.0.1:9000", "https://s3.example.com", "s3.example.com:443"} {
		if _, err := objstore.NewS3(objstore.S3Config{URL: "s3://b/p", Endpoint: ep}); err != nil {
			t.Errorf("endpoint %q: %v", ep, err)
		}
	}
	for _, ep := range []string{"", "ftp://host", "http://host/path"} {
		if _, err := objstore.NewS3(objstore.S3Config{URL: "s3://b/p", Endpoint: ep}); err == nil {
			t.Errorf("endpoint %q accepted", ep)
		}
	}
}
