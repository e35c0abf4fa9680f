package amqp

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/throngmq/throng/internal/message"
)

// Selectors (the apache.org:selector-filter:string source filter) are the
// SQL-92 subset JMS defines, over application properties:
//
//	comparison  = <> < > <= >=      arithmetic  + - * / and unary -
//	logic       AND OR NOT (three-valued: a missing property is unknown)
//	IN ('a', 'b')  LIKE 'pat%' [ESCAPE '\']  IS [NOT] NULL  BETWEEN x AND y
//	literals    'string' ('' quotes), integers, decimals, TRUE, FALSE
//
// Identifiers name application properties, except JMSMessageID,
// JMSCorrelationID, JMSType (the subject) and JMSPriority. A message is
// delivered when the selector evaluates to TRUE.

// maxSelector bounds a selector's length.
const maxSelector = 4096

type selFn func(m *message.Message) any // nil = unknown; bool, string, int64 or float64

func compileSelector(src string) (func(*message.Message) bool, error) {
	if len(src) > maxSelector {
		return nil, errors.New("selector too long")
	}
	p := &selParser{src: src}
	if err := p.lex(); err != nil {
		return nil, err
	}
	f, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.pos != len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.toks[p.pos].text)
	}
	return func(m *message.Message) bool { return f(m) == true }, nil
}

type tokKind uint8

const (
	tIdent tokKind = iota
	tString
	tNumber
	tOp
)

type token struct {
	kind tokKind
	text string
	num  any // int64 or float64
}

type selParser struct {
	src   string
	toks  []token
	pos   int
	depth int
}

func (p *selParser) lex() error {
	s := p.src
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '\'':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(s) {
					return errors.New("unterminated string")
				}
				if s[j] == '\'' {
					if j+1 < len(s) && s[j+1] == '\'' {
						b.WriteByte('\'')
						j += 2
						continue
					}
					break
				}
				b.WriteByte(s[j])
				j++
			}
			p.toks = append(p.toks, token{kind: tString, text: b.String()})
			i = j + 1
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			j := i
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.' || s[j] == 'e' || s[j] == 'E' ||
				(s[j] == '+' || s[j] == '-') && (s[j-1] == 'e' || s[j-1] == 'E')) {
				j++
			}
			text := s[i:j]
			t := token{kind: tNumber, text: text}
			if n, err := strconv.ParseInt(text, 10, 64); err == nil {
				t.num = n
			} else if f, err := strconv.ParseFloat(text, 64); err == nil {
				t.num = f
			} else {
				return fmt.Errorf("bad number %q", text)
			}
			p.toks = append(p.toks, t)
			i = j
		case c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			j := i
			for j < len(s) && (s[j] == '_' || s[j] == '$' || s[j] == '.' || s[j] == '-' && false ||
				s[j] >= 'a' && s[j] <= 'z' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			p.toks = append(p.toks, token{kind: tIdent, text: s[i:j]})
			i = j
		default:
			for _, op := range []string{"<>", "<=", ">=", "=", "<", ">", "(", ")", ",", "+", "-", "*", "/"} {
				if strings.HasPrefix(s[i:], op) {
					p.toks = append(p.toks, token{kind: tOp, text: op})
					i += len(op)
					goto next
				}
			}
			return fmt.Errorf("unexpected character %q", c)
		next:
		}
	}
	return nil
}

func (p *selParser) peek() *token {
	if p.pos < len(p.toks) {
		return &p.toks[p.pos]
	}
	return nil
}

// kw consumes keyword k if it is next.
func (p *selParser) kw(k string) bool {
	if t := p.peek(); t != nil && t.kind == tIdent && strings.EqualFold(t.text, k) {
		p.pos++
		return true
	}
	return false
}

func (p *selParser) op(o string) bool {
	if t := p.peek(); t != nil && t.kind == tOp && t.text == o {
		p.pos++
		return true
	}
	return false
}

func isKeyword(s string) bool {
	switch strings.ToUpper(s) {
	case "AND", "OR", "NOT", "IN", "LIKE", "IS", "NULL", "BETWEEN", "ESCAPE", "TRUE", "FALSE":
		return true
	}
	return false
}

func (p *selParser) or() (selFn, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > 100 {
		return nil, errors.New("selector nested too deeply")
	}
	l, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.kw("OR") {
		r, err := p.and()
		if err != nil {
			return nil, err
		}
		a, b := l, r
		l = func(m *message.Message) any {
			x, y := a(m), b(m)
			if x == true || y == true {
				return true
			}
			if x == false && y == false {
				return false
			}
			return nil
		}
	}
	return l, nil
}

