package logic

import (
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// This file is a small single-pass JSON scanner for Prepare and Decode. It
// reads one top-level object's members straight into an Event, without
// building a map[string]any, and it accepts and rejects exactly what
// encoding/json's Decoder (with UseNumber, decoding into a map[string]any)
// does, with the same syntax error messages: records already stored and the
// dead-letter reasons users see depend on that. FuzzParseMatchesEncodingJSON
// checks it against encoding/json.

// jsonMaxDepth is encoding/json's nesting limit: a value nested deeper is a
// syntax error ("exceeded max depth").
const jsonMaxDepth = 10000

// jsonEOF is the reason encoding/json's Decoder gives for input that ends in
// the middle of a value.
const jsonEOF = "unexpected EOF"

// jsonKindOf is what a scanned JSON value is.
type jsonKindOf uint8

const (
	jsonString jsonKindOf = iota
	jsonNumber
	jsonTrue
	jsonFalse
	jsonNull
	jsonObject
	jsonArray
)

// describe names a kind in a rejection ("want a string, got a number").
func (k jsonKindOf) describe() string {
	switch k {
	case jsonString:
		return "a string"
	case jsonNumber:
		return "a number"
	case jsonTrue, jsonFalse:
		return "a boolean"
	case jsonObject:
		return "an object"
	case jsonArray:
		return "an array"
	}
	return "null"
}

// goName is encoding/json's name of a kind in an UnmarshalTypeError.
func (k jsonKindOf) goName() string {
	switch k {
	case jsonString:
		return "string"
	case jsonNumber:
		return "number"
	case jsonTrue, jsonFalse:
		return "bool"
	case jsonObject:
		return "object"
	case jsonArray:
		return "array"
	}
	return "null"
}

// jsonScanner reads JSON from data. Its methods return false on a syntax
// error, with msg set to encoding/json's description of it.
type jsonScanner struct {
	data  []byte
	pos   int
	depth int    // open objects and arrays, the top-level object included
	msg   string // the syntax error, once a method returned false
	buf   []byte // scratch for strings that need unescaping
}

// strPlain[c] is set for the bytes a string literal may hold as they are,
// without a closer look: not '"', '\\', a control character or non-ASCII.
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func isJSONSpace(c byte) bool {
	return c <= ' ' && (c == ' ' || c == '\t' || c == '\r' || c == '\n')
}

func isJSONDigit(c byte) bool { return '0' <= c && c <= '9' }

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// fail records a syntax error at byte c, worded as encoding/json does.
func (sc *jsonScanner) fail(c byte, context string) bool {
	sc.msg = "invalid character " + quoteChar(c) + " " + context
	return false
}

func (sc *jsonScanner) eof() bool {
	sc.msg = jsonEOF
	return false
}

// quoteChar formats c as encoding/json does in a syntax error.
func quoteChar(c byte) string {
	if c == '\'' {
		return `'\''`
	}
	if c == '"' {
		return `'"'`
	}
	s := strconv.Quote(string(rune(c)))
	return "'" + s[1:len(s)-1] + "'"
}

// next skips whitespace and returns the byte at pos, which it does not
// consume; at the end of the input it fails with "unexpected EOF".
func (sc *jsonScanner) next() (byte, bool) {
	for sc.pos < len(sc.data) {
		c := sc.data[sc.pos]
		if !isJSONSpace(c) {
			return c, true
		}
		sc.pos++
	}
	return 0, sc.eof()
}

// skipSpace skips whitespace.
func (sc *jsonScanner) skipSpace() {
	for sc.pos < len(sc.data) && isJSONSpace(sc.data[sc.pos]) {
		sc.pos++
	}
}

// stringEnd checks the string literal whose opening quote is at pos and
// returns the index of its closing quote, whether it has escapes and
// whether it is all ASCII. It does not move pos.
func (sc *jsonScanner) stringEnd() (end int, escaped, ascii, ok bool) {
	data := sc.data
	i := sc.pos + 1
	ascii = true
	for {
		for i < len(data) && strPlain[data[i]] {
			i++
		}
		if i >= len(data) {
			return 0, false, false, sc.eof()
		}
		switch c := data[i]; {
		case c == '"':
			return i, escaped, ascii, true
		case c == '\\':
			escaped = true
			i++
			if i >= len(data) {
				return 0, false, false, sc.eof()
			}
			switch data[i] {
			case 'b', 'f', 'n', 'r', 't', '\\', '/', '"':
				i++
			case 'u':
				i++
				for k := 0; k < 4; k++ {
					if i >= len(data) {
						return 0, false, false, sc.eof()
					}
					if !isHex(data[i]) {
						return 0, false, false, sc.fail(data[i], "in \\u hexadecimal character escape")
					}
					i++
				}
			default:
				return 0, false, false, sc.fail(data[i], "in string escape code")
			}
		case c < 0x20:
			return 0, false, false, sc.fail(c, "in string literal")
		default: // non-ASCII
			ascii = false
			i++
		}
	}
}

// scanString reads the string literal whose opening quote is at pos and
// returns its value as encoding/json decodes it: escapes resolved, invalid
// UTF-8 and unpaired surrogates replaced by U+FFFD. The bytes are the
// input's own or the scanner's scratch buffer: they are valid until the
// next call.
func (sc *jsonScanner) scanString() ([]byte, bool) {
	end, escaped, ascii, ok := sc.stringEnd()
	if !ok {
		return nil, false
	}
	s := sc.data[sc.pos+1 : end]
	sc.pos = end + 1
	if !escaped && (ascii || utf8.Valid(s)) {
		return s, true
	}
	sc.buf = appendUnquoted(sc.buf[:0], s)
	return sc.buf, true
}

// skipString steps over the string literal whose opening quote is at pos.
func (sc *jsonScanner) skipString() bool {
	end, _, _, ok := sc.stringEnd()
	if ok {
		sc.pos = end + 1
	}
	return ok
}

// appendUnquoted appends the value of the body of a well-formed string
// literal (the scanner checked it), decoded like encoding/json's unquote.
func appendUnquoted(b, s []byte) []byte {
	for r := 0; r < len(s); {
		c := s[r]
		switch {
		case c == '\\':
			e := s[r+1]
			switch e {
			case 'b':
				b = append(b, '\b')
			case 'f':
				b = append(b, '\f')
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'u':
				rr := getu4(s[r:])
				r += 6
				if utf16.IsSurrogate(rr) {
					rr1 := getu4(s[r:])
					if dec := utf16.DecodeRune(rr, rr1); dec != unicode.ReplacementChar {
						r += 6
						b = utf8.AppendRune(b, dec)
						continue
					}
					rr = unicode.ReplacementChar
				}
				b = utf8.AppendRune(b, rr)
				continue
			default: // '"', '\\', '/'
				b = append(b, e)
			}
			r += 2
		case c < utf8.RuneSelf:
			b = append(b, c)
			r++
		default:
			rr, size := utf8.DecodeRune(s[r:])
			r += size
			b = utf8.AppendRune(b, rr)
		}
	}
	return b
}

// getu4 decodes \uXXXX from the beginning of s, returning the hex value,
// or -1 when s does not start with one.
func getu4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c = c - '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r*16 + rune(c)
	}
	return r
}

