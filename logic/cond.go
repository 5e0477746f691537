package logic

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// A condition (`when` of alerts and rules): a boolean expression over named
// values — a view row's dimensions and measures for an alert, an event's
// fields and its entity's features (features.x) for a rule — evaluated in
// Go. It reads like a view's where predicate and adds arithmetic and
// comparisons between expressions:
//
//	expr    := and { "or" and }
//	and     := not { "and" not }
//	not     := "not" not | test
//	test    := sum [ op sum
//	                | ["not"] "in" "(" literal { "," literal } ")"
//	                | "is" ["not"] "null" ]
//	sum     := product { ("+" | "-") product }
//	product := unary { ("*" | "/" | "%") unary }
//	unary   := "-" unary | "(" expr ")" | literal | name
//	name    := ident { "." ident }
//	op      := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
//	literal := number | 'string' | "string" | true | false
//
// Types are checked when the condition is parsed: arithmetic takes numbers
// (int and float mix; a time is its epoch milliseconds), a comparison takes
// two numbers, two strings, two bools (= and != only) or a time and a time,
// a number or an RFC 3339 string literal; and, or and not take booleans.
// A bool name alone is a test (`flagged and amount > 3`).
//
// Nulls follow SQL: arithmetic with a null is null, so is a division by
// zero; a comparison with a null is UNKNOWN; NOT UNKNOWN is UNKNOWN; FALSE
// AND UNKNOWN is FALSE; TRUE OR UNKNOWN is TRUE; the condition holds only
// when the whole expression is TRUE. Two int operands of +, - and * give an
// exact int (null on overflow); / always gives a float.

// CondSchema names the values a condition may read, with their types.
type CondSchema map[string]FieldType

// Cond is a compiled condition. It is immutable and safe for concurrent use.
type Cond struct {
	expr  string
	root  *cnode
	names []string
}

// CondError is a syntax or type error in a condition; Pos is the 1-based
// character (rune) position where it was found.
type CondError struct {
	Pos int
	Msg string
}

func (e *CondError) Error() string { return fmt.Sprintf("when: at %d: %s", e.Pos, e.Msg) }

// ParseCond parses and type-checks a condition against a schema. Errors
// are *CondError.
func ParseCond(expr string, schema CondSchema) (*Cond, error) {
	if i := invalidUTF8(expr); i >= 0 {
		return nil, &CondError{Pos: runePos(expr, i), Msg: "invalid UTF-8"}
	}
	p := &cparser{lx: wparser{src: expr, arith: true}, schema: schema, seen: map[string]bool{}}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok().kind == tkEOF {
		return nil, p.errAt(0, "empty expression")
	}
	root, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if t := p.tok(); t.kind != tkEOF {
		return nil, p.errAt(t.pos, "unexpected %s (want and, or, an operator or the end)", t.describe())
	}
	if root.typ != cBool {
		return nil, p.errAt(0, "the condition is a %s, not a test (compare it, e.g. x > 0)", root.typ)
	}
	names := make([]string, 0, len(p.seen))
	for n := range p.seen {
		names = append(names, n)
	}
	slices.Sort(names)
	return &Cond{expr: expr, root: root, names: names}, nil
}

// String returns the condition as written.
func (c *Cond) String() string { return c.expr }

// Names lists the names the condition reads, sorted.
func (c *Cond) Names() []string { return c.names }

// Eval reports whether the condition is TRUE for the values get returns;
// get is called only with names of the schema (a zero Value is null).
func (c *Cond) Eval(get func(name string) Value) bool {
	v := c.root.eval(get)
	return !v.null && v.b
}

// ctype is the static type of a condition's expression.
type ctype uint8

const (
	cNum ctype = iota + 1
	cStr
	cBool
	cTime
)

func (t ctype) String() string {
	switch t {
	case cNum:
		return "number"
	case cStr:
		return "string"
	case cBool:
		return "boolean"
	case cTime:
		return "time"
	}
	return "?"
}

