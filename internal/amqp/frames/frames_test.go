package frames

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/amqp/encoding"
)

// hx builds bytes from hand-written hex; a token in single quotes is ASCII.
func hx(s string) []byte {
	var out []byte
	for _, tok := range strings.Fields(s) {
		if strings.HasPrefix(tok, "'") && strings.HasSuffix(tok, "'") && len(tok) >= 2 {
			out = append(out, tok[1:len(tok)-1]...)
			continue
		}
		b, err := hex.DecodeString(tok)
		if err != nil {
			panic("bad hex token " + tok)
		}
		out = append(out, b...)
	}
	return out
}

const sessionEnd = encoding.ExpirySessionEnd

// perfCases: performative and its encoding, derived by hand from parts 2.7 and 5.3 of the spec.
var perfCases = []struct {
	name string
	p    Performative
	enc  []byte
}{
	{"open", &Open{ContainerID: "c", MaxFrameSize: 65536, ChannelMax: 65535},
		hx("00 53 10 c0 0a 03 a1 01 'c' 40 70 00 01 00 00")},
	{"open full", &Open{ContainerID: "c", Hostname: "h", MaxFrameSize: DefaultMaxFrameSize, ChannelMax: 0, IdleTimeOut: 30000,
		OfferedCapabilities: []encoding.Symbol{"ANONYMOUS-RELAY"}, Properties: encoding.Map{{Key: encoding.Symbol("p"), Value: "v"}}},
		hx("00 53 10 c0 30 0a a1 01 'c' a1 01 'h' 40 60 00 00 70 00 00 75 30 40 40 e0 12 01 a3 0f 'ANONYMOUS-RELAY' 40 c1 07 02 a3 01 'p' a1 01 'v'")},
	{"begin", &Begin{HasRemoteChannel: true, NextOutgoingID: 1, IncomingWindow: 5000, OutgoingWindow: 5000, HandleMax: DefaultHandleMax},
		hx("00 53 11 c0 10 04 60 00 00 52 01 70 00 00 13 88 70 00 00 13 88")},
	{"begin reply", &Begin{HasRemoteChannel: true, RemoteChannel: 1, IncomingWindow: 2048, OutgoingWindow: 2048, HandleMax: 255},
		hx("00 53 11 c0 11 05 60 00 01 43 70 00 00 08 00 70 00 00 08 00 52 ff")},
	{"attach receiver", &Attach{Name: "l", Role: RoleReceiver, SndSettleMode: SenderSettleMixed,
		Source: &encoding.Source{Address: "q", ExpiryPolicy: sessionEnd}, Target: &encoding.Target{ExpiryPolicy: sessionEnd}},
		hx("00 53 12 c0 15 07 a1 01 'l' 43 41 40 40 00 53 28 c0 04 01 a1 01 'q' 00 53 29 45")},
	{"attach sender", &Attach{Name: "s", Handle: 1, Role: RoleSender, SndSettleMode: SenderSettleSettled, RcvSettleMode: ReceiverSettleSecond,
		Target: &encoding.Target{Address: "t", ExpiryPolicy: sessionEnd}, HasInitialDeliveryCount: true, MaxMessageSize: 1 << 20},
		hx("00 53 12 c0 21 0b a1 01 's' 52 01 42 50 01 50 01 40 00 53 29 c0 04 01 a1 01 't' 40 40 43 80 00 00 00 00 00 10 00 00")},
	{"flow", &Flow{HasNextIncomingID: true, NextIncomingID: 1, IncomingWindow: 100, NextOutgoingID: 1, OutgoingWindow: 100,
		HasHandle: true, HasDeliveryCount: true, HasLinkCredit: true, LinkCredit: 100},
		hx("00 53 13 c0 0d 07 52 01 52 64 52 01 52 64 43 43 52 64")},
	{"flow drain echo", &Flow{Drain: true, Echo: true}, hx("00 53 13 c0 0b 0a 40 43 43 43 40 40 40 40 41 41")},
	{"transfer", &Transfer{HasDeliveryID: true, DeliveryTag: []byte{1}, HasMessageFormat: true},
		hx("00 53 14 c0 07 04 43 43 a0 01 01 43")},
	{"transfer settled", &Transfer{Handle: 1, Settled: true, State: &encoding.Accepted{}},
		hx("00 53 14 c0 0d 08 52 01 40 40 40 41 40 40 00 53 24 45")},
	{"transfer aborted", &Transfer{More: true, HasRcvSettleMode: true, RcvSettleMode: ReceiverSettleSecond, Aborted: true},
		hx("00 53 14 c0 0c 0a 43 40 40 40 40 41 50 01 40 40 41")},
	{"disposition", &Disposition{Role: RoleReceiver, Settled: true, State: &encoding.Accepted{}},
		hx("00 53 15 c0 09 05 41 43 40 41 00 53 24 45")},
	{"disposition range", &Disposition{Role: RoleSender, First: 1, Last: 3}, hx("00 53 15 c0 06 03 42 52 01 52 03")},
	{"disposition rejected", &Disposition{Role: RoleReceiver, First: 5, Last: 5, Settled: true,
		State: &encoding.Rejected{Error: &encoding.Error{Condition: CondNotFound}}},
		hx("00 53 15 c0 22 05 41 52 05 40 41 00 53 25 c0 17 01 00 53 1d c0 11 01 a3 0e 'amqp:not-found'")},
	{"detach", &Detach{Handle: 2, Closed: true, Error: &encoding.Error{Condition: CondStolen}},
		hx("00 53 16 c0 1c 03 52 02 41 00 53 1d c0 13 01 a3 10 'amqp:link:stolen'")},
	{"end", &End{}, hx("00 53 17 45")},
	{"close", &Close{Error: &encoding.Error{Condition: CondInternalError, Description: "x"}},
		hx("00 53 18 c0 1f 01 00 53 1d c0 19 02 a3 13 'amqp:internal-error' a1 01 'x'")},
	{"sasl-mechanisms", &SASLMechanisms{Mechanisms: []encoding.Symbol{"PLAIN", "ANONYMOUS"}},
		hx("00 53 40 c0 15 01 e0 12 02 a3 05 'PLAIN' 09 'ANONYMOUS'")},
	{"sasl-init", &SASLInit{Mechanism: "PLAIN", InitialResponse: []byte("\x00u\x00p")},
		hx("00 53 41 c0 0e 02 a3 05 'PLAIN' a0 04 00 75 00 70")},
	{"sasl-challenge", &SASLChallenge{Challenge: []byte("c")}, hx("00 53 42 c0 04 01 a0 01 'c'")},
	{"sasl-response", &SASLResponse{Response: []byte("r")}, hx("00 53 43 c0 04 01 a0 01 'r'")},
	{"sasl-outcome", &SASLOutcome{Code: SASLOk}, hx("00 53 44 c0 03 01 50 00")},
	{"sasl-outcome auth", &SASLOutcome{Code: SASLAuth, AdditionalData: []byte{}}, hx("00 53 44 c0 05 02 50 01 a0 00")},
}

