package config

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// PIIKeyFile is the file under data_dir where `braid up` keeps its PII key
// when the variable named by pii_key_env is unset.
const PIIKeyFile = "pii.key"

// PIIKeyUse says whether a command runs alone or beside other processes of
// its deployment, which decides where its PII key may come from.
type PIIKeyUse int

const (
	// PIIKeyShared is every command but `braid up` (serve, speed, archive,
	// batch, ingest, replay, dlq, audit): processes that run beside others,
	// possibly on other hosts, so the key comes from the environment only.
	PIIKeyShared PIIKeyUse = iota
	// PIIKeyOwn is `braid up`, every layer in one process: the environment,
	// else a random key it creates once and keeps in data_dir/pii.key.
	PIIKeyOwn
)

// PIIStreams returns, sorted, the streams that have PII fields: the key
// hashes the values of `pii: hash` fields, and it keys the digests that
// name dead letters, taken over the raw event, which holds the values of
// every PII field (hashed, masked or redacted).
func (c *Config) PIIStreams() []string {
	var out []string
	for name, sc := range c.Streams {
		if len(sc.PII) > 0 {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// noPIIKey keys the dead-letter digests of a catalog without PII fields:
// there is nothing in an event to keep from guessing, and every process
// uses the same key, so a request retried on another process stores its
// dead letters once.
const noPIIKey = "braid: no PII fields"

// PIIKey returns the HMAC key of hashed PII for a command of the given use,
// reading the variable named by pii_key_env through getenv:
//
//   - the variable, when set and not empty, for every command;
//   - else, for PIIKeyOwn, the key kept in data_dir/pii.key, created (0600)
//     on first use and the same on every later call;
//   - else, for PIIKeyShared, an error naming the variable to set when some
//     stream has PII fields: two processes with keys of their own would
//     hash one value differently, and name one dead letter differently. A
//     pii.key that `braid up` left in data_dir is not read: no process
//     depends on a file another process wrote;
//   - else (PIIKeyShared, no PII fields) a fixed key, the same in every
//     process: it keys only the digests that name dead letters, over
//     events that hold nothing declared private.
//
// The error is one line, meant to be shown as is.
func (c *Config) PIIKey(use PIIKeyUse, getenv func(string) string) ([]byte, error) {
	if c.PIIKeyEnv != "" {
		if v := getenv(c.PIIKeyEnv); v != "" {
			return []byte(v), nil
		}
	}
	if use == PIIKeyOwn {
		return c.ownPIIKey()
	}
	if streams := c.PIIStreams(); len(streams) > 0 {
		return nil, c.missingPIIKey(streams)
	}
	return []byte(noPIIKey), nil
}

// missingPIIKey is the error of a shared command without the variable.
func (c *Config) missingPIIKey(streams []string) error {
	what := "streams " + strings.Join(streams, ", ") + " have PII fields"
	if len(streams) == 1 {
		what = "stream " + streams[0] + " has PII fields"
	}
	set := "set " + c.PIIKeyEnv + " (pii_key_env)"
	if c.PIIKeyEnv == "" {
		set = "set pii_key_env to the name of a variable holding the key, and that variable,"
	}
	msg := fmt.Sprintf("pii key: %s: %s to the deployment's key; every process must share it. Only braid up keeps a key of its own in data_dir", what, set)
	if _, err := os.Stat(filepath.Join(c.DataDir, PIIKeyFile)); err == nil {
		msg += " (the " + filepath.Join(c.DataDir, PIIKeyFile) + " it wrote is not read by other commands)"
	}
	return errors.New(msg)
}

// ownPIIKey reads data_dir/pii.key, creating it with a random key when it
// does not exist.
func (c *Config) ownPIIKey() ([]byte, error) {
	path := filepath.Join(c.DataDir, PIIKeyFile)
	b, err := os.ReadFile(path)
	if err == nil {
		return []byte(strings.TrimSpace(string(b))), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pii key: %w", err)
	}
	k, err := randomPIIKey()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("pii key: %w", err)
	}
	if err := os.WriteFile(path, append(k, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("pii key: %w", err)
	}
	return k, nil
}

// randomPIIKey is 32 random bytes in hex.
func randomPIIKey() ([]byte, error) {
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return nil, fmt.Errorf("pii key: %w", err)
	}
	return []byte(hex.EncodeToString(buf)), nil
}