func ctypeOf(t FieldType) (ctype, bool) {
	switch t {
	case TypeInt, TypeFloat:
		return cNum, true
	case TypeString:
		return cStr, true
	case TypeBool:
		return cBool, true
	case TypeTime:
		return cTime, true
	}
	return 0, false
}

// cval is an evaluated expression: a number (an int when isInt), a string
// or a boolean, or null (UNKNOWN for booleans).
type cval struct {
	null  bool
	isInt bool
	i     int64
	f     float64
	s     string
	b     bool
}

func (v cval) num() float64 {
	if v.isInt {
		return float64(v.i)
	}
	return v.f
}

func fromValue(x Value) cval {
	switch x.Kind {
	case TypeInt, TypeTime:
		return cval{isInt: true, i: x.I}
	case TypeFloat:
		return cval{f: x.F}
	case TypeString:
		return cval{s: x.S}
	case TypeBool:
		return cval{b: x.I != 0}
	}
	return cval{null: true}
}

type cop uint8

const (
	cLit cop = iota
	cName
	cNeg
	cAdd
	cSub
	cMul
	cDiv
	cMod
	cCmp
	cIn
	cIsNull
	cNot
	cAnd
	cOr
)

type cnode struct {
	op    cop
	typ   ctype
	cmp   cmpOp
	neg   bool // not in, is not null
	lit   cval
	name  string
	kids  []*cnode
	list  []cval
	ftype FieldType // cName: the name's type
}

func (n *cnode) eval(get func(string) Value) cval {
	switch n.op {
	case cLit:
		return n.lit
	case cName:
		return fromValue(get(n.name))
	case cNeg:
		x := n.kids[0].eval(get)
		switch {
		case x.null:
			return x
		case x.isInt:
			if x.i == math.MinInt64 {
				return cval{null: true}
			}
			return cval{isInt: true, i: -x.i}
		}
		return cval{f: -x.f}
	case cAdd, cSub, cMul, cDiv, cMod:
		return arith(n.op, n.kids[0].eval(get), n.kids[1].eval(get))
	case cCmp:
		a, b := n.kids[0].eval(get), n.kids[1].eval(get)
		if a.null || b.null {
			return cval{null: true}
		}
		return cval{b: n.cmp.holds(compareC(n.kids[0].typ, a, b))}
	case cIn:
		a := n.kids[0].eval(get)
		if a.null {
			return cval{null: true}
		}
		found := false
		for _, l := range n.list {
			if compareC(n.kids[0].typ, a, l) == 0 {
				found = true
				break
			}
		}
		return cval{b: found != n.neg}
	case cIsNull:
		return cval{b: n.kids[0].eval(get).null != n.neg}
	case cNot:
		x := n.kids[0].eval(get)
		if x.null {
			return x
		}
		return cval{b: !x.b}
	case cAnd:
		unknown := false
		for _, k := range n.kids {
			x := k.eval(get)
			if x.null {
				unknown = true
			} else if !x.b {
				return cval{b: false}
			}
		}
		return cval{null: unknown, b: !unknown}
	case cOr:
		unknown := false
		for _, k := range n.kids {
			x := k.eval(get)
			if x.null {
				unknown = true
			} else if x.b {
				return cval{b: true}
			}
		}
		return cval{null: unknown}
	}
	return cval{null: true}
}

