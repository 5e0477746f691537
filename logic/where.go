package logic

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// A view's `where` predicate: a boolean expression over the stream's fields,
// compiled once into a Go evaluator (the speed layer) and a DuckDB SQL
// expression (the batch layer) that agree row for row.
//
// Grammar (keywords are case-insensitive; field names are exact):
//
//	expr    := and { "or" and }
//	and     := unary { "and" unary }
//	unary   := "not" unary | "(" expr ")" | test
//	test    := field op literal | literal op field
//	         | field ["not"] "in" "(" literal { "," literal } ")"
//	         | field "is" ["not"] "null"
//	op      := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//	literal := number | 'string' | "string" | true | false
//
// A quote inside a string is doubled ('it''s'). Numbers are decimal, with an
// optional sign, fraction and exponent. A string field compares with strings
// (byte order), a numeric field with numbers (an int field with an integer
// literal compares exactly as BIGINT, with a fractional one as DOUBLE), a bool
// field with true/false (= and != only), a time field with an RFC 3339 string
// or integer epoch milliseconds.
//
// Null handling is SQL's three-valued logic: a comparison or an in-list with
// a null field is UNKNOWN, NOT UNKNOWN is UNKNOWN, FALSE AND UNKNOWN is FALSE,
// TRUE OR UNKNOWN is TRUE, and an event passes only when the whole predicate
// is TRUE.

// WhereError is a syntax or type error in a where predicate. Pos is the
// 1-based character (rune) position in the expression where it was found.
type WhereError struct {
	Pos int
	Msg string
}

func (e *WhereError) Error() string { return fmt.Sprintf("where: at %d: %s", e.Pos, e.Msg) }

// Predicate is a compiled where expression. It is immutable and safe for
// concurrent use. A nil *Predicate matches every event.
type Predicate struct {
	expr string
	root *wnode
	sql  string
}

// maxWhereDepth bounds the nesting of parentheses and NOTs.
const maxWhereDepth = 64

// ParseWhere parses and type-checks a where expression against a stream.
// Errors are *WhereError and name the position.
func ParseWhere(expr string, s *Stream) (*Predicate, error) {
	if s == nil {
		return nil, errors.New("where: no stream")
	}
	if i := invalidUTF8(expr); i >= 0 {
		return nil, &WhereError{Pos: runePos(expr, i), Msg: "invalid UTF-8"}
	}
	p := &wparser{src: expr, s: s}
	if err := p.next(); err != nil {
		return nil, err
	}
	if p.tok.kind == tkEOF {
		return nil, p.errAt(p.tok.pos, "empty expression")
	}
	root, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tkEOF {
		return nil, p.errAt(p.tok.pos, "unexpected %s (want and, or or the end)", p.tok.describe())
	}
	var b strings.Builder
	root.appendSQL(&b, s)
	return &Predicate{expr: expr, root: root, sql: b.String()}, nil
}

// Match reports whether the event passes the predicate (the predicate is
// TRUE for it; FALSE and UNKNOWN both reject). It does not allocate.
func (p *Predicate) Match(ev *Event) bool {
	if p == nil {
		return true
	}
	return p.root.eval(ev) == triTrue
}

// SQL is the DuckDB boolean expression of the predicate over the lake's
// columns (declared fields by name; time fields as TIMESTAMP).
func (p *Predicate) SQL() string {
	if p == nil {
		return "true"
	}
	return p.sql
}

// String returns the source expression.
func (p *Predicate) String() string {
	if p == nil {
		return ""
	}
	return p.expr
}

// Predicate returns the view's compiled where clause, nil when it has none.
func (v *View) Predicate() *Predicate { return v.where }

// ---- evaluation ----

type tri uint8

const (
	triFalse tri = iota
	triTrue
	triUnknown
)

type wkind uint8

const (
	wAnd wkind = iota
	wOr
	wNot
	wCmp
	wIn
	wIsNull
)

type cmpOp uint8

const (
	opEq cmpOp = iota
	opNe
	opLt
	opLe
	opGt
	opGe
)

var cmpSQL = [...]string{opEq: "=", opNe: "<>", opLt: "<", opLe: "<=", opGt: ">", opGe: ">="}

// flip returns the operator with its operands swapped (5 < x  ==  x > 5).
func (o cmpOp) flip() cmpOp {
	switch o {
	case opLt:
		return opGt
	case opLe:
		return opGe
	case opGt:
		return opLt
	case opGe:
		return opLe
	}
	return o
}

