package amqp

import (
	"testing"

	"github.com/throngmq/throng/internal/message"
)

// FuzzSelectorEval compiles arbitrary selectors and evaluates them against
// a message whose properties are fuzzed too (FuzzSelector in
// selector_test.go only compiles and evaluates against a fixed message).
// Beyond not panicking, a selector that compiles must mean the same in
// parentheses, and combined with itself by AND and by OR (x AND x = x,
// x OR x = x hold in three-valued logic as well), and evaluate the same
// way twice.
func FuzzSelectorEval(f *testing.F) {
	for _, s := range []string{
		"a = 'b'", "n BETWEEN 1 AND 2", "x LIKE '%_' ESCAPE '!'", "NOT (a IS NULL)",
		"a IN ('x', 'y') OR n > 3", "x * 2.5 >= n - 1", "b AND NOT b", "b = TRUE OR missing = 1",
		"JMSType = 'weather' AND JMSPriority > 4", "JMSMessageID LIKE 'id-%'", "-n / 0 = 1",
		"a NOT LIKE 'b\\%' ESCAPE '\\'", "n NOT BETWEEN -5 AND 5", "missing IS NOT NULL",
		"x = 1e10", "a <> ''", "(n + 1) * (n - 1) < 100",
	} {
		f.Add(s, "b", int64(1), 2.5, true)
	}
	f.Add("a = 'it''s'", "it's", int64(-1), -0.0, false)
	f.Add("n = 9223372036854775807 + 1", "", int64(9223372036854775807), 1e308, false)
	f.Fuzz(func(t *testing.T, sel, a string, n int64, x float64, b bool) {
		fn, err := compileSelector(sel)
		if err != nil {
			return
		}
		m := &message.Message{
			Properties: map[string]any{"a": a, "n": n, "x": x, "b": b},
			Subject:    a,
			MessageID:  "id-" + a,
			Priority:   uint8(n),
		}
		got := fn(m)
		if fn(m) != got {
			t.Fatalf("%q evaluates differently twice", sel)
		}
		if len(sel)*2+16 > maxSelector {
			return
		}
		for _, form := range []string{"(" + sel + ")", "(" + sel + ") AND (" + sel + ")", "(" + sel + ") OR (" + sel + ")"} {
			g, err := compileSelector(form)
			if err != nil {
				t.Fatalf("%q compiles but %q does not: %v", sel, form, err)
			}
			if g(m) != got {
				t.Fatalf("%q = %v but %q = %v (a=%q n=%d x=%v b=%v)", sel, got, form, !got, a, n, x, b)
			}
		}
	})
}