func arith(op cop, a, b cval) cval {
	if a.null || b.null {
		return cval{null: true}
	}
	if a.isInt && b.isInt && op != cDiv {
		switch op {
		case cAdd:
			r := a.i + b.i
			if (r > a.i) != (b.i > 0) {
				return cval{null: true}
			}
			return cval{isInt: true, i: r}
		case cSub:
			r := a.i - b.i
			if (r < a.i) != (b.i > 0) {
				return cval{null: true}
			}
			return cval{isInt: true, i: r}
		case cMul:
			if a.i == 0 || b.i == 0 {
				return cval{isInt: true}
			}
			r := a.i * b.i
			if r/b.i != a.i || (a.i == -1 && b.i == math.MinInt64) || (b.i == -1 && a.i == math.MinInt64) {
				return cval{null: true}
			}
			return cval{isInt: true, i: r}
		case cMod:
			if b.i == 0 {
				return cval{null: true}
			}
			if b.i == -1 {
				return cval{isInt: true}
			}
			return cval{isInt: true, i: a.i % b.i}
		}
	}
	x, y := a.num(), b.num()
	var r float64
	switch op {
	case cAdd:
		r = x + y
	case cSub:
		r = x - y
	case cMul:
		r = x * y
	case cDiv:
		if y == 0 {
			return cval{null: true}
		}
		r = x / y
	case cMod:
		if y == 0 {
			return cval{null: true}
		}
		r = math.Mod(x, y)
	}
	if !finite(r) {
		return cval{null: true}
	}
	return cval{f: r}
}

// compareC orders two non-null values of one static type.
func compareC(t ctype, a, b cval) int {
	switch t {
	case cStr:
		return strings.Compare(a.s, b.s)
	case cBool:
		switch {
		case a.b == b.b:
			return 0
		case b.b:
			return -1
		}
		return 1
	}
	if a.isInt && b.isInt {
		switch {
		case a.i < b.i:
			return -1
		case a.i > b.i:
			return 1
		}
		return 0
	}
	x, y := a.num(), b.num()
	switch {
	case x < y:
		return -1
	case x > y:
		return 1
	}
	return 0
}

// cparser is a recursive-descent parser over the where lexer.
type cparser struct {
	lx     wparser
	schema CondSchema
	seen   map[string]bool
	depth  int
}

func (p *cparser) tok() token { return p.lx.tok }

func (p *cparser) advance() error {
	if err := p.lx.next(); err != nil {
		var we *WhereError
		if errors.As(err, &we) {
			return &CondError{Pos: we.Pos, Msg: we.Msg}
		}
		return err
	}
	return nil
}

func (p *cparser) errAt(off int, format string, args ...any) *CondError {
	return &CondError{Pos: runePos(p.lx.src, off), Msg: fmt.Sprintf(format, args...)}
}

func (p *cparser) enter(pos int) error {
	p.depth++
	if p.depth > maxWhereDepth {
		return p.errAt(pos, "nested more than %d deep", maxWhereDepth)
	}
	return nil
}

func (p *cparser) parseOr() (*cnode, error) { return p.chain(cOr, "or", p.parseAnd) }

func (p *cparser) parseAnd() (*cnode, error) { return p.chain(cAnd, "and", p.parseNot) }

func (p *cparser) chain(op cop, kw string, sub func() (*cnode, error)) (*cnode, error) {
	pos := p.tok().pos
	first, err := sub()
	if err != nil {
		return nil, err
	}
	if !p.tok().keyword(kw) {
		return first, nil
	}
	if first.typ != cBool {
		return nil, p.errAt(pos, "%s takes tests, not a %s", kw, first.typ)
	}
	n := &cnode{op: op, typ: cBool, kids: []*cnode{first}}
	for p.tok().keyword(kw) {
		if err := p.advance(); err != nil {
			return nil, err
		}
		pos := p.tok().pos
		k, err := sub()
		if err != nil {
			return nil, err
		}
		if k.typ != cBool {
			return nil, p.errAt(pos, "%s takes tests, not a %s", kw, k.typ)
		}
		n.kids = append(n.kids, k)
	}
	return n, nil
}

func (p *cparser) parseNot() (*cnode, error) {
	if !p.tok().keyword("not") {
		return p.parseTest()
	}
	pos := p.tok().pos
	if err := p.enter(pos); err != nil {
		return nil, err
	}
	defer func() { p.depth-- }()
	if err := p.advance(); err != nil {
		return nil, err
	}
	k, err := p.parseNot()
	if err != nil {
		return nil, err
	}
	if k.typ != cBool {
		return nil, p.errAt(pos, "not takes a test, not a %s", k.typ)
	}
	return &cnode{op: cNot, typ: cBool, kids: []*cnode{k}}, nil
}

