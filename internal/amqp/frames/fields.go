package frames

import (
	"fmt"

	"github.com/throngmq/throng/internal/amqp/encoding"
)

// fieldSet records which fields of a composite were present (non-null).
type fieldSet uint32

func (s *fieldSet) add(i int) {
	if i < 32 {
		*s |= 1 << uint(i)
	}
}

func (s fieldSet) has(i int) bool { return i < 32 && s&(1<<uint(i)) != 0 }

// require checks mandatory fields given as index, name pairs.
func (s fieldSet) require(r *encoding.Reader, typ string, pairs ...any) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if !s.has(pairs[i].(int)) {
			return encoding.Missing(r, typ, pairs[i+1].(string))
		}
	}
	return nil
}

func invalidField(r *encoding.Reader, typ, field string, v any) error {
	return &encoding.DecodeError{Offset: r.Offset(), Msg: fmt.Sprintf("%s: invalid %s %v", typ, field, v)}
}
