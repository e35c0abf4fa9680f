package mqtt

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// mochiPublish is the codec's encoding of the same PUBLISH.
func mochiPublish(t testing.TB, version, qos byte, retain, dup bool, topic string, id uint16, payload []byte) []byte {
	pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos, Retain: retain, Dup: dup},
		TopicName: topic, PacketID: id, ProtocolVersion: version, Payload: payload}
	var buf bytes.Buffer
	if err := pk.PublishEncode(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// FuzzAppendPublish: the hand-written PUBLISH encoder produces the
// codec's bytes for every header combination, topic and payload size
// (the remaining-length varint's 1–3 byte forms included).
func FuzzAppendPublish(f *testing.F) {
	f.Add(byte(4), byte(0), false, false, "a/b", uint16(0), []byte("x"))
	f.Add(byte(5), byte(1), true, true, "sensors/+/temp", uint16(7), make([]byte, 200))
	f.Add(byte(4), byte(2), false, true, strings.Repeat("t", 300), uint16(65535), make([]byte, 20000))
	f.Add(byte(5), byte(0), true, false, "", uint16(0), []byte{})
	f.Fuzz(func(t *testing.T, version, qos byte, retain, dup bool, topic string, id uint16, payload []byte) {
		version = 4 + version%2
		qos %= 3
		if qos == 0 {
			id, dup = 0, false
		} else if id == 0 {
			id = 1
		}
		got, ok := appendPublish(nil, version, qos, retain, dup, topic, id, payload)
		if !ok {
			t.Fatalf("not encoded: topic %d bytes, payload %d", len(topic), len(payload))
		}
		if want := mochiPublish(t, version, qos, retain, dup, topic, id, payload); !bytes.Equal(got, want) {
			t.Fatalf("v%d qos %d retain %v dup %v topic %q id %d payload %d bytes:\n got %x\nwant %x",
				version, qos, retain, dup, topic, id, len(payload), got[:min(len(got), 40)], want[:min(len(want), 40)])
		}
	})
}

func TestAppendPublishLimits(t *testing.T) {
	if _, ok := appendPublish(nil, 4, 0, false, false, strings.Repeat("t", 70000), 0, nil); ok {
		t.Error("a topic over 65535 bytes was encoded")
	}
}