func TestPerformatives(t *testing.T) {
	var d Decoder
	for _, tc := range perfCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.p.MarshalAMQP([]byte{0xEE})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[1:], tc.enc) {
				t.Fatalf("encode\n got %x\nwant %x", got[1:], tc.enc)
			}
			p, payload, err := DecodePerformative(tc.enc)
			if err != nil || len(payload) != 0 {
				t.Fatal(err, payload)
			}
			if !reflect.DeepEqual(p, tc.p) {
				t.Fatalf("decode\n got %#v\nwant %#v", p, tc.p)
			}
			p, _, err = d.Decode(tc.enc)
			if err != nil || !reflect.DeepEqual(p, tc.p) {
				t.Fatalf("Decoder: %#v %v", p, err)
			}
		})
	}
}

func TestFrames(t *testing.T) {
	tr := &Transfer{Handle: 0, HasDeliveryID: true, DeliveryTag: []byte{1}, HasMessageFormat: true}
	frame, err := AppendFrame(nil, TypeAMQP, 1, tr, []byte("hi"))
	want := hx("00 00 00 16 02 00 00 01 00 53 14 c0 07 04 43 43 a0 01 01 43 'hi'")
	if err != nil || !bytes.Equal(frame, want) {
		t.Fatalf("transfer frame\n got %x\nwant %x", frame, want)
	}
	f, n, err := ReadFrame(append(frame, 0xAA), 512) // a byte of the next frame
	if err != nil || n != len(want) || f.Type != TypeAMQP || f.Channel != 1 {
		t.Fatal(f, n, err)
	}
	var d Decoder
	p, payload, err := d.DecodeFrame(f)
	if err != nil || !reflect.DeepEqual(p, tr) || string(payload) != "hi" {
		t.Fatal(p, payload, err)
	}

	mechs, _ := AppendFrame(nil, TypeSASL, 0, &SASLMechanisms{Mechanisms: []encoding.Symbol{"PLAIN", "ANONYMOUS"}}, nil)
	want = hx("00 00 00 22 02 01 00 00 00 53 40 c0 15 01 e0 12 02 a3 05 'PLAIN' 09 'ANONYMOUS'")
	if !bytes.Equal(mechs, want) {
		t.Fatalf("sasl frame\n got %x\nwant %x", mechs, want)
	}
	f, _, _ = ReadFrame(mechs, 0)
	if _, _, err := d.DecodeFrame(Frame{Type: TypeAMQP, Body: f.Body}); !errors.Is(err, encoding.ErrDecode) {
		t.Fatal("SASL body in an AMQP frame accepted", err)
	}

	hb := AppendHeartbeat(nil)
	if !bytes.Equal(hb, hx("00 00 00 08 02 00 00 00")) {
		t.Fatalf("%x", hb)
	}
	f, n, err = ReadFrame(hb, 512)
	if err != nil || n != 8 || len(f.Body) != 0 {
		t.Fatal(f, n, err)
	}
	if p, _, err := d.DecodeFrame(f); p != nil || err != nil {
		t.Fatal("heartbeat", p, err)
	}

	// Extended header (doff 3) is skipped.
	f, n, err = ReadFrame(hx("00 00 00 10 03 00 00 05 ee ee ee ee 00 53 17 45"), 512)
	if err != nil || n != 16 || f.Channel != 5 || !bytes.Equal(f.Body, hx("00 53 17 45")) {
		t.Fatal(f, n, err)
	}
}

