package mqtt

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/message"
)

// seedPackets are valid client packets of both versions, the fuzz seeds.
func seedPackets() [][]byte {
	var out [][]byte
	for _, v := range []byte{4, 5} {
		pks := []*packets.Packet{
			{FixedHeader: packets.FixedHeader{Type: packets.Connect}, Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: "c", Clean: true, Keepalive: 30,
				WillFlag: true, WillTopic: "w", WillPayload: []byte("x"), UsernameFlag: true, Username: []byte("u@t"), PasswordFlag: true, Password: []byte("p")},
				Properties: packets.Properties{SessionExpiryInterval: 60, ReceiveMaximum: 10, User: []packets.UserProperty{{Key: "k", Val: "v"}}}},
			{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a/b", PacketID: 7, Payload: []byte("hello"),
				Properties: packets.Properties{ContentType: "text/plain", ResponseTopic: "r", CorrelationData: []byte{1}, MessageExpiryInterval: 5, TopicAlias: 1}},
			{FixedHeader: packets.FixedHeader{Type: packets.Publish}, TopicName: "t", Payload: []byte("0")},
			{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, PacketID: 2, Filters: packets.Subscriptions{{Filter: "a/+", Qos: 1, NoLocal: true, RetainHandling: 2}, {Filter: "$share/g/#"}},
				Properties: packets.Properties{SubscriptionIdentifier: []int{3}}},
			{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, PacketID: 3, Filters: packets.Subscriptions{{Filter: "a/+"}}},
			{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: 7, ReasonCode: 0x10},
			{FixedHeader: packets.FixedHeader{Type: packets.Pubrel, Qos: 1}, PacketID: 7},
			{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}},
			{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ReasonCode: 0x04, Properties: packets.Properties{SessionExpiryInterval: 10, SessionExpiryIntervalFlag: true}},
		}
		if v == 5 {
			pks = append(pks, &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Auth}, ReasonCode: 0x18, Properties: packets.Properties{AuthenticationMethod: "m"}})
		}
		for _, pk := range pks {
			pk.ProtocolVersion = v
			var buf bytes.Buffer
			var err error
			switch pk.FixedHeader.Type {
			case packets.Connect:
				err = pk.ConnectEncode(&buf)
			case packets.Publish:
				err = pk.PublishEncode(&buf)
			case packets.Subscribe:
				err = pk.SubscribeEncode(&buf)
			case packets.Unsubscribe:
				err = pk.UnsubscribeEncode(&buf)
			case packets.Puback:
				err = pk.PubackEncode(&buf)
			case packets.Pubrel:
				err = pk.PubrelEncode(&buf)
			case packets.Pingreq:
				err = pk.PingreqEncode(&buf)
			case packets.Disconnect:
				err = pk.DisconnectEncode(&buf)
			case packets.Auth:
				err = pk.AuthEncode(&buf)
			}
			if err != nil {
				panic(err)
			}
			out = append(out, append([]byte{v}, buf.Bytes()...))
		}
	}
	return out
}

// decodeStream is what the reader does with bytes from a client.
func decodeStream(data []byte) {
	if len(data) == 0 {
		return
	}
	v := 4 + data[0]&1
	pr := packetReader{conn: bytes.NewReader(data[1:])}
	for {
		fh, body, err := pr.readPacket(1 << 16)
		if err != nil {
			return
		}
		var pk packets.Packet
		if decodePacket(fh, body, v, &pk) != nil {
			return
		}
		switch fh.Type {
		case packets.Connect:
			pk.ConnectValidate()
		case packets.Publish:
			pk.PublishValidate(10)
			m := toMessage(pk.TopicName, fh.Qos, fh.Retain, pk.Payload, &pk.Properties, "c")
			out := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}, ProtocolVersion: v, TopicName: "t"}
			fillPublish(out, m, v == 5, m.CreationTime)
			if _, err := encodePacket(out); err != nil {
				panic(err)
			}
			if _, err := message.Unmarshal(m.Marshal()); err != nil {
				panic(err)
			}
		case packets.Subscribe:
			pk.SubscribeValidate()
			for _, f := range pk.Filters {
				_, _, _, _ = parseShare(f.Filter)
			}
		case packets.Unsubscribe:
			pk.UnsubscribeValidate()
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range seedPackets() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) { decodeStream(data) })
}

// TestWriteSeedCorpus regenerates testdata/fuzz/FuzzDecode when
// THRONG_WRITE_CORPUS=1.
func TestWriteSeedCorpus(t *testing.T) {
	if os.Getenv("THRONG_WRITE_CORPUS") != "1" {
		t.Skip("set THRONG_WRITE_CORPUS=1 to regenerate the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seedPackets() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestEncodeAck(t *testing.T) {
	cases := []struct {
		typ, v, rc byte
		text       string
		want       []byte
	}{
		{packets.Puback, 4, 0, "", []byte{0x40, 2, 0, 7}},
		{packets.Puback, 5, 0, "", []byte{0x40, 2, 0, 7}},
		{packets.Puback, 5, 0x10, "", []byte{0x40, 4, 0, 7, 0x10, 0}},
		{packets.Pubrel, 5, 0, "", []byte{0x62, 2, 0, 7}},
		{packets.Pubrec, 5, 0x97, "q", []byte{0x50, 8, 0, 7, 0x97, 4, 0x1F, 0, 1, 'q'}},
	}
	for _, c := range cases {
		if got := encodeAck(c.typ, c.v, 7, c.rc, c.text); !bytes.Equal(got, c.want) {
			t.Errorf("encodeAck(%d,v%d,%#x,%q) = % x, want % x", c.typ, c.v, c.rc, c.text, got, c.want)
		}
	}
}

func BenchmarkDecodePublish(b *testing.B) {
	for _, size := range []int{64, 1024} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5, TopicName: "devices/42/telemetry", PacketID: 1, Payload: make([]byte, size)}
			var buf bytes.Buffer
			_ = pk.PublishEncode(&buf)
			data := bytes.Repeat(buf.Bytes(), 100)
			b.SetBytes(int64(buf.Len()))
			b.ReportAllocs()
			for b.Loop() {
				pr := packetReader{conn: bytes.NewReader(data)}
				for range 100 {
					fh, body, err := pr.readPacket(1 << 20)
					if err != nil {
						b.Fatal(err)
					}
					var p packets.Packet
					if err := decodePacket(fh, body, 5, &p); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func BenchmarkEncodePublish(b *testing.B) {
	m := &message.Message{Body: make([]byte, 64), ContentType: "application/json", Properties: map[string]any{"k": "v", propOrigin: "c"}}
	b.ReportAllocs()
	for b.Loop() {
		pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5, TopicName: "devices/42/telemetry", PacketID: 1}
		fillPublish(pk, m, true, m.CreationTime)
		if _, err := encodePacket(pk); err != nil {
			b.Fatal(err)
		}
	}
}