func (p *selParser) and() (selFn, error) {
	l, err := p.not()
	if err != nil {
		return nil, err
	}
	for p.kw("AND") {
		r, err := p.not()
		if err != nil {
			return nil, err
		}
		a, b := l, r
		l = func(m *message.Message) any {
			x, y := a(m), b(m)
			if x == false || y == false {
				return false
			}
			if x == true && y == true {
				return true
			}
			return nil
		}
	}
	return l, nil
}

func (p *selParser) not() (selFn, error) {
	if p.kw("NOT") {
		f, err := p.not()
		if err != nil {
			return nil, err
		}
		return func(m *message.Message) any {
			if b, ok := f(m).(bool); ok {
				return !b
			}
			return nil
		}, nil
	}
	return p.cmp()
}

func negate(f selFn, neg bool) selFn {
	if !neg {
		return f
	}
	return func(m *message.Message) any {
		if b, ok := f(m).(bool); ok {
			return !b
		}
		return nil
	}
}

func (p *selParser) cmp() (selFn, error) {
	l, err := p.add()
	if err != nil {
		return nil, err
	}
	if t := p.peek(); t != nil && t.kind == tOp {
		switch o := t.text; o {
		case "=", "<>", "<", ">", "<=", ">=":
			p.pos++
			r, err := p.add()
			if err != nil {
				return nil, err
			}
			return func(m *message.Message) any { return compare(o, l(m), r(m)) }, nil
		}
	}
	if p.kw("IS") {
		neg := p.kw("NOT")
		if !p.kw("NULL") {
			return nil, errors.New("IS must be followed by [NOT] NULL")
		}
		return func(m *message.Message) any { return (l(m) == nil) != neg }, nil
	}
	neg := p.kw("NOT")
	switch {
	case p.kw("IN"):
		if !p.op("(") {
			return nil, errors.New("IN needs a parenthesized list")
		}
		var set []string
		for {
			t := p.peek()
			if t == nil || t.kind != tString {
				return nil, errors.New("IN lists string literals")
			}
			set = append(set, t.text)
			p.pos++
			if p.op(")") {
				break
			}
			if !p.op(",") {
				return nil, errors.New("expected , or ) in IN list")
			}
		}
		return negate(func(m *message.Message) any {
			s, ok := l(m).(string)
			if !ok {
				return nil
			}
			for _, x := range set {
				if s == x {
					return true
				}
			}
			return false
		}, neg), nil
	case p.kw("LIKE"):
		t := p.peek()
		if t == nil || t.kind != tString {
			return nil, errors.New("LIKE needs a string pattern")
		}
		p.pos++
		pat, esc := t.text, ""
		if p.kw("ESCAPE") {
			e := p.peek()
			if e == nil || e.kind != tString || len(e.text) != 1 {
				return nil, errors.New("ESCAPE needs a one-character string")
			}
			p.pos++
			esc = e.text
		}
		re, err := likeRegexp(pat, esc)
		if err != nil {
			return nil, err
		}
		return negate(func(m *message.Message) any {
			s, ok := l(m).(string)
			if !ok {
				return nil
			}
			return re.MatchString(s)
		}, neg), nil
	case p.kw("BETWEEN"):
		lo, err := p.add()
		if err != nil {
			return nil, err
		}
		if !p.kw("AND") {
			return nil, errors.New("BETWEEN needs AND")
		}
		hi, err := p.add()
		if err != nil {
			return nil, err
		}
		return negate(func(m *message.Message) any {
			v := l(m)
			a, b := compare(">=", v, lo(m)), compare("<=", v, hi(m))
			if a == false || b == false {
				return false
			}
			if a == true && b == true {
				return true
			}
			return nil
		}, neg), nil
	}
	if neg {
		return nil, errors.New("NOT must be followed by IN, LIKE or BETWEEN here")
	}
	return l, nil
}

