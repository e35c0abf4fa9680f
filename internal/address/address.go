// Package address is the pure model of throng addresses: names, types,
// limits, MQTT-style wildcard filters, and the lossless mapping of address
// names onto NATS subjects and stream names. It does no I/O.
package address

import (
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Type is the kind of an address; see DESIGN.md section 3.
type Type string

const (
	Anycast      Type = "anycast"
	Multicast    Type = "multicast"
	Queue        Type = "queue"
	Topic        Type = "topic"
	Subscription Type = "subscription"
)

// Valid reports whether t is one of the defined types.
func (t Type) Valid() bool {
	switch t {
	case Anycast, Multicast, Queue, Topic, Subscription:
		return true
	}
	return false
}

// Stored reports whether messages to an address of this type are kept in a
// stream.
func (t Type) Stored() bool { return t == Queue || t == Topic || t == Subscription }

// Overflow says what a full queue or topic does with a new message.
type Overflow string

const (
	// RejectNew refuses the new message; the producer gets an error.
	RejectNew Overflow = "reject-new"
	// DropOldest discards the oldest stored message (topics only).
	DropOldest Overflow = "drop-oldest"
)

// Limits bound a stored address. Zero means unlimited (or the default).
type Limits struct {
	MaxMessages    int64    `json:"maxMessages,omitempty" yaml:"maxMessages,omitempty"`
	MaxBytes       int64    `json:"maxBytes,omitempty" yaml:"maxBytes,omitempty"`
	MaxAge         Duration `json:"maxAge,omitempty" yaml:"maxAge,omitempty"`
	MaxMessageSize int32    `json:"maxMessageSize,omitempty" yaml:"maxMessageSize,omitempty"`
	// MaxDeliveries moves a queue message to the dead-letter address after
	// this many unsuccessful deliveries (0: default 10, -1: unlimited).
	MaxDeliveries int      `json:"maxDeliveries,omitempty" yaml:"maxDeliveries,omitempty"`
	Overflow      Overflow `json:"overflow,omitempty" yaml:"overflow,omitempty"`
}

// DefaultMaxDeliveries is used when Limits.MaxDeliveries is zero.
const DefaultMaxDeliveries = 10

// Validate checks the limits for an address type.
func (l Limits) Validate(t Type) error {
	if l.MaxMessages < 0 || l.MaxBytes < 0 || l.MaxAge < 0 || l.MaxMessageSize < 0 || l.MaxDeliveries < -1 {
		return errors.New("limits must not be negative")
	}
	switch l.Overflow {
	case "", RejectNew:
	case DropOldest:
		if t == Queue {
			return errors.New("overflow drop-oldest is for topics; queues reject new messages")
		}
	default:
		return fmt.Errorf("unknown overflow policy %q", l.Overflow)
	}
	return nil
}

// Duration is a time.Duration that reads and writes as a Go duration string
// ("90s", "24h") in JSON and YAML, and also accepts a number of seconds.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	s := string(b)
	if v, err := time.ParseDuration(s); err == nil {
		*d = Duration(v)
		return nil
	}
	var secs int64
	if _, err := fmt.Sscanf(s, "%d", &secs); err == nil && fmt.Sprint(secs) == s {
		*d = Duration(time.Duration(secs) * time.Second)
		return nil
	}
	return fmt.Errorf("invalid duration %q", s)
}

// Address is an address definition.
type Address struct {
	Name   string `json:"name"`
	Type   Type   `json:"type"`
	Limits Limits `json:"limits"`
	// DeadLetter names the address that receives rejected messages and
	// those over MaxDeliveries (queues); empty means "DLQ".
	DeadLetter string `json:"deadLetter,omitempty"`
	// Topic is the topic a subscription address subscribes to.
	Topic string `json:"topic,omitempty"`
	// Created is when the address was defined.
	Created time.Time `json:"created"`
	// AutoCreated is set when an auto-create rule defined it.
	AutoCreated bool `json:"autoCreated,omitempty"`
}

// DefaultDeadLetter is the dead-letter address used when none is set.
const DefaultDeadLetter = "DLQ"

// DeadLetterAddress returns the effective dead-letter address.
func (a Address) DeadLetterAddress() string {
	if a.DeadLetter != "" {
		return a.DeadLetter
	}
	return DefaultDeadLetter
}