func (o cmpOp) holds(c int) bool {
	switch o {
	case opEq:
		return c == 0
	case opNe:
		return c != 0
	case opLt:
		return c < 0
	case opLe:
		return c <= 0
	case opGt:
		return c > 0
	}
	return c >= 0
}

// cmode is how a field is compared with its literal(s).
type cmode uint8

const (
	modeInt   cmode = iota // BIGINT: int fields with integer literals, bools (0/1)
	modeFloat              // DOUBLE
	modeStr                // VARCHAR, byte order
	modeTime               // epoch ms of a TIMESTAMP column
	modeBool               // BOOLEAN (values 0/1)
)

type wnode struct {
	kind  wkind
	kids  []*wnode // and, or (n-ary), not (one)
	field int
	name  string
	op    cmpOp
	mode  cmode
	neg   bool // not in, is not null
	i     []int64
	f     []float64
	s     []string
}

func (n *wnode) eval(ev *Event) tri {
	switch n.kind {
	case wAnd:
		r := triTrue
		for _, k := range n.kids {
			switch k.eval(ev) {
			case triFalse:
				return triFalse
			case triUnknown:
				r = triUnknown
			}
		}
		return r
	case wOr:
		r := triFalse
		for _, k := range n.kids {
			switch k.eval(ev) {
			case triTrue:
				return triTrue
			case triUnknown:
				r = triUnknown
			}
		}
		return r
	case wNot:
		switch n.kids[0].eval(ev) {
		case triTrue:
			return triFalse
		case triFalse:
			return triTrue
		}
		return triUnknown
	}
	var v Value
	if n.field < len(ev.Values) {
		v = ev.Values[n.field]
	}
	if n.kind == wIsNull {
		if v.Null() != n.neg {
			return triTrue
		}
		return triFalse
	}
	if v.Null() {
		return triUnknown
	}
	if n.kind == wCmp {
		if n.op.holds(n.compare(v, 0)) {
			return triTrue
		}
		return triFalse
	}
	found := false
	for j := 0; j < n.len(); j++ {
		if n.compare(v, j) == 0 {
			found = true
			break
		}
	}
	if found != n.neg {
		return triTrue
	}
	return triFalse
}

func (n *wnode) len() int {
	switch n.mode {
	case modeFloat:
		return len(n.f)
	case modeStr:
		return len(n.s)
	}
	return len(n.i)
}

