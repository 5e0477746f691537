package main

import (
	"fmt"
	"log/slog"
	"path"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/braid-data/braid/logic/config"
	"github.com/braid-data/braid/logic/defaults"
	"github.com/braid-data/braid/storage/batchviews"
	"github.com/braid-data/braid/storage/lake"
	"github.com/braid-data/braid/storage/objcache"
	"github.com/braid-data/braid/storage/objstore"
)

// The prefixes of the lake and of the batch view versions under
// storage.url, and their directories under data_dir with file storage.
const (
	lakePrefix  = "lake"
	viewsPrefix = "batch"
)

// objectStore returns the object store holding what is under prefix (the
// lake or the batch views): a directory of data_dir with file storage, a
// prefix of storage.url on S3.
func objectStore(cfg *config.Config, getenv func(string) string, prefix string) (objstore.Store, error) {
	if !cfg.Storage.IsS3() {
		return objstore.NewFiles(filepath.Join(cfg.DataDir, prefix))
	}
	sc, err := s3Config(cfg, getenv)
	if err != nil {
		return nil, err
	}
	bucket, root, err := objstore.ParseS3URL(sc.URL)
	if err != nil {
		return nil, fmt.Errorf("storage.url: %w", err)
	}
	sc.URL = "s3://" + bucket + "/" + path.Join(root, prefix)
	return objstore.NewS3(sc)
}

// openLake opens the lake on its object store. On S3 the files being
// written and the local copies DuckDB reads are under data_dir (a cache:
// nothing there is needed by another process); readOnly opens it for
// reading only (braid check), writing nothing locally.
func openLake(cfg *config.Config, getenv func(string) string, readOnly bool, logger *slog.Logger, reg prometheus.Registerer) (*lake.Lake, error) {
	if !cfg.Storage.IsS3() {
		if readOnly {
			return lake.OpenReadOnly(lakeDir(cfg))
		}
		return lake.OpenDir(lakeDir(cfg))
	}
	st, err := objectStore(cfg, getenv, lakePrefix)
	if err != nil {
		return nil, err
	}
	if readOnly {
		return lake.Open(st, lake.Options{ReadOnly: true, Logger: logger})
	}
	cache, err := objcache.New(st, filepath.Join(cfg.DataDir, "cache", lakePrefix), defaults.CacheBytes, reg)
	if err != nil {
		return nil, fmt.Errorf("lake cache: %w", err)
	}
	return lake.Open(st, lake.Options{WorkDir: filepath.Join(cfg.DataDir, "work", lakePrefix), Cache: cache, Logger: logger})
}

// openViews opens the batch view versions on their object store. lock is
// the run lock that every process of the deployment shares (nil: the file
// store's lock in its directory, which holds across the processes of one
// host; required on S3).
func openViews(cfg *config.Config, getenv func(string) string, lock batchviews.RunLock, logger *slog.Logger) (*batchviews.Store, error) {
	opts := []batchviews.Option{batchviews.WithKeepVersions(cfg.Batch.KeepVersions), batchviews.WithLogger(logger)}
	if lock != nil {
		opts = append(opts, batchviews.WithRunLock(lock))
	}
	if !cfg.Storage.IsS3() {
		return batchviews.OpenDir(filepath.Join(cfg.DataDir, viewsPrefix), opts...)
	}
	if lock == nil {
		return nil, fmt.Errorf("storage %s: batch view versions on S3 need the run lock every process shares, in NATS (nats.url)", cfg.Storage.URL)
	}
	st, err := objectStore(cfg, getenv, viewsPrefix)
	if err != nil {
		return nil, err
	}
	return batchviews.Open(st, opts...)
}

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
