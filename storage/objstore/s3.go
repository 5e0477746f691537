package objstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config locates a bucket (and a prefix in it) on an S3-compatible
// server.
type S3Config struct {
	// URL is s3://bucket/prefix (ParseS3URL); the prefix may be empty.
	URL string
	// Endpoint is the server: "http://host:port", "https://host", or a
	// bare host[:port] (HTTPS). Required.
	Endpoint string
	// Region, "" for the server's default.
	Region string
	// PathStyle addresses the bucket in the path (endpoint/bucket/key), as
	// most self-hosted servers need, instead of as a host name.
	PathStyle bool
	// AccessKey and SecretKey sign the requests.
	AccessKey, SecretKey string
}

// ParseS3URL splits s3://bucket/prefix into the bucket and the prefix
// (without leading or trailing slashes; "" for the whole bucket).
func ParseS3URL(raw string) (bucket, prefix string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("objstore: storage url %q: %w", raw, err)
	}
	if u.Scheme != "s3" {
		return "", "", fmt.Errorf("objstore: storage url %q: scheme must be s3 (s3://bucket/prefix)", raw)
	}
	if u.Host == "" {
		return "", "", fmt.Errorf("objstore: storage url %q: no bucket (s3://bucket/prefix)", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" {
		return "", "", fmt.Errorf("objstore: storage url %q: only s3://bucket/prefix (no user, port, query or fragment)", raw)
	}
	prefix = strings.Trim(u.Path, "/")
	if prefix != "" {
		if err := ValidKey(prefix); err != nil {
			return "", "", fmt.Errorf("objstore: storage url %q: prefix: %w", raw, err)
		}
	}
	return u.Host, prefix, nil
}

// S3 is a Store on a bucket of an S3-compatible server, under a prefix.
// Put and Get are single requests, or multipart uploads for large objects
// of which the server makes the object visible whole at completion.
// PutIfAbsent sends the object in one PUT with If-None-Match: *, which the
// server refuses (412) when the key exists: the check and the write are one
// step on the server, so writers on any host exclude each other.
type S3 struct {
	client *minio.Client
	bucket string
	prefix string // "" or ending in "/"
}

var _ Store = (*S3)(nil)

// NewS3 connects to the bucket of cfg.URL (no request is made: a wrong
// endpoint or key shows at the first operation).
func NewS3(cfg S3Config) (*S3, error) {
	bucket, prefix, err := ParseS3URL(cfg.URL)
	if err != nil {
		return nil, err
	}
	if cfg.Endpoint == "" {
		return nil, fmt.Errorf("objstore: %s: no endpoint", cfg.URL)
	}
	host, secure := cfg.Endpoint, true
	if strings.Contains(host, "://") {
		u, err := url.Parse(host)
		if err != nil {
			return nil, fmt.Errorf("objstore: endpoint %q: %w", cfg.Endpoint, err)
		}
		switch u.Scheme {
		case "http":
			secure = false
		case "https":
		default:
			return nil, fmt.Errorf("objstore: endpoint %q: scheme must be http or https", cfg.Endpoint)
		}
		if strings.Trim(u.Path, "/") != "" {
			return nil, fmt.Errorf("objstore: endpoint %q: no path allowed", cfg.Endpoint)
		}
		host = u.Host
	}
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       secure,
		Region:       cfg.Region,
		BucketLookup: lookup,
	})
	if err != nil {
		return nil, fmt.Errorf("objstore: %s: %w", cfg.URL, err)
	}
	if prefix != "" {
		prefix += "/"
	}
	return &S3{client: client, bucket: bucket, prefix: prefix}, nil
}

func (s *S3) name(key string) (string, error) {
	if err := ValidKey(key); err != nil {
		return "", err
	}
	return s.prefix + key, nil
}

// Put uploads the object (size -1 when unknown).
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	name, err := s.name(key)
	if err != nil {
		return err
	}
	if _, err := s.client.PutObject(ctx, s.bucket, name, r, size, minio.PutObjectOptions{}); err != nil {
		return s.err("put", key, err)
	}
	return nil
}

// PutIfAbsent uploads the object in one PUT with If-None-Match: *.
func (s *S3) PutIfAbsent(ctx context.Context, key string, data []byte) error {
	name, err := s.name(key)
	if err != nil {
		return err
	}
	opts := minio.PutObjectOptions{DisableMultipart: true}
	opts.SetMatchETagExcept("*")
	if _, err := s.client.PutObject(ctx, s.bucket, name, bytes.NewReader(data), int64(len(data)), opts); err != nil {
		if r := minio.ToErrorResponse(err); r.Code == minio.PreconditionFailed || r.StatusCode == http.StatusPreconditionFailed {
			return fmt.Errorf("%w: %s", ErrExists, key)
		}
		return s.err("put", key, err)
	}
	return nil
}

// Open returns a reader of the object; the object's existence is checked
// before it returns.
func (s *S3) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	name, err := s.name(key)
	if err != nil {
		return nil, err
	}
	obj, err := s.client.GetObject(ctx, s.bucket, name, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.err("get", key, err)
	}
	if _, err := obj.Stat(); err != nil { // the request is made here
		obj.Close()
		return nil, s.err("get", key, err)
	}
	return obj, nil
}

// Get reads the whole object.
func (s *S3) Get(ctx context.Context, key string) ([]byte, error) {
	r, err := s.Open(ctx, key)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, s.err("get", key, err)
	}
	return data, nil
}

// Download copies the object to path atomically.
func (s *S3) Download(ctx context.Context, key, path string) error {
	r, err := s.Open(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	return writeLocal(key, path, r)
}

// Stat returns the object's size.
func (s *S3) Stat(ctx context.Context, key string) (Object, error) {
	name, err := s.name(key)
	if err != nil {
		return Object{}, err
	}
	info, err := s.client.StatObject(ctx, s.bucket, name, minio.StatObjectOptions{})
	if err != nil {
		return Object{}, s.err("stat", key, err)
	}
	return Object{Key: key, Size: info.Size}, nil
}

// Delete removes the object (a missing key is no error).
func (s *S3) Delete(ctx context.Context, key string) error {
	name, err := s.name(key)
	if err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.bucket, name, minio.RemoveObjectOptions{}); err != nil {
		if errors.Is(s.err("delete", key, err), ErrNotFound) {
			return nil
		}
		return s.err("delete", key, err)
	}
	return nil
}

// List lists the keys under the store's prefix starting with prefix.
func (s *S3) List(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	for info := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if info.Err != nil {
			return nil, s.err("list", prefix, info.Err)
		}
		out = append(out, Object{Key: strings.TrimPrefix(info.Key, s.prefix), Size: info.Size})
	}
	slices.SortFunc(out, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

// err maps the server's "no such key" to ErrNotFound and wraps the rest.
func (s *S3) err(op, key string, err error) error {
	if r := minio.ToErrorResponse(err); r.Code == minio.NoSuchKey || r.StatusCode == http.StatusNotFound && r.Code != minio.NoSuchBucket {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return fmt.Errorf("objstore: %s %s in s3://%s/%s: %w", op, key, s.bucket, s.prefix, err)
}