// scanNumber reads the number literal starting at pos ('-' or a digit) and
// returns its text. A number may end the input: whether that is an error is
// the caller's business.
func (sc *jsonScanner) scanNumber() ([]byte, bool) {
	data := sc.data
	start := sc.pos
	i := start
	if data[i] == '-' {
		i++
		if i >= len(data) {
			return nil, sc.eof()
		}
		if !isJSONDigit(data[i]) {
			return nil, sc.fail(data[i], "in numeric literal")
		}
	}
	if data[i] == '0' {
		i++
	} else {
		for i < len(data) && isJSONDigit(data[i]) {
			i++
		}
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) {
			return nil, sc.eof()
		}
		if !isJSONDigit(data[i]) {
			return nil, sc.fail(data[i], "after decimal point in numeric literal")
		}
		for i < len(data) && isJSONDigit(data[i]) {
			i++
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) {
			return nil, sc.eof()
		}
		if !isJSONDigit(data[i]) {
			return nil, sc.fail(data[i], "in exponent of numeric literal")
		}
		for i < len(data) && isJSONDigit(data[i]) {
			i++
		}
	}
	sc.pos = i
	return data[start:i], true
}

// scanLiteral reads true, false or null (lit), whose first byte is at pos.
func (sc *jsonScanner) scanLiteral(lit string) bool {
	data := sc.data
	i := sc.pos
	if len(data)-i >= len(lit) && string(data[i:i+len(lit)]) == lit {
		sc.pos += len(lit)
		return true
	}
	for k := 1; k < len(lit); k++ {
		if i+k >= len(data) {
			return sc.eof()
		}
		if data[i+k] != lit[k] {
			return sc.fail(data[i+k], "in literal "+lit+" (expecting '"+lit[k:k+1]+"')")
		}
	}
	panic("unreachable")
}