// Validate checks the definition.
func (a Address) Validate() error {
	if err := ValidateName(a.Name); err != nil {
		return err
	}
	if !a.Type.Valid() {
		return fmt.Errorf("unknown address type %q (want anycast, multicast, queue, topic or subscription)", a.Type)
	}
	if a.Type == Subscription {
		if a.Topic == "" {
			return errors.New("a subscription address needs the topic it subscribes to")
		}
		if err := ValidateName(a.Topic); err != nil {
			return fmt.Errorf("topic: %w", err)
		}
	} else if a.Topic != "" {
		return fmt.Errorf("topic %q: only a subscription address names a topic, not a %s", a.Topic, a.Type)
	}
	if a.DeadLetter != "" {
		if err := ValidateName(a.DeadLetter); err != nil {
			return fmt.Errorf("dead-letter address: %w", err)
		}
	}
	return a.Limits.Validate(a.Type)
}

// MaxNameLength bounds address names (bytes).
const MaxNameLength = 1024

// ErrInvalidName is wrapped by every name validation error.
var ErrInvalidName = errors.New("invalid address name")

// ValidateName checks an address name: non-empty UTF-8 of at most
// MaxNameLength bytes, without NUL, and without the wildcard characters
// '+' and '#' (which only filters may use). Levels are separated by '/';
// any other character is allowed and mapped losslessly onto subjects.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case len(name) > MaxNameLength:
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidName, MaxNameLength)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: not UTF-8", ErrInvalidName)
	case strings.ContainsRune(name, 0):
		return fmt.Errorf("%w: contains NUL", ErrInvalidName)
	case strings.ContainsAny(name, "+#"):
		return fmt.Errorf("%w: %q contains a wildcard character (+ or #)", ErrInvalidName, name)
	case strings.Contains(name, "::"):
		return fmt.Errorf("%w: %q contains '::' (reserved for topic::subscription)", ErrInvalidName, name)
	}
	return nil
}

// ValidateFilter checks an MQTT-style filter: '+' matches one level and must
// fill a whole level; '#' matches any number of levels (including none) and
// must be the last level.
func ValidateFilter(filter string) error {
	if filter == "" || len(filter) > MaxNameLength || !utf8.ValidString(filter) || strings.ContainsRune(filter, 0) {
		return fmt.Errorf("%w: invalid filter %q", ErrInvalidName, filter)
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.ContainsAny(l, "+#") && len(l) > 1 {
			return fmt.Errorf("%w: wildcard must fill a whole level in %q", ErrInvalidName, filter)
		}
		if l == "#" && i != len(levels)-1 {
			return fmt.Errorf("%w: '#' must be the last level in %q", ErrInvalidName, filter)
		}
	}
	return nil
}

// IsWildcard reports whether a filter contains '+' or '#'.
func IsWildcard(filter string) bool { return strings.ContainsAny(filter, "+#") }

// Match reports whether name matches the MQTT-style filter. As in MQTT,
// wildcards at the first level do not match names starting with '$'.
func Match(filter, name string) bool {
	if filter == name {
		return true
	}
	if strings.HasPrefix(name, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		nl, nrest, nmore := strings.Cut(name, "/")
		if fl != "+" && fl != nl {
			return false
		}
		if !fmore && !nmore {
			return true
		}
		if !nmore {
			// "a/#" matches "a".
			return fmore && frest == "#"
		}
		if !fmore {
			return false
		}
		filter, name = frest, nrest
	}
}

// Subject maps an address name onto the NATS subject tokens, with prefix as
// the first token. Each '/'-separated level becomes one token; characters
// that NATS treats specially ('.', '*', '>', white space, control
// characters) and '%' itself are percent-escaped, and an empty level
// becomes "%" alone (which escaping can never produce), so the mapping is
// lossless and reversible.
func Subject(prefix, name string) string {
	var b strings.Builder
	b.Grow(len(prefix) + 1 + len(name) + 8)
	b.WriteString(prefix)
	for {
		level, rest, more := strings.Cut(name, "/")
		b.WriteByte('.')
		escapeLevel(&b, level)
		if !more {
			return b.String()
		}
		name = rest
	}
}

