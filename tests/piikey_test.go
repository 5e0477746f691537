package tests

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/braid-data/braid/tests/testenv"
)

// TestSeparateLayersNeedTheSharedPIIKey: the orders stream hashes e-mails,
// so `braid serve` and `braid speed` without BRAID_PII_KEY exit non-zero
// with one line naming the variable, even on a host where `braid up` (which
// runs without it) left its own key in data_dir; with the variable, serve
// starts and hashes with exactly that key (checked against HMAC-SHA256
// computed here, in what the log stores).
func TestSeparateLayersNeedTheSharedPIIKey(t *testing.T) {
	st := testenv.NewStack(t, testenv.E2E().YAML(), testenv.WithNATS())

	refused := func(cmd string) string {
		t.Helper()
		out, code := testenv.RunBraidEnv(t, testenv.WithoutPIIKey(), cmd, "--config", st.Config)
		if code == 0 {
			t.Fatalf("braid %s without %s: exit 0\n%s", cmd, testenv.PIIKeyEnv, out)
		}
		for _, want := range []string{"braid " + cmd + ": pii key:", "orders", testenv.PIIKeyEnv, "pii_key_env", "braid up"} {
			if !strings.Contains(out, want) {
				t.Errorf("braid %s without %s: output does not say %q:\n%s", cmd, testenv.PIIKeyEnv, want, out)
			}
		}
		if n := strings.Count(strings.TrimSpace(out), "\n"); n != 0 {
			t.Errorf("braid %s: want one line, got:\n%s", cmd, out)
		}
		return out
	}
	refused("serve")
	refused("speed")

	// braid up runs without the variable, keeping a key in data_dir ...
	up := testenv.StartBraidEnv(t, st.Base, testenv.WithoutPIIKey(), "up", "--config", st.Config)
	if err := up.Stop(t); err != nil {
		t.Fatalf("braid up stop: %v\n%s", err, up.Output())
	}
	keyFile := filepath.Join(st.DataDir, "pii.key")
	own, err := os.ReadFile(keyFile)
	if err != nil || len(bytes.TrimSpace(own)) == 0 {
		t.Fatalf("braid up kept no key: %q %v", own, err)
	}
	// ... which the other commands do not take.
	if out := refused("serve"); !strings.Contains(out, keyFile) {
		t.Errorf("the error does not name %s, which it does not read:\n%s", keyFile, out)
	}

	// With the variable, serve starts and hashes with it.
	testenv.StartBraid(t, st.Base, "serve", "--config", st.Config)
	email := "ann@example.org"
	body := fmt.Sprintf(`{"ts":"2026-01-01T00:00:00Z","order_id":"pk1","country":"DE","amount":1,"email":%q}`+"\n", email)
	if r := post(t, st.Base, []byte(body)); r.Accepted != 1 {
		t.Fatalf("ingest: %+v", r)
	}
	hash := func(key []byte) string {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(email))
		return "h:" + hex.EncodeToString(mac.Sum(nil)[:16])
	}
	want, notWant := hash([]byte(testenv.PIIKey)), hash(bytes.TrimSpace(own))
	_, js := st.NATS.JetStream(t)
	var found bool
	for _, rec := range testenv.StoredEvents(t, js, st.Namespace+"_events_orders") {
		if bytes.Contains(rec, []byte(email)) || bytes.Contains(rec, []byte(notWant)) {
			t.Fatalf("stored %s: the raw e-mail or braid up's key's hash", rec)
		}
		found = found || bytes.Contains(rec, []byte(want))
	}
	if !found {
		t.Fatalf("no stored event holds %s, the e-mail hashed with the shared key", want)
	}
}