// scanValue reads the value starting at pos (the caller skipped the
// whitespace before it). It returns the value's kind and, for a string, its
// decoded bytes (see scanString), for a number its text. Objects and arrays
// are checked and skipped.
func (sc *jsonScanner) scanValue() (jsonKindOf, []byte, bool) {
	switch c := sc.data[sc.pos]; c {
	case '"':
		s, ok := sc.scanString()
		return jsonString, s, ok
	case '{':
		return jsonObject, nil, sc.skipValue()
	case '[':
		return jsonArray, nil, sc.skipValue()
	case 't':
		return jsonTrue, nil, sc.scanLiteral("true")
	case 'f':
		return jsonFalse, nil, sc.scanLiteral("false")
	case 'n':
		return jsonNull, nil, sc.scanLiteral("null")
	default:
		if c == '-' || isJSONDigit(c) {
			n, ok := sc.scanNumber()
			return jsonNumber, n, ok
		}
		return 0, nil, sc.fail(c, "looking for beginning of value")
	}
}

// skipValue checks and steps over the value starting at pos (the caller
// skipped the whitespace before it), however deeply nested, without
// recursion: a bit per open container says object (1) or array (0).
func (sc *jsonScanner) skipValue() bool {
	const (
		wantValue = iota // a value is next
		wantKey          // an object key is next, its quote at pos
		gotValue         // a value just ended
	)
	var small [2]uint64
	objects := small[:]
	n := 0 // containers open in this call
	state := wantValue
	for {
		switch state {
		case wantValue:
			c, ok := sc.next()
			if !ok {
				return false
			}
			switch c {
			case '{', '[':
				sc.depth++
				if sc.depth > jsonMaxDepth {
					return sc.fail(c, "exceeded max depth")
				}
				if n>>6 >= len(objects) {
					objects = append(objects, 0)
				}
				if c == '{' {
					objects[n>>6] |= 1 << (n & 63)
				} else {
					objects[n>>6] &^= 1 << (n & 63)
				}
				n++
				sc.pos++
				d, ok := sc.next()
				if !ok {
					return false
				}
				switch {
				case c == '{' && d == '}', c == '[' && d == ']':
					sc.pos++
					n--
					sc.depth--
					state = gotValue
				case c == '{' && d != '"':
					return sc.fail(d, "looking for beginning of object key string")
				case c == '{':
					state = wantKey
				}
				continue
			case '"':
				if !sc.skipString() {
					return false
				}
			case 't':
				if !sc.scanLiteral("true") {
					return false
				}
			case 'f':
				if !sc.scanLiteral("false") {
					return false
				}
			case 'n':
				if !sc.scanLiteral("null") {
					return false
				}
			default:
				if c != '-' && !isJSONDigit(c) {
					return sc.fail(c, "looking for beginning of value")
				}
				if _, ok := sc.scanNumber(); !ok {
					return false
				}
			}
			state = gotValue
		case wantKey:
			if !sc.skipString() {
				return false
			}
			c, ok := sc.next()
			if !ok {
				return false
			}
			if c != ':' {
				return sc.fail(c, "after object key")
			}
			sc.pos++
			state = wantValue
		case gotValue:
			if n == 0 {
				return true
			}
			c, ok := sc.next()
			if !ok {
				return false
			}
			inObject := objects[(n-1)>>6]&(1<<((n-1)&63)) != 0
			switch {
			case c == ',':
				sc.pos++
				if !inObject {
					state = wantValue
					continue
				}
				d, ok := sc.next()
				if !ok {
					return false
				}
				if d != '"' {
					return sc.fail(d, "looking for beginning of object key string")
				}
				state = wantKey
			case inObject && c == '}', !inObject && c == ']':
				sc.pos++
				n--
				sc.depth--
			case inObject:
				return sc.fail(c, "after object key:value pair")
			default:
				return sc.fail(c, "after array element")
			}
		}
	}
}

