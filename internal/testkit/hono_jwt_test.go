package testkit_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"
	"github.com/golang-jwt/jwt/v5"
)

// JSON Web Token device authentication (Hono's "JSON Web Token based
// Authentication"; docs/device-auth.md, "JSON Web Tokens") on the whole
// platform: an rpk credential registered through /v1 with the device's
// public key; tokens signed with its private key (ES256) authenticate
// paho.golang (MQTT 5) and mosquitto_pub (MQTT 3.1.1) in the password
// field, and net/http and curl as HTTP bearer tokens; a go-amqp
// application receives their telemetry.
func TestHonoJWT(t *testing.T) {
	e := startHono(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	e.v1("POST", "/v1/devices/iot/jdev", map[string]any{}, 201)
	e.v1("PUT", "/v1/credentials/iot/jdev", []any{map[string]any{"type": "rpk", "auth-id": "jdev",
		"secrets": []any{map[string]any{"key": base64.StdEncoding.EncodeToString(pub), "algorithm": "EC"}}}}, 204)
	admin := e.app("", "")
	tel, err := e.receiver(admin, "telemetry/iot", 10)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	sign := func(k *ecdsa.PrivateKey, claims jwt.MapClaims) string {
		t.Helper()
		s, err := jwt.NewWithClaims(jwt.SigningMethodES256, claims).SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Claims naming tenant and auth-id (aud hono-adapter), and a token
	// without them (the MQTT client id or the HTTP URI names them).
	withAud := sign(key, jwt.MapClaims{"aud": "hono-adapter", "tid": "iot", "sub": "jdev", "iss": "jdev",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	bare := sign(key, jwt.MapClaims{"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	forged := sign(other, jwt.MapClaims{"aud": "hono-adapter", "tid": "iot", "sub": "jdev", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	expired := sign(key, jwt.MapClaims{"aud": "hono-adapter", "tid": "iot", "sub": "jdev",
		"iat": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-20 * time.Minute).Unix()})
	accept := func(what string) *goamqp.Message {
		t.Helper()
		m := receive(t, tel)
		_ = tel.AcceptMessage(context.Background(), m)
		if string(m.GetData()) != what {
			t.Fatalf("telemetry %q, want %q", m.GetData(), what)
		}
		wantProps(t, m, map[string]any{"device_id": "jdev", "tenant_id": "iot"})
		return m
	}
	mqtt5 := func(clientID, token string) (*paho.Client, byte) {
		t.Helper()
		nc, err := net.Dial("tcp", e.MQTTAddr)
		if err != nil {
			t.Fatal(err)
		}
		c := paho.NewClient(paho.ClientConfig{Conn: nc})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ack, err := c.Connect(ctx, &paho.Connect{ClientID: clientID, CleanStart: true, KeepAlive: 30,
			UsernameFlag: true, Username: "ignored", PasswordFlag: true, Password: []byte(token)})
		if ack == nil {
			t.Fatalf("connect: no CONNACK: %v", err)
		}
		if ack.ReasonCode == 0 {
			t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
		}
		return c, ack.ReasonCode
	}

	// MQTT 5: the claims; the client id in Hono's form with a bare token.
	c, rc := mqtt5("any-id", withAud)
	if rc != 0 {
		t.Fatalf("CONNACK %#x", rc)
	}
	acked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := c.Publish(ctx, &paho.Publish{Topic: "telemetry", QoS: 1, Payload: []byte("paho-claims")})
		acked <- err
	}()
	accept("paho-claims")
	if err := <-acked; err != nil {
		t.Fatalf("PUBACK: %v", err)
	}
	c2, rc := mqtt5("tenants/iot/devices/jdev", bare)
	if rc != 0 {
		t.Fatalf("client id: CONNACK %#x", rc)
	}
	publish(t, c2, "t", 0, "paho-client-id")
	accept("paho-client-id")
	for name, tc := range map[string]struct{ id, token string }{
		"another key":       {"x", forged},
		"expired":           {"x", expired},
		"no tenant in id":   {"jdev", bare},
		"another tenant id": {"tenants/other/devices/jdev", bare},
	} {
		if _, rc := mqtt5(tc.id, tc.token); rc != 0x86 {
			t.Fatalf("%s: CONNACK %#x, want 0x86", name, rc)
		}
	}

	// MQTT 3.1.1: mosquitto_pub.
	// (QoS 1 telemetry: the PUBACK follows the application's acceptance.)
	mout := make(chan string, 1)
	go func() {
		mout <- e.mosqPub("-q", "1", "-u", "ignored", "-P", withAud, "-t", "telemetry", "-m", "mosq-claims")
	}()
	accept("mosq-claims")
	if out := <-mout; !strings.Contains(out, "received PUBACK") {
		t.Fatalf("mosquitto_pub:\n%s", out)
	}
	out := e.mosqPub("-u", "ignored", "-P", forged, "-t", "telemetry", "-m", "x")
	if !strings.Contains(out, "not authorised") && !strings.Contains(out, "Connection Refused") {
		t.Fatalf("mosquitto_pub with a forged token:\n%s", out)
	}

	// HTTP: bearer tokens (net/http, then curl), the claims or the URI.
	bearer := func(token string) map[string]string {
		return map[string]string{"Authorization": "Bearer " + token, "Content-Type": "text/plain"}
	}
	base := "http://" + e.HTTPAddr
	if resp, b := doReq(t, http.DefaultClient, "POST", base+"/telemetry", "", "", bearer(withAud), "http-claims"); resp.StatusCode != 202 {
		t.Fatalf("POST /telemetry with a token: %d %s", resp.StatusCode, b)
	}
	accept("http-claims")
	if resp, b := doReq(t, http.DefaultClient, "PUT", base+"/telemetry/iot/jdev", "", "", bearer(bare), "http-uri"); resp.StatusCode != 202 {
		t.Fatalf("PUT /telemetry/iot/jdev with a bare token: %d %s", resp.StatusCode, b)
	}
	accept("http-uri")
	for name, tc := range map[string]struct{ method, path, token string }{
		"another key":  {"POST", "/telemetry", forged},
		"expired":      {"POST", "/telemetry", expired},
		"bare, no URI": {"POST", "/telemetry", bare},
		"not a token":  {"POST", "/telemetry", "abc"},
	} {
		if resp, b := doReq(t, http.DefaultClient, tc.method, base+tc.path, "", "", bearer(tc.token), "x"); resp.StatusCode != 401 {
			t.Fatalf("%s: %d %s, want 401", name, resp.StatusCode, b)
		}
	}
	bin := needClient(t, "curl", "--version")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cout, err := exec.CommandContext(ctx, bin, "-s", "-i", "-X", "POST", "-H", "Authorization: Bearer "+withAud,
		"-H", "Content-Type: text/plain", "--data-binary", "curl-claims", base+"/telemetry").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(cout), "HTTP/1.1 202") {
		t.Fatalf("curl: %v\n%s", err, cout)
	}
	accept("curl-claims")

	// A connection ends when its token does (Hono's adapter disconnects
	// the device): exp + the 10 minutes' skew is 2–3 s from now.
	soon := time.Now().Add(-10*time.Minute + 3*time.Second)
	short := sign(key, jwt.MapClaims{"aud": "hono-adapter", "tid": "iot", "sub": "jdev",
		"iat": soon.Add(-time.Hour).Unix(), "exp": soon.Unix()})
	gone := make(chan *paho.Disconnect, 1)
	nc, err := net.Dial("tcp", e.MQTTAddr)
	if err != nil {
		t.Fatal(err)
	}
	sc := paho.NewClient(paho.ClientConfig{Conn: nc, OnServerDisconnect: func(d *paho.Disconnect) { gone <- d }})
	cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
	ack, err := sc.Connect(cctx, &paho.Connect{ClientID: "short", CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: "x", PasswordFlag: true, Password: []byte(short)})
	ccancel()
	if err != nil || ack.ReasonCode != 0 {
		t.Fatalf("short-lived token: %v %+v", err, ack)
	}
	select {
	case d := <-gone:
		if d.ReasonCode != 0x87 {
			t.Fatalf("DISCONNECT %#x", d.ReasonCode)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the connection outlived its token")
	}
}
