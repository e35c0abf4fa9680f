package amqp

import (
	"testing"

	"github.com/throngmq/throng/internal/message"
)

func TestSelector(t *testing.T) {
	m := &message.Message{Subject: "t1", MessageID: "id-1", Priority: 7, Properties: map[string]any{
		"color": "red", "n": int64(5), "u": uint64(3), "f": 2.5, "ok": true, "name": "sensor_12",
		"qos": int32(1), "b": int8(-2), "s": uint16(9), "w": uint32(4), "g": float32(0.5)}}
	cases := []struct {
		sel  string
		want bool
	}{
		{"color = 'red'", true},
		{"color <> 'red'", false},
		{"n > 4 AND n <= 5", true},
		{"n + u = 8", true},
		{"f * 2 = 5", true},
		{"n / 2 = 2.5", true},
		{"-n < 0", true},
		{"color IN ('blue', 'red')", true},
		{"color NOT IN ('blue', 'red')", false},
		{"name LIKE 'sensor%'", true},
		{"name LIKE 'sensor\\_1_' ESCAPE '\\'", true},
		{"name NOT LIKE 's%'", false},
		{"missing IS NULL", true},
		{"color IS NOT NULL", true},
		{"missing = 1", false},
		{"NOT missing = 1", false}, // unknown stays unknown
		{"missing = 1 OR ok = TRUE", true},
		{"n BETWEEN 1 AND 5", true},
		{"n NOT BETWEEN 1 AND 5", false},
		{"JMSType = 't1' AND JMSMessageID = 'id-1' AND JMSPriority > 4", true},
		{"(color = 'blue' OR n = 5) AND NOT ok = FALSE", true},
		{"color = 'it''s'", false},
		{"color > 5", false}, // type mismatch: unknown
		// AMQP int, byte, ushort, uint and float properties (Hono's qos is an int)
		{"qos = 1", true},
		{"b < 0 AND s = 9 AND w + qos = 5", true},
		{"g = 0.5", true},
	}
	for _, c := range cases {
		f, err := compileSelector(c.sel)
		if err != nil {
			t.Fatalf("%s: %v", c.sel, err)
		}
		if got := f(m); got != c.want {
			t.Errorf("%s = %v, want %v", c.sel, got, c.want)
		}
	}
	for _, bad := range []string{"", "n >", "color = 'x", "IN ('a')", "n IS 5", "((n = 1)", "n = 1 1", "a LIKE 5", "n @ 2"} {
		if _, err := compileSelector(bad); err == nil {
			t.Errorf("%q compiled", bad)
		}
	}
}

func FuzzSelector(f *testing.F) {
	for _, s := range []string{"a = 'b'", "n BETWEEN 1 AND 2", "x LIKE '%_' ESCAPE '!'", "NOT (a IS NULL)"} {
		f.Add(s)
	}
	m := &message.Message{Properties: map[string]any{"a": "b", "n": int64(1)}}
	f.Fuzz(func(t *testing.T, s string) {
		if fn, err := compileSelector(s); err == nil {
			fn(m)
		}
	})
}