// AppendJSONString appends s as a JSON string exactly as encoding/json's
// Marshal writes it. For encoders outside logic (serving's answers).
func AppendJSONString(dst []byte, s string) []byte { return appendJSONString(dst, s) }

// appendJSONString appends s as a JSON string exactly as encoding/json's
// Marshal writes it (records must stay byte-identical): '"', '\\' and the
// control characters escaped (\b \f \n \r \t by name, the rest as \u00XX),
// '<', '>' and '&' as \u003c \u003e \u0026, U+2028 and U+2029 as \u2028
// and \u2029, each byte of invalid UTF-8 as \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if htmlSafe[c] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '\\', '"':
				dst = append(dst, '\\', c)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// htmlSafe[c] is set for the ASCII bytes encoding/json writes as they are.
var htmlSafe = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// fieldTable finds a declared field by name from the key's bytes, faster
// than a map: a perfect hash of the names' length and first, middle and
// last bytes. newFieldTable returns nil when no small table keeps the
// names apart; the stream then uses its map.
type fieldTable struct {
	slots []int32 // field index + 1; 0: no field
	names []string
	mul   uint32
	shift uint32
}

func (t *fieldTable) slot(key []byte) uint32 {
	n := len(key)
	x := uint32(n)
	if n > 0 {
		x |= uint32(key[0])<<8 | uint32(key[n/2])<<16 | uint32(key[n-1])<<24
	}
	return (x * t.mul) >> t.shift
}

// find returns the index of the field named key, or -1.
func (t *fieldTable) find(key []byte) int {
	i := int(t.slots[t.slot(key)]) - 1
	if i >= 0 && t.names[i] == string(key) {
		return i
	}
	return -1
}

func newFieldTable(fields []Field) *fieldTable {
	const maxBits = 12
	muls := [...]uint32{0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D, 0x27D4EB2F, 0x165667B1, 0xD3A2646C | 1, 0xFD7046C5, 0xB55A4F09}
	names := make([]string, len(fields))
	for i, f := range fields {
		names[i] = f.Name
	}
	bits := 1
	for 1<<bits < 2*len(fields) {
		bits++
	}
	for ; bits <= maxBits; bits++ {
		for _, mul := range muls {
			t := &fieldTable{slots: make([]int32, 1<<bits), names: names, mul: mul, shift: uint32(32 - bits)}
			ok := true
			for i, n := range names {
				h := t.slot([]byte(n))
				if t.slots[h] != 0 {
					ok = false
					break
				}
				t.slots[h] = int32(i + 1)
			}
			if ok {
				return t
			}
		}
	}
	return nil
}
