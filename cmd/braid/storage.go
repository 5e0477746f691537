package main

import (
	"fmt"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/storage/objstore"
)

// s3Config is the object store's S3 settings from the storage section of a
// valid configuration, its keys read from the variables the section names
// (getenv is os.Getenv but in tests). An unset key is an error naming the
// variable to set. An empty storage.endpoint is AWS S3 (in the region,
// when one is given). Call it only when cfg.Storage.IsS3().
func s3Config(cfg *config.Config, getenv func(string) string) (objstore.S3Config, error) {
	st := cfg.Storage
	if !st.IsS3() {
		return objstore.S3Config{}, fmt.Errorf("storage.url is empty: the lake is in files under data_dir, not on an object store")
	}
	out := objstore.S3Config{URL: st.URL, Endpoint: st.S3Endpoint(), Region: st.Region, PathStyle: st.PathStyle}
	var missing []string
	if out.AccessKey = getenv(st.AccessKeyEnv); out.AccessKey == "" {
		missing = append(missing, st.AccessKeyEnv+" (storage.access_key_env)")
	}
	if out.SecretKey = getenv(st.SecretKeyEnv); out.SecretKey == "" {
		missing = append(missing, st.SecretKeyEnv+" (storage.secret_key_env)")
	}
	switch len(missing) {
	case 1:
		return objstore.S3Config{}, fmt.Errorf("storage %s: the S3 key is missing: set %s", st.URL, missing[0])
	case 2:
		return objstore.S3Config{}, fmt.Errorf("storage %s: the S3 keys are missing: set %s and %s", st.URL, missing[0], missing[1])
	}
	return out, nil
}

// storageKind says where the lake and the batch views live, as braid check
// reports it: "files under DIR" or "s3://bucket/prefix at ENDPOINT".
func storageKind(cfg *config.Config) string {
	if !cfg.Storage.IsS3() {
		return "files under " + cfg.DataDir
	}
	at := cfg.Storage.S3Endpoint()
	if cfg.Storage.Endpoint == "" {
		at += " (AWS S3)"
	}
	return cfg.Storage.URL + " at " + at
}
