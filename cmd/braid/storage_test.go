package main

import (
	"strings"
	"testing"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/objstore"
)

func storageConfig(t *testing.T, storage string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(storage+`
streams:
  s:
    time: ts
    fields: { ts: time }
views:
  v:
    stream: s
    window: 1m
    measures: { n: count() }
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestS3Config: the storage section and the key variables it names make
// the object store's settings; a missing key names its variable.
func TestS3Config(t *testing.T) {
	cfg := storageConfig(t, `storage: { url: "s3://braid-lake/prod", endpoint: "http://127.0.0.1:9000", region: us-east-1, path_style: true, access_key_env: LAKE_KEY }`)
	vars := map[string]string{"LAKE_KEY": "AK", "BRAID_S3_SECRET_KEY": "SK"}
	got, err := s3Config(cfg, func(k string) string { return vars[k] })
	want := objstore.S3Config{URL: "s3://braid-lake/prod", Endpoint: "http://127.0.0.1:9000", Region: "us-east-1", PathStyle: true, AccessKey: "AK", SecretKey: "SK"}
	if err != nil || got != want {
		t.Fatalf("s3Config = %+v, %v; want %+v", got, err, want)
	}
	// The object store reads every URL the configuration accepts.
	for _, u := range []string{"s3://braid-lake/prod", "s3://braid-lake", "s3://b.lake-1/a/b/", "s3://abc/x y=1"} {
		if _, _, err := objstore.ParseS3URL(storageConfig(t, `storage: { url: "`+u+`" }`).Storage.URL); err != nil {
			t.Errorf("the object store refuses %s: %v", u, err)
		}
	}
	if kind := storageKind(cfg); kind != "s3://braid-lake/prod at http://127.0.0.1:9000" {
		t.Errorf("storageKind = %q", kind)
	}

	delete(vars, "BRAID_S3_SECRET_KEY")
	_, err = s3Config(cfg, func(k string) string { return vars[k] })
	if err == nil || !strings.Contains(err.Error(), "set BRAID_S3_SECRET_KEY (storage.secret_key_env)") || strings.Contains(err.Error(), "LAKE_KEY") {
		t.Errorf("secret missing: %v", err)
	}
	_, err = s3Config(cfg, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "set LAKE_KEY (storage.access_key_env) and BRAID_S3_SECRET_KEY (storage.secret_key_env)") {
		t.Errorf("both missing: %v", err)
	}

	aws := storageConfig(t, `storage: { url: "s3://braid-lake", region: eu-central-1 }`)
	got, err = s3Config(aws, func(string) string { return "k" })
	if err != nil || got.Endpoint != "https://s3.eu-central-1.amazonaws.com" || got.PathStyle {
		t.Errorf("AWS: %+v, %v", got, err)
	}
	if kind := storageKind(aws); kind != "s3://braid-lake at https://s3.eu-central-1.amazonaws.com (AWS S3)" {
		t.Errorf("storageKind = %q", kind)
	}

	files := storageConfig(t, "data_dir: /srv/braid")
	if kind := storageKind(files); kind != "files under /srv/braid" {
		t.Errorf("storageKind = %q", kind)
	}
	if _, err := s3Config(files, func(string) string { return "k" }); err == nil {
		t.Error("s3Config of file storage: no error")
	}
}
