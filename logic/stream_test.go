package logic_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/braid-data/braid/logic"
)

const testNow = int64(1714564800000) // 2024-05-01T12:00:00Z

func shopStream(t testing.TB, strict bool, key string) *logic.Stream {
	t.Helper()
	s, err := logic.NewStream("orders", logic.StreamDef{
		Time: "ts", ID: "order_id", Strict: strict, MaxFuture: 5 * time.Minute, MaxValueBytes: 64,
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "order_id": logic.TypeString, "country": logic.TypeString,
			"amount": logic.TypeFloat, "items": logic.TypeInt, "paid": logic.TypeBool,
			"email": logic.TypeString, "card": logic.TypeString, "name": logic.TypeString},
		Required: []string{"country"},
		PII:      map[string]logic.PIIMode{"email": logic.PIIHash, "card": logic.PIIMask, "name": logic.PIIRedact},
	}, []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func val(t testing.TB, s *logic.Stream, ev logic.Event, field string) logic.Value {
	t.Helper()
	i := s.FieldIndex(field)
	if i < 0 {
		t.Fatalf("no field %s", field)
	}
	return ev.Values[i]
}

func TestPrepareAccepts(t *testing.T) {
	s := shopStream(t, false, "k")
	cases := []struct {
		raw   string
		field string
		want  logic.Value
	}{
		{`{"ts":"2024-05-01T12:00:00Z","country":"FR"}`, "ts", logic.Value{Kind: logic.TypeTime, I: testNow}},
		{`{"ts":"2024-05-01T14:00:00.123+02:00","country":"FR"}`, "ts", logic.Value{Kind: logic.TypeTime, I: testNow + 123}},
		{`{"ts":1714564800123,"country":"FR"}`, "ts", logic.Value{Kind: logic.TypeTime, I: testNow + 123}},
		{`{"ts":1.714564800123e12,"country":"FR"}`, "ts", logic.Value{Kind: logic.TypeTime, I: testNow + 123}},
		{`{"ts":0,"country":"FR"}`, "ts", logic.Value{Kind: logic.TypeTime, I: 0}},
		{`{"ts":"1970-01-01T00:00:00Z","country":"FR"}`, "ts", logic.Value{Kind: logic.TypeTime, I: 0}},
		{`{"ts":1,"country":"FR","items":2.0}`, "items", logic.Value{Kind: logic.TypeInt, I: 2}},
		{`{"ts":1,"country":"FR","items":1e3}`, "items", logic.Value{Kind: logic.TypeInt, I: 1000}},
		{`{"ts":1,"country":"FR","items":-9223372036854775808}`, "items", logic.Value{Kind: logic.TypeInt, I: math.MinInt64}},
		{`{"ts":1,"country":"FR","amount":7}`, "amount", logic.Value{Kind: logic.TypeFloat, F: 7}},
		{`{"ts":1,"country":"FR","amount":-1.5e-7}`, "amount", logic.Value{Kind: logic.TypeFloat, F: -1.5e-7}},
		{`{"ts":1,"country":"FR","amount":1.7976931348623157e308}`, "amount", logic.Value{Kind: logic.TypeFloat, F: math.MaxFloat64}},
		{`{"ts":1,"country":"FR","paid":true}`, "paid", logic.Value{Kind: logic.TypeBool, I: 1}},
		{`{"ts":1,"country":"FR","paid":false}`, "paid", logic.Value{Kind: logic.TypeBool, I: 0}},
		{`{"ts":1,"country":"FR","paid":null}`, "paid", logic.Value{}},
		{`{"ts":1,"country":"Zürich \"q\" \u2028"}`, "country", logic.Value{Kind: logic.TypeString, S: "Zürich \"q\" \u2028"}},
		{`{"ts":1,"country":"FR","order_id":"` + strings.Repeat("x", 64) + `"}`, "order_id", logic.Value{Kind: logic.TypeString, S: strings.Repeat("x", 64)}},
		{` {"ts":1,"country":"FR"} ` + "\n", "country", logic.Value{Kind: logic.TypeString, S: "FR"}},
		// Unknown fields, even nested, are dropped when the stream is not strict.
		{`{"ts":1,"country":"FR","extra":{"a":[1,2,{"b":null}]}}`, "country", logic.Value{Kind: logic.TypeString, S: "FR"}},
	}
	for _, c := range cases {
		ev, rec, err := s.Prepare([]byte(c.raw), testNow)
		if err != nil {
			t.Errorf("%s: %v", c.raw, err)
			continue
		}
		if got := val(t, s, ev, c.field); got != c.want {
			t.Errorf("%s: %s = %+v, want %+v", c.raw, c.field, got, c.want)
		}
		if ev.Time != val(t, s, ev, "ts").I {
			t.Errorf("%s: Time %d", c.raw, ev.Time)
		}
		if bytes.Contains(rec, []byte("extra")) {
			t.Errorf("%s: record %s keeps an undeclared field", c.raw, rec)
		}
	}
	// The time limits: up to 9999-12-31T23:59:59.999Z and no further ahead
	// of the clock than max_future.
	far, err := logic.NewStream("far", logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{"ts": logic.TypeTime}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []string{`{"ts":"9999-12-31T23:59:59.999Z"}`, fmt.Sprintf(`{"ts":%d}`, logic.MaxTimeMs)} {
		if _, _, err := far.Prepare([]byte(raw), testNow); err != nil {
			t.Errorf("%s: %v", raw, err)
		}
	}
	edge := fmt.Sprintf(`{"ts":%d,"country":"FR"}`, testNow+5*60_000)
	if _, _, err := s.Prepare([]byte(edge), testNow); err != nil {
		t.Errorf("an event exactly max_future ahead is accepted: %v", err)
	}
}

func TestPrepareRejects(t *testing.T) {
	s := shopStream(t, false, "k")
	strict := shopStream(t, true, "k")
	cases := []struct {
		s      *logic.Stream
		raw    string
		field  string
		reason string
	}{
		{s, ``, "", "empty event"},
		{s, "  \n\t", "", "empty event"},
		{s, `null`, "", "not a JSON object"},
		{s, `[1,2]`, "", "invalid JSON"},
		{s, `"x"`, "", "invalid JSON"},
		{s, `{"ts":1,"country":"FR"`, "", "invalid JSON"},
		{s, `{"ts":1,"country":"FR"} {}`, "", "trailing data"},
		{s, `{"ts":1,"country":"FR","amount":NaN}`, "", "invalid JSON"},
		{s, `{"ts":1,"country":"FR","amount":Infinity}`, "", "invalid JSON"},
		{s, `{"ts":1,"country":"FR","amount":-Infinity}`, "", "invalid JSON"},
		{s, "{\"ts\":1,\"country\":\"F\xffR\"}", "", "invalid UTF-8"},
		{s, "\xef\xbb\xbf{\"ts\":1,\"country\":\"FR\"}", "", "invalid JSON"},
		{s, `{"country":"FR"}`, "ts", "required field is missing"},
		{s, `{"ts":null,"country":"FR"}`, "ts", "required field is missing"},
		{s, `{"ts":1}`, "country", "required field is missing"},
		{s, `{"ts":1,"country":null}`, "country", "required field is missing"},
		{s, `{"ts":1,"country":5}`, "country", "want a string, got a number"},
		{s, `{"ts":1,"country":true}`, "country", "want a string, got a boolean"},
		{s, `{"ts":1,"country":{"code":"FR"}}`, "country", "want a string, got an object"},
		{s, `{"ts":1,"country":["FR"]}`, "country", "want a string, got an array"},
		{s, `{"ts":1,"country":"FR","items":1.5}`, "items", "want an integer"},
		{s, `{"ts":1,"country":"FR","items":"3"}`, "items", "want an integer, got a string"},
		{s, `{"ts":1,"country":"FR","items":1e30}`, "items", "want an integer"},
		{s, `{"ts":1,"country":"FR","items":99999999999999999999}`, "items", "want an integer"},
		{s, `{"ts":1,"country":"FR","amount":1e400}`, "amount", "out of range"},
		{s, `{"ts":1,"country":"FR","amount":-1e309}`, "amount", "out of range"},
		{s, `{"ts":1,"country":"FR","amount":"12.5"}`, "amount", "want a number, got a string"},
		{s, `{"ts":1,"country":"FR","paid":1}`, "paid", "want true or false"},
		{s, `{"ts":1,"country":"FR","paid":"true"}`, "paid", "want true or false"},
		{s, `{"ts":"yesterday","country":"FR"}`, "ts", "bad time"},
		{s, `{"ts":"2024-05-01 12:00:00","country":"FR"}`, "ts", "bad time"},
		{s, `{"ts":"1969-12-31T23:59:59Z","country":"FR"}`, "ts", "outside 1970..9999"},
		{s, `{"ts":"1970-01-01T01:00:00+02:00","country":"FR"}`, "ts", "outside 1970..9999"},
		{s, `{"ts":-1,"country":"FR"}`, "ts", "outside 1970..9999"},
		{s, fmt.Sprintf(`{"ts":%d,"country":"FR"}`, logic.MaxTimeMs+1), "ts", "outside 1970..9999"},
		{s, `{"ts":"10000-01-01T00:00:00Z","country":"FR"}`, "ts", "bad time"},
		{s, `{"ts":1e300,"country":"FR"}`, "ts", "bad time"},
		{s, `{"ts":true,"country":"FR"}`, "ts", "want a time"},
		{s, fmt.Sprintf(`{"ts":%d,"country":"FR"}`, testNow+5*60_000+1), "ts", "ahead of the clock"},
		{s, `{"ts":"2024-05-01T12:05:00.001Z","country":"FR"}`, "ts", "ahead of the clock"},
		{s, `{"ts":1,"country":"` + strings.Repeat("x", 65) + `"}`, "country", "longer than the limit of 64"},
		{s, `{"ts":1,"country":"` + strings.Repeat("é", 33) + `"}`, "country", "66 bytes"},
		{strict, `{"ts":1,"country":"FR","extra":1}`, "extra", "unknown field"},
		{strict, `{"ts":1,"country":"FR","nested":{"a":{"b":[1]}}}`, "nested", "unknown field"},
	}
	for _, c := range cases {
		_, rec, err := c.s.Prepare([]byte(c.raw), testNow)
		if err == nil {
			t.Errorf("%q: accepted as %s", c.raw, rec)
			continue
		}
		var re *logic.RejectError
		if !errors.As(err, &re) || !logic.IsReject(err) {
			t.Errorf("%q: %v is not a RejectError", c.raw, err)
			continue
		}
		if re.Field != c.field || !strings.Contains(re.Reason, c.reason) {
			t.Errorf("%q: got field %q reason %q, want %q / %q", c.raw, re.Field, re.Reason, c.field, c.reason)
		}
	}
	// A huge body is rejected, not truncated or crashed on.
	huge := `{"ts":1,"country":"` + strings.Repeat("x", 8<<20) + `"}`
	if _, _, err := s.Prepare([]byte(huge), testNow); !logic.IsReject(err) {
		t.Errorf("huge value: %v", err)
	}
	// Deep nesting in a declared field is a type error, in an unknown field of
	// a strict stream an unknown field.
	deep := `{"ts":1,"country":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`
	if _, _, err := s.Prepare([]byte(deep), testNow); !logic.IsReject(err) {
		t.Errorf("deep nesting: %v", err)
	}
}

func TestPIIMasking(t *testing.T) {
	s := shopStream(t, false, "key-1")
	raw := `{"ts":1,"country":"FR","email":"ann.smith@example.com","card":"4111111111111111","name":"Ann Smith"}`
	ev, rec, err := s.Prepare([]byte(raw), testNow)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"ann.smith", "4111111111111111", "411111111111", "Ann Smith", "Smith"} {
		if bytes.Contains(rec, []byte(secret)) {
			t.Errorf("record %s contains raw PII %q", rec, secret)
		}
		for _, v := range ev.Values {
			if strings.Contains(v.S, secret) {
				t.Errorf("event value %q contains raw PII %q", v.S, secret)
			}
		}
	}
	mac := hmac.New(sha256.New, []byte("key-1"))
	mac.Write([]byte("ann.smith@example.com"))
	wantHash := "h:" + hex.EncodeToString(mac.Sum(nil)[:16])
	if got := val(t, s, ev, "email").S; got != wantHash {
		t.Errorf("hash %q, want %q", got, wantHash)
	}
	if got := val(t, s, ev, "card").S; got != "************1111" {
		t.Errorf("mask %q", got)
	}
	if got := val(t, s, ev, "name").S; got != "[redacted]" {
		t.Errorf("redact %q", got)
	}
	// Hashes are stable for equal inputs, distinct for distinct inputs, keyed.
	ev2, _, _ := s.Prepare([]byte(raw), testNow)
	if val(t, s, ev2, "email") != val(t, s, ev, "email") {
		t.Error("hash is not stable")
	}
	other, _, _ := s.Prepare([]byte(`{"ts":1,"country":"FR","email":"bob@example.com"}`), testNow)
	if val(t, s, other, "email") == val(t, s, ev, "email") {
		t.Error("distinct inputs hash alike")
	}
	k2 := shopStream(t, false, "key-2")
	ev3, _, _ := k2.Prepare([]byte(raw), testNow)
	if val(t, k2, ev3, "email") == val(t, s, ev, "email") {
		t.Error("hash ignores the key")
	}
	// Masking of e-mail addresses and short values.
	for in, want := range map[string]string{"ann@example.com": "a**@example.com", "abc": "***", "12345678": "********", "123456789": "*****6789", "ümlaut-ößäü": "*******ößäü"} {
		e, _, err := s.Prepare([]byte(`{"ts":1,"country":"FR","card":"`+in+`"}`), testNow)
		if err != nil {
			t.Fatal(err)
		}
		if got := val(t, s, e, "card").S; got != want {
			t.Errorf("mask(%q) = %q, want %q", in, got, want)
		}
	}
	// PrepareMasked (a replayed dead letter) does not mask again, and gives
	// the same record; Prepare would hash the hash.
	ev4, rec4, err := s.PrepareMasked(rec, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rec4, rec) || val(t, s, ev4, "email") != val(t, s, ev, "email") {
		t.Errorf("PrepareMasked re-masked: %s vs %s", rec4, rec)
	}
	_, rec5, _ := s.Prepare(rec, testNow)
	if bytes.Equal(rec5, rec) {
		t.Error("Prepare of a masked record should mask again (the test is not exercising masking)")
	}
	// MaskPayload: invalid events keep no raw PII in the dead-letter queue.
	bad := []byte(`{"ts":"nope","email":"ann.smith@example.com","amount":"x"}`)
	if m := s.MaskPayload(bad); bytes.Contains(m, []byte("ann.smith")) || !bytes.Contains(m, []byte(wantHash)) {
		t.Errorf("MaskPayload %s", m)
	}
	if m := s.MaskPayload([]byte(`ann.smith@example.com`)); bytes.Contains(m, []byte("ann")) {
		t.Errorf("MaskPayload of a non-object %s", m)
	}
	// An object followed by more is not one object: withheld whole (a
	// replay of the masked first object would store what was never sent).
	if m := s.MaskPayload([]byte(`{"email":"ann.smith@example.com"} {"ts":1}`)); bytes.Contains(m, []byte("ann")) || !bytes.Contains(m, []byte("withheld")) {
		t.Errorf("MaskPayload of an object with trailing data %s", m)
	}
}

func TestDedupContentID(t *testing.T) {
	s, err := logic.NewStream("sensors", logic.StreamDef{Time: "ts", DedupContent: true,
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "device": logic.TypeString}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _, _ := s.Prepare([]byte(`{"ts":5,"device":"d1","junk":1}`), testNow)
	b, _, _ := s.Prepare([]byte(`{"device":"d1","ts":"1970-01-01T00:00:00.005Z"}`), testNow)
	c, _, _ := s.Prepare([]byte(`{"ts":5,"device":"d2"}`), testNow)
	if a.ID == "" || a.ID != b.ID || a.ID == c.ID {
		t.Fatalf("content ids %q %q %q", a.ID, b.ID, c.ID)
	}
}

// randomEvent builds a valid event of the shop stream from the generator.
func randomEvent(r *rand.Rand, s *logic.Stream) logic.Event {
	ev := logic.Event{Values: make([]logic.Value, len(s.Fields))}
	for i, f := range s.Fields {
		if !f.Required && r.IntN(4) == 0 {
			continue
		}
		switch f.Type {
		case logic.TypeString:
			ev.Values[i] = logic.Value{Kind: logic.TypeString, S: randomString(r)}
		case logic.TypeInt:
			ev.Values[i] = logic.Value{Kind: logic.TypeInt, I: int64(r.Uint64())}
		case logic.TypeFloat:
			var f float64
			for {
				f = math.Float64frombits(r.Uint64())
				if !math.IsNaN(f) && !math.IsInf(f, 0) {
					break
				}
			}
			if r.IntN(2) == 0 {
				f = float64(r.IntN(1000)) / 8
			}
			ev.Values[i] = logic.Value{Kind: logic.TypeFloat, F: f}
		case logic.TypeBool:
			ev.Values[i] = logic.Value{Kind: logic.TypeBool, I: int64(r.IntN(2))}
		case logic.TypeTime:
			ev.Values[i] = logic.Value{Kind: logic.TypeTime, I: r.Int64N(logic.MaxTimeMs + 1)}
		}
	}
	ev.Time = ev.Values[s.TimeField].I
	if s.IDField >= 0 {
		ev.ID = ev.Values[s.IDField].String()
	}
	return ev
}

func randomString(r *rand.Rand) string {
	alphabet := []rune("aZ09 \"\\/'\t\n\x00\x01\x1fé€😀\u2028<>&")
	n := r.IntN(12)
	out := make([]rune, n)
	for i := range out {
		out[i] = alphabet[r.IntN(len(alphabet))]
	}
	return string(out)
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	s, err := logic.NewStream("all", logic.StreamDef{Time: "ts", ID: "id",
		Fields: map[string]logic.FieldType{"ts": logic.TypeTime, "id": logic.TypeString, "s": logic.TypeString,
			"i": logic.TypeInt, "f": logic.TypeFloat, "b": logic.TypeBool, "t2": logic.TypeTime}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 5000; n++ {
		ev := randomEvent(r, s)
		rec := s.Encode(ev)
		if !utf8.Valid(rec) || !json.Valid(rec) {
			t.Fatalf("Encode gave invalid JSON %q", rec)
		}
		got, err := s.Decode(rec)
		if err != nil {
			t.Fatalf("Decode(%s): %v", rec, err)
		}
		if got.Time != ev.Time || got.ID != ev.ID || len(got.Values) != len(ev.Values) {
			t.Fatalf("round trip of %+v gave %+v", ev, got)
		}
		for i := range ev.Values {
			if got.Values[i] != ev.Values[i] {
				t.Fatalf("field %s: %+v became %+v (record %s)", s.Fields[i].Name, ev.Values[i], got.Values[i], rec)
			}
		}
		// Prepare of the record accepts it and gives the same record back.
		_, rec2, err := s.Prepare(rec, logic.MaxTimeMs)
		if err != nil || !bytes.Equal(rec, rec2) {
			t.Fatalf("Prepare(%s) = %s, %v", rec, rec2, err)
		}
	}
	if _, err := s.Decode([]byte(`{"ts":`)); err == nil {
		t.Fatal("Decode accepted a broken record")
	}
}

// TestDigest: stable for the same parts and key; different when the parts
// are split differently, or the key differs.
func TestDigest(t *testing.T) {
	def := logic.StreamDef{Time: "ts", Fields: map[string]logic.FieldType{"ts": logic.TypeTime}}
	a, err := logic.NewStream("s", def, []byte("key-1"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := logic.NewStream("s", def, []byte("key-2"))
	if err != nil {
		t.Fatal(err)
	}
	d := a.Digest([]byte("ab"), []byte("c"))
	if len(d) != 32 || d != a.Digest([]byte("ab"), []byte("c")) {
		t.Fatalf("digest %q not stable", d)
	}
	for _, other := range []string{a.Digest([]byte("a"), []byte("bc")), a.Digest([]byte("abc")), b.Digest([]byte("ab"), []byte("c"))} {
		if other == d {
			t.Fatalf("digest %q repeated for other parts or key", d)
		}
	}
}
