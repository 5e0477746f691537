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

	"github.com/braid-data/braid/logic"
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

// HashedStreams returns, sorted, the streams that have a field with
// `pii: hash`: the only masking that needs the key (redact and mask do
// not).
func (c *Config) HashedStreams() []string {
	var out []string
	for name, sc := range c.Streams {
		for _, mode := range sc.PII {
			if m, err := logic.ParsePIIMode(mode); err == nil && m == logic.PIIHash {
				out = append(out, name)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// PIIKey returns the HMAC key of hashed PII for a command of the given use,
// reading the variable named by pii_key_env through getenv:
//
//   - the variable, when set and not empty, for every command;
//   - else, for PIIKeyOwn, the key kept in data_dir/pii.key, created (0600)
//     on first use and the same on every later call;
//   - else, for PIIKeyShared, an error naming the variable to set when some
//     stream hashes PII: two processes with keys of their own would hash one
//     value differently. A pii.key that `braid up` left in data_dir is not
//     read: no process depends on a file another process wrote;
//   - else (PIIKeyShared, nothing hashed) a random key of the process,
//     never written: the catalog then keys only the digests that name dead
//     letters, which stay unguessable (a request retried on another process
//     may then store its dead letters twice; set the variable to avoid it).
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
	if hashed := c.HashedStreams(); len(hashed) > 0 {
		return nil, c.missingPIIKey(hashed)
	}
	return randomPIIKey()
}

// missingPIIKey is the error of a shared command without the variable.
func (c *Config) missingPIIKey(hashed []string) error {
	what := "streams " + strings.Join(hashed, ", ") + " hash PII fields"
	if len(hashed) == 1 {
		what = "stream " + hashed[0] + " hashes PII fields"
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
