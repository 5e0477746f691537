package config_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/braid-data/braid/logic/config"
)

// piiConfig is a valid configuration under dataDir whose streams users
// and orders hash a field when hash is true (else mask and redact them),
// and whose stream s has no PII.
func piiConfig(t *testing.T, dataDir string, hash bool, extra string) *config.Config {
	t.Helper()
	mode, other := "mask", "redact"
	if hash {
		mode, other = "hash", "hash"
	}
	return parsePII(t, dataDir, extra, "{ email: "+mode+" }", "{ customer: "+other+", country: mask }")
}

// parsePII parses the configuration of piiConfig with the pii sections of
// users and orders given ("{}": none).
func parsePII(t *testing.T, dataDir, extra, usersPII, ordersPII string) *config.Config {
	t.Helper()
	body := "data_dir: " + dataDir + "\n" + extra + `
streams:
  users:
    time: ts
    fields: { ts: time, email: string }
    pii: ` + usersPII + `
  orders:
    time: ts
    fields: { ts: time, customer: string, country: string }
    pii: ` + ordersPII + `
  s:
    time: ts
    fields: { ts: time, n: int }
views:
  v:
    stream: s
    window: 10s
    measures: { c: count() }
`
	cfg, err := config.Parse([]byte(body), nil)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestPIIKeyOwnKeepsAFile: braid up without the variable creates one key
// in data_dir/pii.key and returns the same key on every later call (the
// key read back from the file, not a new one); the variable wins.
func TestPIIKeyOwnKeepsAFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cfg := piiConfig(t, dir, true, "")
	k1, err := cfg.PIIKey(config.PIIKeyOwn, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(k1) < 32 {
		t.Fatalf("key %q too short", k1)
	}
	b, err := os.ReadFile(filepath.Join(dir, config.PIIKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(b)) != string(k1) {
		t.Fatalf("file holds %q, key is %q", b, k1)
	}
	if st, err := os.Stat(filepath.Join(dir, config.PIIKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", st.Mode(), err)
	}
	k2, err := cfg.PIIKey(config.PIIKeyOwn, env(map[string]string{"BRAID_PII_KEY": ""}))
	if err != nil || string(k2) != string(k1) {
		t.Fatalf("second call: %q %v, want %q", k2, err, k1)
	}
	k3, err := cfg.PIIKey(config.PIIKeyOwn, env(map[string]string{"BRAID_PII_KEY": "from-env"}))
	if err != nil || string(k3) != "from-env" {
		t.Fatalf("with the variable: %q %v", k3, err)
	}
	// Another data_dir gets another key: it is random, not derived.
	k4, err := piiConfig(t, filepath.Join(t.TempDir(), "data"), true, "").PIIKey(config.PIIKeyOwn, env(nil))
	if err != nil || string(k4) == string(k1) {
		t.Fatalf("other data_dir: %q %v (first %q)", k4, err, k1)
	}
}

// TestPIIKeySharedNeedsTheVariable: any other command refuses to start
// without the variable when a stream has PII fields, naming the streams, the
// variable and the key; a pii.key that braid up left is not read, and the
// error says so. With the variable it gets the variable's value.
func TestPIIKeySharedNeedsTheVariable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cfg := piiConfig(t, dir, true, "")
	_, err := cfg.PIIKey(config.PIIKeyShared, env(nil))
	if err == nil {
		t.Fatal("no error without the variable")
	}
	for _, want := range []string{"orders, users", "BRAID_PII_KEY", "pii_key_env", "braid up"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), config.PIIKeyFile) {
		t.Errorf("error %q: want one line, no key file named (there is none)", err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("the refusal created %s", dir)
	}

	// A key braid up kept on this host is not taken.
	own, err := cfg.PIIKey(config.PIIKeyOwn, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	got, err := cfg.PIIKey(config.PIIKeyShared, env(nil))
	if err == nil || string(got) == string(own) {
		t.Fatalf("with braid up's file: %q %v", got, err)
	}
	if !strings.Contains(err.Error(), filepath.Join(dir, config.PIIKeyFile)) || !strings.Contains(err.Error(), "not read") {
		t.Errorf("error %q does not say the file is not read", err)
	}

	got, err = cfg.PIIKey(config.PIIKeyShared, env(map[string]string{"BRAID_PII_KEY": "k-shared"}))
	if err != nil || string(got) != "k-shared" {
		t.Fatalf("with the variable: %q %v", got, err)
	}

	// pii_key_env names the variable.
	cfg = piiConfig(t, dir, true, "pii_key_env: SHOP_PII\n")
	_, err = cfg.PIIKey(config.PIIKeyShared, env(map[string]string{"BRAID_PII_KEY": "ignored"}))
	if err == nil || !strings.Contains(err.Error(), "SHOP_PII") {
		t.Fatalf("pii_key_env SHOP_PII without it: %v", err)
	}
	got, err = cfg.PIIKey(config.PIIKeyShared, env(map[string]string{"SHOP_PII": "k2"}))
	if err != nil || string(got) != "k2" {
		t.Fatalf("with SHOP_PII: %q %v", got, err)
	}
}

// TestPIIKeyNotNeededWithoutPII: masked and redacted fields need the key
// too (dead letters are named by a keyed digest of the raw event, which
// holds them); a catalog without PII fields starts without the variable,
// on a key every process shares, and writes no file.
func TestPIIKeyNotNeededWithoutPII(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := piiConfig(t, dir, false, "").PIIKey(config.PIIKeyShared, env(nil)); err == nil || !strings.Contains(err.Error(), "orders, users") {
		t.Fatalf("masked and redacted fields without the variable: %v", err)
	}
	cfg := parsePII(t, dir, "", "{}", "{}")
	if ps := cfg.PIIStreams(); len(ps) != 0 {
		t.Fatalf("PII streams %q", ps)
	}
	k1, err := cfg.PIIKey(config.PIIKeyShared, env(nil))
	if err != nil || len(k1) == 0 {
		t.Fatalf("key %q, %v", k1, err)
	}
	k2, err := parsePII(t, filepath.Join(t.TempDir(), "other"), "", "{}", "{}").PIIKey(config.PIIKeyShared, env(nil))
	if err != nil || string(k2) != string(k1) {
		t.Fatalf("another process's key %q, %v; want %q (the same)", k2, err, k1)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("a shared command wrote %s", dir)
	}
	if ps := parsePII(t, dir, "", "{ email: redact }", "{}").PIIStreams(); strings.Join(ps, ",") != "users" {
		t.Fatalf("PII streams %q", ps)
	}
}

// TestPIIKeyHashes: the key returned is the one the compiled catalog
// hashes with, so two processes given the same variable hash one value
// alike (checked against HMAC-SHA256 computed here).
func TestPIIKeyHashes(t *testing.T) {
	cfg := piiConfig(t, t.TempDir(), true, "")
	key, err := cfg.PIIKey(config.PIIKeyShared, env(map[string]string{"BRAID_PII_KEY": "deployment-key"}))
	if err != nil {
		t.Fatal(err)
	}
	cat, err := cfg.Compile(key)
	if err != nil {
		t.Fatal(err)
	}
	users := cat.Streams["users"]
	ev, _, err := users.Prepare([]byte(`{"ts":"2026-01-01T00:00:00Z","email":"a@b.c"}`), time.Date(2026, 1, 1, 0, 0, 1, 0, time.UTC).UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(sha256.New, []byte("deployment-key"))
	mac.Write([]byte("a@b.c"))
	want := "h:" + hex.EncodeToString(mac.Sum(nil)[:16])
	if got := ev.Values[users.FieldIndex("email")].S; got != want {
		t.Fatalf("email hashed to %q, want %q", got, want)
	}
}