// compare compares the value with the j-th literal: -1, 0 or 1.
func (n *wnode) compare(v Value, j int) int {
	switch n.mode {
	case modeFloat:
		a, b := v.Float(), n.f[j]
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
		return 0
	case modeStr:
		return strings.Compare(v.S, n.s[j])
	}
	a, b := v.I, n.i[j]
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ---- SQL ----

func (n *wnode) appendSQL(b *strings.Builder, s *Stream) {
	switch n.kind {
	case wAnd, wOr:
		sep := " AND "
		if n.kind == wOr {
			sep = " OR "
		}
		b.WriteByte('(')
		for j, k := range n.kids {
			if j > 0 {
				b.WriteString(sep)
			}
			k.appendSQL(b, s)
		}
		b.WriteByte(')')
		return
	case wNot:
		b.WriteString("(NOT ")
		n.kids[0].appendSQL(b, s)
		b.WriteByte(')')
		return
	case wIsNull:
		b.WriteString(quoteIdent(n.name))
		if n.neg {
			b.WriteString(" IS NOT NULL")
		} else {
			b.WriteString(" IS NULL")
		}
		return
	}
	if n.mode == modeTime {
		b.WriteString("epoch_ms(" + quoteIdent(n.name) + ")")
	} else {
		b.WriteString(quoteIdent(n.name))
	}
	if n.kind == wCmp {
		b.WriteString(" " + cmpSQL[n.op] + " ")
		n.appendLit(b, 0)
		return
	}
	if n.neg {
		b.WriteString(" NOT IN (")
	} else {
		b.WriteString(" IN (")
	}
	for j := 0; j < n.len(); j++ {
		if j > 0 {
			b.WriteString(", ")
		}
		n.appendLit(b, j)
	}
	b.WriteByte(')')
}

func (n *wnode) appendLit(b *strings.Builder, j int) {
	switch n.mode {
	case modeFloat:
		// Through a string so DuckDB rounds exactly as Go parsed it.
		b.WriteString("CAST('" + strconv.FormatFloat(n.f[j], 'g', -1, 64) + "' AS DOUBLE)")
	case modeStr:
		b.WriteString("'" + strings.ReplaceAll(n.s[j], "'", "''") + "'")
	case modeBool:
		if n.i[j] != 0 {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	default:
		b.WriteString("CAST(" + strconv.FormatInt(n.i[j], 10) + " AS BIGINT)")
	}
}

// ---- lexer ----

type tkind uint8

const (
	tkEOF tkind = iota
	tkIdent
	tkNumber
	tkString
	tkOp
	tkLParen
	tkRParen
	tkComma
	tkArith // + - * / %, lexed only for conditions (wparser.arith)
	tkDot   // a dot between names, lexed only for conditions
)

type token struct {
	kind tkind
	pos  int    // byte offset
	text string // identifier, number text, string value or operator
}

func (t token) describe() string {
	switch t.kind {
	case tkEOF:
		return "end of expression"
	case tkIdent:
		return strconv.Quote(t.text)
	case tkNumber:
		return "number " + t.text
	case tkString:
		return "string " + strconv.Quote(t.text)
	case tkLParen:
		return `"("`
	case tkRParen:
		return `")"`
	case tkComma:
		return `","`
	}
	return strconv.Quote(t.text)
}

// keyword reports whether the token is the given (lowercase) keyword.
func (t token) keyword(k string) bool { return t.kind == tkIdent && strings.EqualFold(t.text, k) }

var whereKeywords = []string{"and", "or", "not", "in", "is", "null", "true", "false"}

func isKeyword(s string) bool {
	for _, k := range whereKeywords {
		if strings.EqualFold(s, k) {
			return true
		}
	}
	return false
}

type wparser struct {
	src   string
	off   int
	tok   token
	s     *Stream
	depth int
	// arith lexes +, -, *, / and % as operators (a sign is never part of
	// a number) and a dot before a name as tkDot, for conditions.
	arith bool
}

func (p *wparser) errAt(off int, format string, args ...any) *WhereError {
	return &WhereError{Pos: runePos(p.src, off), Msg: fmt.Sprintf(format, args...)}
}

func runePos(s string, off int) int {
	if off > len(s) {
		off = len(s)
	}
	return utf8.RuneCountInString(s[:off]) + 1
}

func invalidUTF8(s string) int {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			return i
		}
		i += size
	}
	return -1
}