func likeRegexp(pat, esc string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString("(?s)^")
	for i := 0; i < len(pat); i++ {
		c := pat[i]
		switch {
		case esc != "" && c == esc[0] && i+1 < len(pat):
			i++
			b.WriteString(regexp.QuoteMeta(string(pat[i])))
		case c == '%':
			b.WriteString(".*")
		case c == '_':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.Compile(b.String())
}

func (p *selParser) add() (selFn, error) {
	l, err := p.mul()
	if err != nil {
		return nil, err
	}
	for {
		var o string
		switch {
		case p.op("+"):
			o = "+"
		case p.op("-"):
			o = "-"
		default:
			return l, nil
		}
		r, err := p.mul()
		if err != nil {
			return nil, err
		}
		a, b := l, r
		l = func(m *message.Message) any { return arith(o, a(m), b(m)) }
	}
}

func (p *selParser) mul() (selFn, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		var o string
		switch {
		case p.op("*"):
			o = "*"
		case p.op("/"):
			o = "/"
		default:
			return l, nil
		}
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		a, b := l, r
		l = func(m *message.Message) any { return arith(o, a(m), b(m)) }
	}
}

func (p *selParser) unary() (selFn, error) {
	if p.op("-") {
		f, err := p.unary()
		if err != nil {
			return nil, err
		}
		return func(m *message.Message) any { return arith("-", int64(0), f(m)) }, nil
	}
	if p.op("+") {
		return p.unary()
	}
	return p.primary()
}

func (p *selParser) primary() (selFn, error) {
	t := p.peek()
	if t == nil {
		return nil, errors.New("unexpected end of selector")
	}
	switch t.kind {
	case tString:
		p.pos++
		v := t.text
		return func(*message.Message) any { return v }, nil
	case tNumber:
		p.pos++
		v := t.num
		return func(*message.Message) any { return v }, nil
	case tOp:
		if p.op("(") {
			f, err := p.or()
			if err != nil {
				return nil, err
			}
			if !p.op(")") {
				return nil, errors.New("missing )")
			}
			return f, nil
		}
		return nil, fmt.Errorf("unexpected %q", t.text)
	}
	switch {
	case p.kw("TRUE"):
		return func(*message.Message) any { return true }, nil
	case p.kw("FALSE"):
		return func(*message.Message) any { return false }, nil
	case p.kw("NULL"):
		return func(*message.Message) any { return nil }, nil
	}
	if isKeyword(t.text) {
		return nil, fmt.Errorf("unexpected keyword %s", t.text)
	}
	p.pos++
	name := t.text
	switch name {
	case "JMSMessageID":
		return func(m *message.Message) any { return idString(m.MessageID) }, nil
	case "JMSCorrelationID":
		return func(m *message.Message) any { return idString(m.CorrelationID) }, nil
	case "JMSType":
		return func(m *message.Message) any {
			if m.Subject == "" {
				return nil
			}
			return m.Subject
		}, nil
	case "JMSPriority":
		return func(m *message.Message) any { return int64(m.Priority) }, nil
	}
	return func(m *message.Message) any { return selValue(m.Properties[name]) }, nil
}

func idString(v any) any {
	switch v := v.(type) {
	case string:
		return v
	case uint64:
		return strconv.FormatUint(v, 10)
	}
	return nil
}

// selValue normalizes a property for evaluation.
func selValue(v any) any {
	switch v := v.(type) {
	case string, bool, int64, float64:
		return v
	case int32:
		return int64(v)
	case int16:
		return int64(v)
	case int8:
		return int64(v)
	case int:
		return int64(v)
	case uint32:
		return int64(v)
	case uint16:
		return int64(v)
	case uint8:
		return int64(v)
	case float32:
		return float64(v)
	case uint64:
		if v <= math.MaxInt64 {
			return int64(v)
		}
		return float64(v)
	}
	return nil
}

func compare(o string, a, b any) any {
	if a == nil || b == nil {
		return nil
	}
	var c int
	switch x := a.(type) {
	case string:
		y, ok := b.(string)
		if !ok {
			return nil
		}
		c = strings.Compare(x, y)
	case bool:
		y, ok := b.(bool)
		if !ok || (o != "=" && o != "<>") {
			return nil
		}
		if x == y {
			c = 0
		} else {
			c = 1
		}
	default:
		xi, xInt := a.(int64)
		yi, yInt := b.(int64)
		if xInt && yInt {
			c = cmpOrdered(xi, yi)
			break
		}
		xf, ok1 := toFloat(a)
		yf, ok2 := toFloat(b)
		if !ok1 || !ok2 {
			return nil
		}
		c = cmpOrdered(xf, yf)
	}
	switch o {
	case "=":
		return c == 0
	case "<>":
		return c != 0
	case "<":
		return c < 0
	case ">":
		return c > 0
	case "<=":
		return c <= 0
	case ">=":
		return c >= 0
	}
	return nil
}

func cmpOrdered[T int64 | float64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func toFloat(v any) (float64, bool) {
	switch v := v.(type) {
	case int64:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}

func arith(o string, a, b any) any {
	ai, aInt := a.(int64)
	bi, bInt := b.(int64)
	if aInt && bInt && o != "/" {
		switch o {
		case "+":
			return ai + bi
		case "-":
			return ai - bi
		case "*":
			return ai * bi
		}
	}
	x, ok1 := toFloat(a)
	y, ok2 := toFloat(b)
	if !ok1 || !ok2 {
		return nil
	}
	switch o {
	case "+":
		return x + y
	case "-":
		return x - y
	case "*":
		return x * y
	case "/":
		if y == 0 {
			return nil
		}
		return x / y
	}
	return nil
}