func TestReadFrameErrors(t *testing.T) {
	for i := 0; i < 8; i++ {
		if _, n, err := ReadFrame(make([]byte, i), 512); err != ErrNeedMore || n != 8 {
			t.Fatalf("%d bytes: n=%d err=%v", i, n, err)
		}
	}
	if _, n, err := ReadFrame(hx("00 00 01 00 02 00 00 00 00"), 512); err != ErrNeedMore || n != 256 {
		t.Fatalf("partial: n=%d err=%v", n, err)
	}
	_, _, err := ReadFrame(hx("ff ff ff ff 02 00 00 00"), 65536)
	var fse *FrameSizeError
	if !errors.As(err, &fse) || fse.Size != 0xffffffff || fse.Max != 65536 || !errors.Is(err, ErrFrameTooLarge) ||
		fse.Condition() != CondFrameSizeTooSmall {
		t.Fatalf("oversize: %v", err)
	}
	if _, _, err := ReadFrame(hx("00 00 02 01 02 00 00 00"), 0); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("default limit 512: %v", err)
	}
	for name, in := range map[string][]byte{
		"size below header": hx("00 00 00 07 02 00 00 00"),
		"doff 1":            hx("00 00 00 08 01 00 00 00"),
		"doff beyond size":  hx("00 00 00 08 03 00 00 00"),
		"unknown type":      hx("00 00 00 08 02 07 00 00"),
	} {
		if _, _, err := ReadFrame(in, 512); !errors.Is(err, ErrFraming) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestProtoHeader(t *testing.T) {
	for _, h := range []ProtoHeader{HeaderAMQP, HeaderTLS, HeaderSASL} {
		b := h.Append(nil)
		got, err := ParseProtoHeader(b)
		if err != nil || got != h {
			t.Fatal(h, err)
		}
	}
	if b := HeaderSASL.Append(nil); !bytes.Equal(b, hx("41 4d 51 50 03 01 00 00")) {
		t.Fatalf("%x", b)
	}
	if b := HeaderAMQP.Append(nil); !bytes.Equal(b, hx("'AMQP' 00 01 00 00")) {
		t.Fatalf("%x", b)
	}
	if _, err := ParseProtoHeader([]byte("AMQP")); err != ErrNeedMore {
		t.Fatal(err)
	}
	if _, err := ParseProtoHeader([]byte("GET / HTTP/1.1")); err != ErrProtocolHeader {
		t.Fatal(err)
	}
	if h, err := ParseProtoHeader(hx("'AMQP' 00 00 09 01")); err != ErrProtocolHeader || h.Minor != 9 {
		t.Fatal(h, err) // AMQP 0-9-1 client: answer with our header, then close
	}
}

func TestMandatoryFields(t *testing.T) {
	cases := map[string][]byte{
		"open without container-id":        hx("00 53 10 45"),
		"begin without windows":            hx("00 53 11 c0 03 02 40 43"),
		"attach with null name":            hx("00 53 12 c0 04 03 40 43 41"),
		"attach without role":              hx("00 53 12 c0 05 02 a1 01 'l' 43"),
		"flow without outgoing-window":     hx("00 53 13 c0 04 03 40 43 43"),
		"transfer without handle":          hx("00 53 14 45"),
		"disposition without first":        hx("00 53 15 c0 02 01 41"),
		"detach without handle":            hx("00 53 16 45"),
		"sasl-mechanisms empty":            hx("00 53 40 45"),
		"sasl-init without mechanism":      hx("00 53 41 45"),
		"sasl-response without response":   hx("00 53 43 c0 02 01 40"),
		"sasl-outcome without code":        hx("00 53 44 45"),
		"sasl-outcome bad code":            hx("00 53 44 c0 03 01 50 09"),
		"attach bad snd-settle-mode":       hx("00 53 12 c0 08 04 a1 01 'l' 43 41 50 03"),
		"unknown performative":             hx("00 53 19 45"),
		"trailing bytes after flow":        hx("00 53 13 c0 04 04 40 43 43 43 00"),
		"delivery-tag over 32 bytes":       append(hx("00 53 14 c0 25 03 43 43 a0 21"), make([]byte, 33)...),
		"error in close without condition": hx("00 53 18 c0 05 01 00 53 1d 45"),
	}
	for name, in := range cases {
		if _, _, err := DecodePerformative(in); !errors.Is(err, encoding.ErrDecode) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
	// Symbolic descriptors are accepted.
	p, _, err := DecodePerformative(hx("00 a3 0e 'amqp:open:list' c0 04 01 a1 01 'c'"))
	if o, ok := p.(*Open); err != nil || !ok || o.ContainerID != "c" || o.MaxFrameSize != DefaultMaxFrameSize {
		t.Fatal(p, err)
	}
}