func isIdentStart(c byte) bool { return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool      { return c >= '0' && c <= '9' }

func (p *wparser) next() error {
	src := p.src
	for p.off < len(src) && (src[p.off] == ' ' || src[p.off] == '\t' || src[p.off] == '\n' || src[p.off] == '\r') {
		p.off++
	}
	start := p.off
	if start >= len(src) {
		p.tok = token{kind: tkEOF, pos: len(src)}
		return nil
	}
	c := src[start]
	switch {
	case isIdentStart(c):
		end := start + 1
		for end < len(src) && (isIdentStart(src[end]) || isDigit(src[end])) {
			end++
		}
		if end < len(src) && src[end] >= utf8.RuneSelf {
			r, _ := utf8.DecodeRuneInString(src[end:])
			return p.errAt(end, "unexpected character %q in a name", r)
		}
		p.tok, p.off = token{kind: tkIdent, pos: start, text: src[start:end]}, end
	case p.arith && (c == '+' || c == '-' || c == '*' || c == '/' || c == '%'):
		p.tok, p.off = token{kind: tkArith, pos: start, text: src[start : start+1]}, start+1
	case p.arith && c == '.' && (start+1 >= len(src) || !isDigit(src[start+1])):
		p.tok, p.off = token{kind: tkDot, pos: start, text: "."}, start+1
	case isDigit(c) || c == '.' || ((c == '-' || c == '+') && start+1 < len(src) && (isDigit(src[start+1]) || src[start+1] == '.')):
		end := start
		if c == '-' || c == '+' {
			end++
		}
		digits := 0
		for end < len(src) && isDigit(src[end]) {
			end, digits = end+1, digits+1
		}
		if end < len(src) && src[end] == '.' {
			end++
			for end < len(src) && isDigit(src[end]) {
				end, digits = end+1, digits+1
			}
		}
		if digits == 0 {
			return p.errAt(start, "bad number")
		}
		if end < len(src) && (src[end] == 'e' || src[end] == 'E') {
			end++
			if end < len(src) && (src[end] == '+' || src[end] == '-') {
				end++
			}
			if end >= len(src) || !isDigit(src[end]) {
				return p.errAt(start, "bad number: exponent without digits")
			}
			for end < len(src) && isDigit(src[end]) {
				end++
			}
		}
		if end < len(src) && (isIdentStart(src[end]) || src[end] == '.') {
			return p.errAt(end, "bad number: unexpected %q", src[end])
		}
		p.tok, p.off = token{kind: tkNumber, pos: start, text: src[start:end]}, end
	case c == '\'' || c == '"':
		var b strings.Builder
		i := start + 1
		for {
			j := strings.IndexByte(src[i:], c)
			if j < 0 {
				return p.errAt(start, "unterminated string")
			}
			b.WriteString(src[i : i+j])
			i += j + 1
			if i < len(src) && src[i] == c { // doubled quote
				b.WriteByte(c)
				i++
				continue
			}
			break
		}
		str := b.String()
		if k := strings.IndexByte(str, 0); k >= 0 {
			return p.errAt(start, "string contains a NUL character")
		}
		p.tok, p.off = token{kind: tkString, pos: start, text: str}, i
	case c == '(':
		p.tok, p.off = token{kind: tkLParen, pos: start}, start+1
	case c == ')':
		p.tok, p.off = token{kind: tkRParen, pos: start}, start+1
	case c == ',':
		p.tok, p.off = token{kind: tkComma, pos: start}, start+1
	case c == '=':
		p.tok, p.off = token{kind: tkOp, pos: start, text: "="}, start+1
	case c == '!':
		if start+1 < len(src) && src[start+1] == '=' {
			p.tok, p.off = token{kind: tkOp, pos: start, text: "!="}, start+2
			return nil
		}
		return p.errAt(start, `unexpected "!" (want !=)`)
	case c == '<':
		if start+1 < len(src) && (src[start+1] == '=' || src[start+1] == '>') {
			p.tok, p.off = token{kind: tkOp, pos: start, text: src[start : start+2]}, start+2
			return nil
		}
		p.tok, p.off = token{kind: tkOp, pos: start, text: "<"}, start+1
	case c == '>':
		if start+1 < len(src) && src[start+1] == '=' {
			p.tok, p.off = token{kind: tkOp, pos: start, text: ">="}, start+2
			return nil
		}
		p.tok, p.off = token{kind: tkOp, pos: start, text: ">"}, start+1
	default:
		r, _ := utf8.DecodeRuneInString(src[start:])
		return p.errAt(start, "unexpected character %q", r)
	}
	return nil
}

func opOf(s string) cmpOp {
	switch s {
	case "=":
		return opEq
	case "!=", "<>":
		return opNe
	case "<":
		return opLt
	case "<=":
		return opLe
	case ">":
		return opGt
	}
	return opGe
}

// ---- parser ----

func (p *wparser) parseOr() (*wnode, error) {
	return p.parseChain(wOr, "or", p.parseAnd)
}

func (p *wparser) parseAnd() (*wnode, error) {
	return p.parseChain(wAnd, "and", p.parseUnary)
}

func (p *wparser) parseChain(kind wkind, kw string, sub func() (*wnode, error)) (*wnode, error) {
	first, err := sub()
	if err != nil {
		return nil, err
	}
	if !p.tok.keyword(kw) {
		return first, nil
	}
	n := &wnode{kind: kind, kids: []*wnode{first}}
	for p.tok.keyword(kw) {
		if err := p.next(); err != nil {
			return nil, err
		}
		k, err := sub()
		if err != nil {
			return nil, err
		}
		n.kids = append(n.kids, k)
	}
	return n, nil
}

func (p *wparser) enter() error {
	p.depth++
	if p.depth > maxWhereDepth {
		return p.errAt(p.tok.pos, "expression nested more than %d levels deep", maxWhereDepth)
	}
	return nil
}

func (p *wparser) parseUnary() (*wnode, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	switch {
	case p.tok.keyword("not"):
		if err := p.next(); err != nil {
			return nil, err
		}
		k, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		return &wnode{kind: wNot, kids: []*wnode{k}}, nil
	case p.tok.kind == tkLParen:
		if err := p.next(); err != nil {
			return nil, err
		}
		n, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tkRParen {
			return nil, p.errAt(p.tok.pos, `unexpected %s (want ")")`, p.tok.describe())
		}
		if err := p.next(); err != nil {
			return nil, err
		}
		return n, nil
	}
	return p.parseTest()
}

// lit is a parsed literal.
type lit struct {
	pos   int
	kind  tkind // tkNumber, tkString, tkIdent (true/false)
	text  string
	isInt bool
	i     int64
	f     float64
	b     bool
}

func (l lit) describe() string {
	switch l.kind {
	case tkNumber:
		return "number " + l.text
	case tkString:
		return "string " + strconv.Quote(l.text)
	}
	return strconv.FormatBool(l.b)
}

// isLiteralStart reports whether the current token begins a literal.
func (p *wparser) isLiteralStart() bool {
	return p.tok.kind == tkNumber || p.tok.kind == tkString || p.tok.keyword("true") || p.tok.keyword("false") || p.tok.keyword("null")
}

func (p *wparser) parseLit() (lit, error) {
	t := p.tok
	l := lit{pos: t.pos, kind: t.kind, text: t.text}
	switch {
	case t.kind == tkNumber:
		if i, err := strconv.ParseInt(t.text, 10, 64); err == nil {
			l.isInt, l.i, l.f = true, i, float64(i)
		} else {
			f, err := strconv.ParseFloat(t.text, 64)
			if err != nil || !finite(f) {
				return lit{}, p.errAt(t.pos, "number %s is out of range", t.text)
			}
			l.f = f
		}
	case t.kind == tkString:
	case t.keyword("true"), t.keyword("false"):
		l.b = t.keyword("true")
	case t.keyword("null"):
		return lit{}, p.errAt(t.pos, "null is not a value here (use is null or is not null)")
	case t.kind == tkEOF:
		return lit{}, p.errAt(t.pos, "unexpected end of expression (want a value)")
	default:
		return lit{}, p.errAt(t.pos, "unexpected %s (want a number, a quoted string, true or false)", t.describe())
	}
	return l, p.next()
}

// field reads a field reference at the current token.
func (p *wparser) field() (int, string, error) {
	t := p.tok
	switch {
	case t.kind == tkEOF:
		return 0, "", p.errAt(t.pos, "unexpected end of expression (want a field)")
	case t.kind != tkIdent:
		return 0, "", p.errAt(t.pos, "unexpected %s (want a field)", t.describe())
	case isKeyword(t.text):
		return 0, "", p.errAt(t.pos, "unexpected %s (want a field)", strings.ToLower(t.text))
	}
	i := p.s.FieldIndex(t.text)
	if i < 0 {
		return 0, "", p.errAt(t.pos, "unknown field %q", t.text)
	}
	return i, t.text, p.next()
}

func (p *wparser) parseTest() (*wnode, error) {
	if p.isLiteralStart() {
		// literal op field
		l, err := p.parseLit()
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tkOp {
			return nil, p.errAt(p.tok.pos, "unexpected %s (want a comparison operator)", p.tok.describe())
		}
		op := opOf(p.tok.text).flip()
		opPos := p.tok.pos
		if err := p.next(); err != nil {
			return nil, err
		}
		fi, name, err := p.field()
		if err != nil {
			return nil, err
		}
		n := &wnode{kind: wCmp, field: fi, name: name, op: op}
		return n, p.typeCheck(n, opPos, []lit{l})
	}
	fi, name, err := p.field()
	if err != nil {
		return nil, err
	}
	n := &wnode{field: fi, name: name}
	switch t := p.tok; {
	case t.kind == tkOp:
		n.kind, n.op = wCmp, opOf(t.text)
		if err := p.next(); err != nil {
			return nil, err
		}
		if p.tok.kind == tkIdent && !isKeyword(p.tok.text) {
			return nil, p.errAt(p.tok.pos, "comparing two fields is not supported (want a value)")
		}
		l, err := p.parseLit()
		if err != nil {
			return nil, err
		}
		return n, p.typeCheck(n, t.pos, []lit{l})
	case t.keyword("is"):
		n.kind = wIsNull
		if err := p.next(); err != nil {
			return nil, err
		}
		if p.tok.keyword("not") {
			n.neg = true
			if err := p.next(); err != nil {
				return nil, err
			}
		}
		if !p.tok.keyword("null") {
			return nil, p.errAt(p.tok.pos, "unexpected %s (want null)", p.tok.describe())
		}
		return n, p.next()
	case t.keyword("not"), t.keyword("in"):
		n.kind = wIn
		if t.keyword("not") {
			n.neg = true
			if err := p.next(); err != nil {
				return nil, err
			}
			if !p.tok.keyword("in") {
				return nil, p.errAt(p.tok.pos, "unexpected %s (want in)", p.tok.describe())
			}
		}
		if err := p.next(); err != nil {
			return nil, err
		}
		if p.tok.kind != tkLParen {
			return nil, p.errAt(p.tok.pos, `unexpected %s (want "(")`, p.tok.describe())
		}
		if err := p.next(); err != nil {
			return nil, err
		}
		if p.tok.kind == tkRParen {
			return nil, p.errAt(p.tok.pos, "empty list")
		}
		var lits []lit
		for {
			l, err := p.parseLit()
			if err != nil {
				return nil, err
			}
			lits = append(lits, l)
			if p.tok.kind == tkComma {
				if err := p.next(); err != nil {
					return nil, err
				}
				continue
			}
			if p.tok.kind != tkRParen {
				return nil, p.errAt(p.tok.pos, `unexpected %s (want "," or ")")`, p.tok.describe())
			}
			if err := p.next(); err != nil {
				return nil, err
			}
			break
		}
		return n, p.typeCheck(n, t.pos, lits)
	case t.kind == tkEOF:
		return nil, p.errAt(t.pos, "unexpected end of expression (want a comparison, in or is)")
	default:
		return nil, p.errAt(t.pos, "unexpected %s (want a comparison operator, in or is)", t.describe())
	}
}

// typeCheck checks the literals of a comparison or in-list against the
// field's type and stores them in the node in the compare mode.
func (p *wparser) typeCheck(n *wnode, opPos int, lits []lit) error {
	f := p.s.Fields[n.field]
	bad := func(l lit, want string) error {
		return p.errAt(l.pos, "field %q is %s: want %s, got %s", f.Name, f.Type, want, l.describe())
	}
	switch f.Type {
	case TypeString:
		n.mode = modeStr
		for _, l := range lits {
			if l.kind != tkString {
				return bad(l, "a quoted string")
			}
			n.s = append(n.s, l.text)
		}
	case TypeFloat:
		n.mode = modeFloat
		for _, l := range lits {
			if l.kind != tkNumber {
				return bad(l, "a number")
			}
			n.f = append(n.f, l.f)
		}
	case TypeBool:
		n.mode = modeBool
		if n.kind == wCmp && n.op != opEq && n.op != opNe {
			return p.errAt(opPos, "field %q is bool: only = and != apply", f.Name)
		}
		for _, l := range lits {
			if l.kind != tkIdent {
				return bad(l, "true or false")
			}
			var i int64
			if l.b {
				i = 1
			}
			n.i = append(n.i, i)
		}
	case TypeInt, TypeTime:
		timeLike := f.Type == TypeTime || n.field == p.s.TimeField
		n.mode = modeInt
		if f.Type == TypeTime {
			n.mode = modeTime
		}
		var is []int64
		var fs []float64
		for _, l := range lits {
			switch {
			case l.kind == tkString && timeLike:
				ms, err := parseTimeLiteral(l.text)
				if err != nil {
					return p.errAt(l.pos, "field %q is a time: %v", f.Name, err)
				}
				is, fs = append(is, ms), append(fs, float64(ms))
			case l.kind == tkNumber && f.Type == TypeTime && !l.isInt:
				return p.errAt(l.pos, "field %q is a time: want an RFC 3339 string or integer epoch milliseconds, got %s", f.Name, l.describe())
			case l.kind == tkNumber:
				is, fs = append(is, l.i), append(fs, l.f)
				if !l.isInt {
					// A fractional literal: the whole test compares as DOUBLE.
					n.mode = modeFloat
				}
			case timeLike:
				return bad(l, "an RFC 3339 string or epoch milliseconds")
			default:
				return bad(l, "a number")
			}
		}
		if n.mode == modeFloat {
			n.f = fs
		} else {
			n.i = is
		}
	default:
		return p.errAt(opPos, "field %q has type %s, which where cannot compare", f.Name, f.Type)
	}
	return nil
}

// parseTimeLiteral reads an RFC 3339 time with at most millisecond precision.
func parseTimeLiteral(s string) (int64, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("bad time %q (want RFC 3339, e.g. 2024-05-01T12:00:00Z)", s)
	}
	if t.Nanosecond()%int(time.Millisecond) != 0 {
		return 0, fmt.Errorf("time %q is more precise than a millisecond", s)
	}
	return t.UnixMilli(), nil
}
