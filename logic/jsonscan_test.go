package logic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

func scanTestStream(t testing.TB) *Stream {
	t.Helper()
	s, err := NewStream("orders", StreamDef{Time: "ts", ID: "id",
		Fields: map[string]FieldType{"ts": TypeTime, "id": TypeString, "country": TypeString,
			"amount": TypeFloat, "items": TypeInt, "email": TypeString},
		PII: map[string]PIIMode{"email": PIIHash},
	}, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// decoderReason is what the old encoding/json parser said about raw when it
// is not a valid JSON object, "" when it is one — except that Braid also
// refuses a trailing ']' or '}' (Decoder.More lets them by).
func decoderReason(raw []byte) string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		if len(bytes.TrimSpace(raw)) == 0 {
			return "empty event"
		}
		return "invalid JSON: " + strings.TrimPrefix(err.Error(), "json: ")
	}
	if obj == nil {
		return "event is not a JSON object"
	}
	if len(bytes.TrimLeft(raw[dec.InputOffset():], " \t\r\n")) > 0 {
		return "invalid JSON: trailing data after the object"
	}
	return ""
}

// TestScanSyntaxErrors: every way of not being a JSON object gets
// encoding/json's own words.
func TestScanSyntaxErrors(t *testing.T) {
	s := scanTestStream(t)
	deep := func(n int, open, close string) string {
		return `{"x":` + strings.Repeat(open, n) + strings.Repeat(close, n) + `}`
	}
	cases := []string{
		``, ` `, "\t\r\n ", "\u00a0", "\u3000{}", "\xef\xbb\xbf{}", "\x00", "\x7f", "\x80", "\xc3",
		`null`, `nul`, `nulx`, `nullx`, `true`, `tru`, `trux`, `false`, `fals`, `falsy`, `"x"`, `"x`, `"\x"`,
		`1`, `-`, `-0`, `-a`, `01`, `1.`, `1.a`, `1e`, `1e+`, `1ea`, `1 2`, `123abc`, `[]`, `[1,2]`, `[1,2`, `[1,]`, `[,1]`, `[}`,
		`[1 2]`, `[{"a":1}]x`, `{`, `{ `, `{"`, `{"a`, `{"a"`, `{"a":`, `{"a":1`, `{"a":1,`, `{"a":1,}`, `{,}`, `{1:2}`,
		`{"a" 1}`, `{"a":1 "b":2}`, `{"a":}`, `{"a":]}`, `{"a":[}`, `{"a":{]}`, `{"a":{"b"}}`, `{"a":{"b":1,}}`,
		`{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":.5}`, `{"a":+1}`, `{"a":1e}`, `{"a":1E-}`, `{"a":0x1}`,
		`{"a":NaN}`, `{"a":Infinity}`, `{"a":-Infinity}`, `{"a":tRue}`, `{"a":nil}`, `{"a":'x'}`,
		"{\"a\":\"\x01\"}", "{\"a\":\"\x1f\"}", `{"a":"\u12"}`, `{"a":"\u12g4"}`, `{"a":"\U1234"}`, `{"a":"\'"}`, `{"a":"\`,
		`{"a":"\u`, `{"a":"\u1`, "{\"a\":\"x\xff\"}",
		`{"a":1}`, `{"a":1} `, `{"a":1}}`, `{"a":1}]`, `{"a":1} x`, `{"a":1}{}`, `{"a":1} null`, "{\"a\":1}\x00", "{\"a\":1}\u00a0",
		deep(jsonMaxDepth-1, "[", "]"), deep(jsonMaxDepth, "[", "]"), deep(jsonMaxDepth-1, `{"a":`, "}"), deep(jsonMaxDepth, `{"a":`, "}"),
		`[` + strings.Repeat("[", jsonMaxDepth) + strings.Repeat("]", jsonMaxDepth) + `]`,
		strings.Repeat("[", jsonMaxDepth) + strings.Repeat("]", jsonMaxDepth),
		`{"x":{"a`, `{"x":{"a"`, `{"x":{"a" `, `{"x":{"a":`, `{"x":{"a":1`, `{"x":{"a":1,`, `{"x":{`, `{"x":[`, `{"x":[1`, `{"x":[1,`, `{"x":["a`,
		deep(70, "[", "]"), deep(200, `{"a":[`, "]}"), `{"x":` + strings.Repeat("[", 300),
	}
	for _, c := range cases {
		want := decoderReason([]byte(c))
		for _, ts := range []string{"country", "ts"} { // an unknown and a declared field
			raw := []byte(strings.Replace(c, `"x":`, `"`+ts+`":`, 1))
			if ts == "ts" {
				want = decoderReason(raw)
			}
			_, err := s.parse(raw, false, true)
			var got string
			if re := (*RejectError)(nil); errors.As(err, &re) && re.Field == "" {
				got = re.Reason
			}
			if got != want {
				t.Errorf("%.80q: reason %q, want %q (error %v)", raw, got, want, err)
			}
		}
	}
}

// TestScanStrings: values and keys decode as encoding/json decodes them.
func TestScanStrings(t *testing.T) {
	s := scanTestStream(t)
	for _, lit := range []string{
		`""`, `"plain"`, `"é€😀"`, `"\"\\\/\b\f\n\r\t"`, `"\u0000\u001f\u007f\u0080\u00e9\u20ac\uFFFF"`,
		`"\ud83d\ude00"`, `"\ud83d"`, `"\ude00"`, `"\ud83dx"`, `"\ud83d\u0041"`, `"\ud83d\ud83d\ude00"`, `"\ude00\ud83d"`,
		`"\ud83d\\"`, `"a\ud83d\\ude00"`, "\"\xff\xfe\"", "\"\xed\xa0\x80\"", "\"a\xc3\"", `"\u2028\u2029"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(lit), &want); err != nil {
			t.Fatalf("%s: %v", lit, err)
		}
		sc := jsonScanner{data: []byte(lit)}
		got, ok := sc.scanString()
		if !ok || string(got) != want || sc.pos != len(lit) {
			t.Errorf("%s: %q (ok %v, pos %d), want %q", lit, got, ok, sc.pos, want)
		}
		// As a key: "t\u0073" is the field ts.
		ev, err := s.parse([]byte(`{"ts":1,"country":`+lit+`}`), true, false)
		if err != nil || ev.Values[s.FieldIndex("country")].S != want {
			t.Errorf("%s as a value: %+v, %v", lit, ev, err)
		}
	}
	ev, err := s.parse([]byte(`{"t\u0073":1,"\u0063ountry":"FR"}`), false, true)
	if err != nil || ev.Time != 1 || ev.Values[s.FieldIndex("country")].S != "FR" {
		t.Errorf("escaped keys: %+v, %v", ev, err)
	}
}

// TestScanFirstFaultWins: when several fields are at fault the first one in
// the input is named (the old parser named any of them), a duplicate key
// replaces the earlier value and its fault, and invalid JSON anywhere wins
// over any fault of a field.
func TestScanFirstFaultWins(t *testing.T) {
	s := scanTestStream(t)
	s.Strict = true
	cases := []struct{ raw, field, reason string }{
		{`{"ts":1,"items":"x","amount":"y"}`, "items", "want an integer, got a string"},
		{`{"ts":1,"amount":"y","items":"x"}`, "amount", "want a number, got a string"},
		{`{"zz":1,"ts":"bad"}`, "zz", "unknown field (the stream is strict)"},
		{`{"ts":"bad","zz":1,"yy":2}`, "ts", `bad time "bad": want RFC 3339 or epoch milliseconds`},
		{`{"items":"x","ts":1,"items":2,"amount":"y"}`, "amount", "want a number, got a string"},
		{`{"items":"x","ts":1,"amount":"y","items":"z"}`, "amount", "want a number, got a string"},
		{`{"items":"x","ts":1,"items":null}`, "", ""},
		{`{"items":"x","ts":1,"amount":"y"`, "", "invalid JSON: unexpected EOF"},
		{`{"items":"x","ts":1} x`, "", "invalid JSON: trailing data after the object"},
		{`{"items":3}`, "ts", "required field is missing"},
		{`{"ts":1,"ts":null}`, "ts", "required field is missing"},
	}
	for _, c := range cases {
		_, err := s.parse([]byte(c.raw), false, true)
		var re *RejectError
		if c.reason == "" {
			if err != nil {
				t.Errorf("%s: %v", c.raw, err)
			}
			continue
		}
		if !errors.As(err, &re) || re.Field != c.field || re.Reason != c.reason {
			t.Errorf("%s: %v, want field %q reason %q", c.raw, err, c.field, c.reason)
		}
	}
}

// TestAppendJSONStringMatchesMarshal: records keep json.Marshal's bytes.
func TestAppendJSONStringMatchesMarshal(t *testing.T) {
	var all []byte
	for c := range 256 {
		all = append(all, byte(c))
	}
	cases := []string{"", "plain", string(all), "<a href=\"x\">&amp;</a>", "\u2028\u2029\u202a", "é€😀\ufffd", "\xed\xa0\x80", "a\xc3"}
	r := rand.New(rand.NewPCG(3, 4))
	alphabet := []rune("aZ09 \"\\/'\t\n\b\f\r\x00\x01\x1f\x7fé€😀\u2028\u2029<>&\ufffd")
	for range 2000 {
		var b []byte
		for range r.IntN(16) {
			if r.IntN(8) == 0 {
				b = append(b, byte(r.IntN(256)))
			} else {
				b = utf8.AppendRune(b, alphabet[r.IntN(len(alphabet))])
			}
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		want, _ := json.Marshal(c)
		if got := appendJSONString([]byte("x"), c); string(got) != "x"+string(want) {
			t.Fatalf("%q: %s, want %s", c, got[1:], want)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	f.Add("<é>&\u2028\x00\xff")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: %s, want %s", s, got, want)
		}
	})
}

// TestPrepareAllocations keeps Prepare lean: the values slice, two strings,
// the hash and the record.
func TestPrepareAllocations(t *testing.T) {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, set := range bi.Settings {
			if set.Key == "-race" && set.Value == "true" {
				t.Skip("the race detector makes sync.Pool drop entries")
			}
		}
	}
	s := scanTestStream(t)
	raw := []byte(`{"ts":"2024-05-01T12:00:00.123Z","id":"o-123456","country":"FR","amount":12.5,"items":3,"email":"ann@example.com","extra":{"a":[1,2,{"b":null}]}}`)
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	s.Prepare(raw, now) // warm the hasher pool
	if n := testing.AllocsPerRun(200, func() {
		if _, _, err := s.Prepare(raw, now); err != nil {
			t.Fatal(err)
		}
	}); n > 5 {
		t.Errorf("Prepare allocates %v times per event, want at most 5", n)
	}
	rec := s.Encode(Event{Values: make([]Value, len(s.Fields))})
	if string(rec) != "{}" {
		t.Errorf("empty event encodes as %s", rec)
	}
}

// TestFieldTable: the perfect hash finds every declared name and nothing
// else, and gives way to the map when names cannot be kept apart.
func TestFieldTable(t *testing.T) {
	sets := [][]string{
		{"ts"}, {"ts", ""}, {"ts", "id", "country", "amount", "items", "email"},
		{"ts", "é", "a\"b", "日本語", "x\x00y"},
		{"ts", "axyzb", "aqyrb"}, // same length, first, middle and last bytes: the map
	}
	var many, numbered []string
	for i := range 60 {
		many = append(many, fmt.Sprintf("%c_%d_%c", 'a'+i%26, i, 'z'-i%7))
	}
	for i := range 300 {
		numbered = append(numbered, fmt.Sprintf("field_%03d", i))
	}
	sets = append(sets, append(many, "ts"), append(numbered, "ts"))
	for k, names := range sets {
		def := StreamDef{Time: "ts", Fields: map[string]FieldType{}}
		for _, n := range names {
			def.Fields[n] = TypeString
		}
		def.Fields["ts"] = TypeTime
		s, err := NewStream("x", def, nil)
		if err != nil {
			t.Fatal(err)
		}
		if k != 6 && (s.table == nil) != (k == 4) { // 300 fields: either way
			t.Errorf("set %d: table %v", k, s.table != nil)
		}
		for i, f := range s.Fields {
			if j, ok := s.lookup([]byte(f.Name)); !ok || j != i {
				t.Errorf("set %d: lookup(%q) = %d, %v, want %d", k, f.Name, j, ok, i)
			}
			for _, other := range []string{f.Name + "x", "x" + f.Name, strings.ToUpper(f.Name), f.Name[:len(f.Name)/2]} {
				if _, declared := s.index[other]; declared {
					continue
				}
				if j, ok := s.lookup([]byte(other)); ok {
					t.Errorf("set %d: lookup(%q) found field %d", k, other, j)
				}
			}
		}
	}
}

// TestPrepareConcurrent: streams are shared by the ingest goroutines; the
// pooled HMACs must not mix their states.
func TestPrepareConcurrent(t *testing.T) {
	s := scanTestStream(t)
	now := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	want := make([]string, 50)
	raws := make([][]byte, len(want))
	for i := range raws {
		raws[i] = fmt.Appendf(nil, `{"ts":1,"email":"user%d@example.com"}`, i)
		ev, _, err := s.Prepare(raws[i], now)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = ev.Values[s.FieldIndex("email")].S
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for n := range 500 {
				i := (n*7 + g) % len(raws)
				ev, _, err := s.Prepare(raws[i], now)
				if err != nil || ev.Values[s.FieldIndex("email")].S != want[i] {
					t.Errorf("event %d: %+v, %v; want hash %s", i, ev, err, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestTrailingBracketsRejected: an object followed by a stray ']' or '}' is
// trailing data, like any other (encoding/json's Decoder.More lets them by).
func TestTrailingBracketsRejected(t *testing.T) {
	s := scanTestStream(t)
	for _, raw := range []string{`{"ts":1,"id":"a"}}`, `{"ts":1,"id":"a"} ]`, "{\"ts\":1,\"id\":\"a\"}\n}"} {
		_, _, err := s.Prepare([]byte(raw), 0)
		if err == nil || !strings.Contains(err.Error(), "trailing data") {
			t.Errorf("%q: %v, want trailing data", raw, err)
		}
	}
	if _, _, err := s.Prepare([]byte("{\"ts\":1,\"id\":\"a\"} \r\n\t"), 0); err != nil {
		t.Errorf("trailing whitespace: %v", err)
	}
}