func (p *cparser) parseTest() (*cnode, error) {
	lpos := p.tok().pos
	left, err := p.parseSum()
	if err != nil {
		return nil, err
	}
	t := p.tok()
	switch {
	case t.kind == tkOp:
		op := opOf(t.text)
		if err := p.advance(); err != nil {
			return nil, err
		}
		rpos := p.tok().pos
		right, err := p.parseSum()
		if err != nil {
			return nil, err
		}
		if err := p.unify(left, right, lpos, rpos, t); err != nil {
			return nil, err
		}
		if left.typ == cBool && op != opEq && op != opNe {
			return nil, p.errAt(t.pos, "booleans compare with = and != only")
		}
		return &cnode{op: cCmp, typ: cBool, cmp: op, kids: []*cnode{left, right}}, nil
	case t.keyword("is"):
		if err := p.advance(); err != nil {
			return nil, err
		}
		neg := false
		if p.tok().keyword("not") {
			neg = true
			if err := p.advance(); err != nil {
				return nil, err
			}
		}
		if !p.tok().keyword("null") {
			return nil, p.errAt(p.tok().pos, "want null after is, got %s", p.tok().describe())
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		return &cnode{op: cIsNull, typ: cBool, neg: neg, kids: []*cnode{left}}, nil
	case t.keyword("in") || t.keyword("not"):
		neg := t.keyword("not")
		if neg {
			if err := p.advance(); err != nil {
				return nil, err
			}
			if !p.tok().keyword("in") {
				return nil, p.errAt(p.tok().pos, "want in after not, got %s", p.tok().describe())
			}
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok().kind != tkLParen {
			return nil, p.errAt(p.tok().pos, "want ( after in, got %s", p.tok().describe())
		}
		n := &cnode{op: cIn, typ: cBool, neg: neg, kids: []*cnode{left}}
		for {
			if err := p.advance(); err != nil {
				return nil, err
			}
			lt := p.tok()
			lit, err := p.literal()
			if err != nil {
				return nil, err
			}
			if err := p.unify(left, lit, lpos, lt.pos, t); err != nil {
				return nil, err
			}
			n.list = append(n.list, lit.lit)
			if p.tok().kind == tkComma {
				continue
			}
			if p.tok().kind != tkRParen {
				return nil, p.errAt(p.tok().pos, "want , or ) in the list, got %s", p.tok().describe())
			}
			if err := p.advance(); err != nil {
				return nil, err
			}
			return n, nil
		}
	}
	return left, nil
}

// unify checks that two operands of a comparison (or an in-list) can be
// compared, turning a string literal compared with a time into the time.
func (p *cparser) unify(a, b *cnode, apos, bpos int, at token) error {
	for _, side := range [][2]*cnode{{a, b}, {b, a}} {
		x, y := side[0], side[1]
		if x.typ == cTime && y.op == cLit && y.typ == cStr {
			ms, err := parseTimeLiteral(y.lit.s)
			if err != nil {
				pos := bpos
				if y == a {
					pos = apos
				}
				return p.errAt(pos, "%q is not an RFC 3339 time", y.lit.s)
			}
			y.lit, y.typ = cval{isInt: true, i: ms}, cTime
		}
	}
	ta, tb := a.typ, b.typ
	if ta == cTime {
		ta = cNum
	}
	if tb == cTime {
		tb = cNum
	}
	if ta != tb {
		return p.errAt(at.pos, "cannot compare a %s with a %s", a.typ, b.typ)
	}
	return nil
}

func (p *cparser) parseSum() (*cnode, error) {
	return p.arithChain(p.parseProduct, map[string]cop{"+": cAdd, "-": cSub})
}

func (p *cparser) parseProduct() (*cnode, error) {
	return p.arithChain(p.parseUnary, map[string]cop{"*": cMul, "/": cDiv, "%": cMod})
}

func (p *cparser) arithChain(sub func() (*cnode, error), ops map[string]cop) (*cnode, error) {
	pos := p.tok().pos
	left, err := sub()
	if err != nil {
		return nil, err
	}
	for p.tok().kind == tkArith {
		op, ok := ops[p.tok().text]
		if !ok {
			break
		}
		opTok := p.tok()
		if err := p.advance(); err != nil {
			return nil, err
		}
		rpos := p.tok().pos
		right, err := sub()
		if err != nil {
			return nil, err
		}
		if !numeric(left.typ) {
			return nil, p.errAt(pos, "%s takes numbers, not a %s", opTok.text, left.typ)
		}
		if !numeric(right.typ) {
			return nil, p.errAt(rpos, "%s takes numbers, not a %s", opTok.text, right.typ)
		}
		left = &cnode{op: op, typ: cNum, kids: []*cnode{left, right}}
	}
	return left, nil
}

func numeric(t ctype) bool { return t == cNum || t == cTime }

func (p *cparser) parseUnary() (*cnode, error) {
	t := p.tok()
	switch {
	case t.kind == tkArith && t.text == "-":
		if err := p.enter(t.pos); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		if err := p.advance(); err != nil {
			return nil, err
		}
		pos := p.tok().pos
		k, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		if !numeric(k.typ) {
			return nil, p.errAt(pos, "- takes a number, not a %s", k.typ)
		}
		if k.op == cLit {
			v := arith(cSub, cval{isInt: true}, k.lit)
			return &cnode{op: cLit, typ: cNum, lit: v}, nil
		}
		return &cnode{op: cNeg, typ: cNum, kids: []*cnode{k}}, nil
	case t.kind == tkLParen:
		if err := p.enter(t.pos); err != nil {
			return nil, err
		}
		defer func() { p.depth-- }()
		if err := p.advance(); err != nil {
			return nil, err
		}
		n, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if p.tok().kind != tkRParen {
			return nil, p.errAt(p.tok().pos, "want ), got %s", p.tok().describe())
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		return n, nil
	case t.kind == tkIdent && !isKeyword(t.text) && !t.keyword("true") && !t.keyword("false"):
		return p.name()
	}
	return p.literal()
}

func (p *cparser) name() (*cnode, error) {
	t := p.tok()
	name := t.text
	for {
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok().kind != tkDot {
			break
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		if p.tok().kind != tkIdent {
			return nil, p.errAt(p.tok().pos, "want a name after ., got %s", p.tok().describe())
		}
		name += "." + p.tok().text
	}
	ft, ok := p.schema[name]
	if !ok {
		return nil, p.errAt(t.pos, "unknown name %q (want one of %s)", name, strings.Join(p.knownNames(), ", "))
	}
	ct, ok := ctypeOf(ft)
	if !ok {
		return nil, p.errAt(t.pos, "%q has type %s, which conditions cannot read", name, ft)
	}
	p.seen[name] = true
	return &cnode{op: cName, typ: ct, name: name, ftype: ft}, nil
}

func (p *cparser) knownNames() []string {
	out := make([]string, 0, len(p.schema))
	for n := range p.schema {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func (p *cparser) literal() (*cnode, error) {
	t := p.tok()
	var n *cnode
	switch {
	case t.kind == tkNumber:
		if i, err := strconv.ParseInt(t.text, 10, 64); err == nil {
			n = &cnode{op: cLit, typ: cNum, lit: cval{isInt: true, i: i}}
		} else {
			f, err := strconv.ParseFloat(t.text, 64)
			if err != nil || !finite(f) {
				return nil, p.errAt(t.pos, "bad number %s", t.text)
			}
			n = &cnode{op: cLit, typ: cNum, lit: cval{f: f}}
		}
	case t.kind == tkString:
		n = &cnode{op: cLit, typ: cStr, lit: cval{s: t.text}}
	case t.keyword("true"), t.keyword("false"):
		n = &cnode{op: cLit, typ: cBool, lit: cval{b: t.keyword("true")}}
	default:
		return nil, p.errAt(t.pos, "want a value, a name or (, got %s", t.describe())
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	return n, nil
}