// FilterSubjects maps an MQTT-style filter onto NATS subject filters: '+'
// becomes '*' and a trailing '#' becomes '>'. Because MQTT's "a/#" also
// matches "a" itself, that case yields two subjects.
func FilterSubjects(prefix, filter string) []string {
	var b strings.Builder
	b.WriteString(prefix)
	f := filter
	for {
		level, rest, more := strings.Cut(f, "/")
		switch level {
		case "#":
			parent := b.String()
			b.WriteString(".>")
			if parent == prefix {
				return []string{b.String()}
			}
			return []string{parent, b.String()}
		case "+":
			b.WriteString(".*")
		default:
			b.WriteByte('.')
			escapeLevel(&b, level)
		}
		if !more {
			return []string{b.String()}
		}
		f = rest
	}
}

const hexDigits = "0123456789ABCDEF"

func escapeLevel(b *strings.Builder, level string) {
	if level == "" {
		b.WriteByte('%')
		return
	}
	for i := 0; i < len(level); i++ {
		c := level[i]
		if c <= ' ' || c == 0x7f || c == '.' || c == '*' || c == '>' || c == '%' {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
}

// NameFromSubject reverses Subject: it strips the prefix token and
// unescapes each token.
func NameFromSubject(prefix, subject string) (string, error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	if !ok {
		return "", fmt.Errorf("subject %q lacks prefix %q", subject, prefix)
	}
	var b strings.Builder
	b.Grow(len(rest))
	for i := 0; ; i++ {
		tok, more, cont := strings.Cut(rest, ".")
		if i > 0 {
			b.WriteByte('/')
		}
		if tok != "%" {
			for j := 0; j < len(tok); j++ {
				c := tok[j]
				if c == '%' {
					if j+2 >= len(tok) {
						return "", fmt.Errorf("bad escape in subject %q", subject)
					}
					v, err := unhex(tok[j+1], tok[j+2])
					if err != nil {
						return "", fmt.Errorf("bad escape in subject %q", subject)
					}
					b.WriteByte(v)
					j += 2
					continue
				}
				b.WriteByte(c)
			}
		}
		if !cont {
			return b.String(), nil
		}
		rest = more
	}
}

func unhex(a, b byte) (byte, error) {
	h, ok1 := fromHex(a)
	l, ok2 := fromHex(b)
	if !ok1 || !ok2 {
		return 0, errors.New("bad hex")
	}
	return h<<4 | l, nil
}

func fromHex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// StreamName returns a JetStream stream name for an address. Stream names
// are restricted (no '.', '*', '>', path separators, bounded length), so
// the name is derived from a hash of the address name; the address name
// itself is kept in the stream's metadata.
func StreamName(prefix, name string) string {
	sum := sha256.Sum256([]byte(name))
	return prefix + "_" + b32.EncodeToString(sum[:20])
}

// ConsumerName returns a JetStream durable consumer name for a subscription
// name (hashed for the same reasons as StreamName).
func ConsumerName(prefix, name string) string {
	sum := sha256.Sum256([]byte(name))
	return prefix + "_" + b32.EncodeToString(sum[:20])
}

// Stats is what the router reports about an address.
type Stats struct {
	// Backlog is the number of stored messages (queue, topic) not yet
	// consumed (queue) or retained (topic).
	Backlog int64 `json:"backlog"`
	// Bytes is the stored size of the backlog.
	Bytes int64 `json:"bytes"`
	// Consumers is the number of attached consumers on this node.
	Consumers int `json:"consumers"`
	// MessagesIn counts messages accepted into the address (stored, fanned
	// out, or accepted by an anycast consumer) and MessagesOut messages
	// delivered from it, on this node since it started. MessagesRejected
	// counts publishes it did not accept (limits, errors, no consumer, an
	// anycast consumer's reject or release); they are not in MessagesIn.
	MessagesIn       uint64 `json:"messagesIn"`
	MessagesOut      uint64 `json:"messagesOut"`
	MessagesRejected uint64 `json:"messagesRejected"`
	// BytesIn and BytesOut are the body (payload) bytes of the messages
	// counted by MessagesIn and MessagesOut.
	BytesIn  uint64 `json:"bytesIn"`
	BytesOut uint64 `json:"bytesOut"`
	// Durable subscriptions on a topic (names).
	Subscriptions []string `json:"subscriptions,omitempty"`
}
