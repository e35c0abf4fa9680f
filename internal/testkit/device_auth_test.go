package testkit_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/testkit"
)

// Device authentication end to end (issue 12): devices registered
// through Hono's /v1 API connect with real clients — mosquitto_pub
// (MQTT 3.1.1), paho.golang (MQTT 5 reason codes), Qpid Proton (AMQP SASL
// PLAIN and EXTERNAL) and go-amqp (the SASL outcome code).

// needClient finds an external client: missing fails when CI=true and
// skips otherwise.
func needClient(t *testing.T, path string, check ...string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err == nil && len(check) > 0 {
		err = exec.Command(p, check...).Run()
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not usable (apt-get install -y mosquitto-clients python3-qpid-proton): %v", path, err)
		}
		t.Skipf("%s not usable: %v", path, err)
	}
	return p
}

// ---- a small PKI written to files for the external clients

type pkiCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newPKICA(t *testing.T, dir, name string, subject pkix.Name) *pkiCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	ca := &pkiCA{cert: c, key: key, file: filepath.Join(dir, name+".pem")}
	writePEM(t, ca.file, "CERTIFICATE", der)
	return ca
}

// issue writes a certificate and key signed by the CA; it returns the
// file names and the certificate.
func (ca *pkiCA) issue(t *testing.T, dir, name string, subject pkix.Name, server bool) (certFile, keyFile string, c tls.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(12 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tpl.DNSNames = []string{"localhost"}
		tpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	return certFile, keyFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ---- the platform

type iotEnv struct {
	*testkit.Platform
	t        *testing.T
	dir      string
	serverCA *pkiCA
	mqtts    string
	amqps    string
}

// startIoT starts a platform with TLS listeners (a server certificate of
// serverCA) and, if userCA is set, the node client CA for users.
func startIoT(t *testing.T, withUserCA bool) (*iotEnv, *pkiCA) {
	dir := t.TempDir()
	serverCA := newPKICA(t, dir, "server-ca", pkix.Name{CommonName: "test server CA"})
	cert, key, _ := serverCA.issue(t, dir, "server", pkix.Name{CommonName: "localhost"}, true)
	var userCA *pkiCA
	if withUserCA {
		userCA = newPKICA(t, dir, "user-ca", pkix.Name{CommonName: "node users"})
	}
	p := testkit.Start(t, func(c *config.Config) {
		c.TLS.Cert, c.TLS.Key = cert, key
		if userCA != nil {
			c.TLS.ClientCA = userCA.file
		}
		c.Listeners.MQTTS = "127.0.0.1:0"
		c.Listeners.AMQPS = "127.0.0.1:0"
	})
	e := &iotEnv{Platform: p, t: t, dir: dir, serverCA: serverCA,
		mqtts: p.App.ListenerAddr("mqtts").String(), amqps: p.App.ListenerAddr("amqps").String()}
	return e, userCA
}

// in returns the environment for a subtest (helpers fail t).
func (e *iotEnv) in(t *testing.T) *iotEnv {
	c := *e
	c.t = t
	return &c
}

// v1 sends a /v1 request and checks its status.
func (e *iotEnv) v1(method, path string, body any, status int) []byte {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	resp := e.Do(e.t, method, path, r)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		e.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, status, b)
	}
	return b
}

// metric returns a counter's value from the platform's registry; labels
// are name=value pairs that must all match.
func (e *iotEnv) metric(name string, labels ...string) float64 {
	e.t.Helper()
	mfs, err := e.App.Registry().Gather()
	if err != nil {
		e.t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

// ---- clients

// pahoConnect connects an MQTT 5 client (paho.golang) and returns the
// CONNACK reason code; the client is disconnected on cleanup.
func (e *iotEnv) pahoConnect(user, pass string, tlsCert *tls.Certificate) (*paho.Client, byte) {
	e.t.Helper()
	var nc net.Conn
	var err error
	if tlsCert != nil {
		pool := x509.NewCertPool()
		pool.AddCert(e.serverCA.cert)
		nc, err = tls.Dial("tcp", e.mqtts, &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{*tlsCert}})
	} else {
		nc, err = net.Dial("tcp", e.MQTTAddr)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{Conn: nc})
	cp := &paho.Connect{ClientID: "dev-" + user, CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(pass), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if ack == nil {
		e.t.Fatalf("connect %s: no CONNACK: %v", user, err)
	}
	if ack.ReasonCode == 0 {
		e.t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	}
	return c, ack.ReasonCode
}

// mosquitto runs mosquitto_pub (MQTT 3.1.1) with -d and returns its
// output: "received CONNACK (0)" on success, "Connection Refused: ..."
// on refusal.
func (e *iotEnv) mosquitto(args ...string) string {
	e.t.Helper()
	bin := needClient(e.t, "mosquitto_pub")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := []string{"-d", "-V", "mqttv311", "-t", "telemetry", "-m", "x", "-q", "0", "-i", "mosq-dev"}
	out, _ := exec.CommandContext(ctx, bin, append(base, args...)...).CombinedOutput()
	return string(out)
}

func (e *iotEnv) mosquittoPassword(user, pass string) string {
	host, port, _ := net.SplitHostPort(e.MQTTAddr)
	return e.mosquitto("-h", host, "-p", port, "-u", user, "-P", pass)
}

const protonPython = "/usr/bin/python3"

// proton runs testdata/device_agent.py and fails unless it prints
// "OK <mode>".
func (e *iotEnv) proton(url, mode string, files ...string) string {
	e.t.Helper()
	needClient(e.t, protonPython, "-c", "import proton")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{filepath.Join("testdata", "device_agent.py"), url, mode}, files...)
	out, err := exec.CommandContext(ctx, protonPython, args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK "+mode) {
		e.t.Fatalf("proton %s %s: %v\n%s", url, mode, err, out)
	}
	return string(out)
}

// amqpSASLCode connects with go-amqp (SASL PLAIN) and returns nil or the
// error; the SASL outcome code is in its text.
func (e *iotEnv) amqpPlain(user, pass string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := goamqp.Dial(ctx, "amqp://"+e.AMQPAddr, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain(user, pass)})
	if err == nil {
		c.Close()
	}
	return err
}

const (
	mosqOK      = "received CONNACK (0)"
	mosqBadPass = "Connection Refused: bad user name or password"
	mosqNotAuth = "Connection Refused: not authorised"
)

func TestDevicePasswordAuthentication(t *testing.T) {
	e, _ := startIoT(t, false)
	// Hono's getting-started calls: a tenant, a device, its password.
	e.v1("POST", "/v1/tenants/iot", map[string]any{}, 201)
	e.v1("POST", "/v1/devices/iot/dev1", map[string]any{}, 201)
	setPassword := func(pw string, extra map[string]any) {
		secret := map[string]any{"pwd-plain": pw}
		cred := map[string]any{"type": "hashed-password", "auth-id": "sensor1", "secrets": []any{secret}}
		for k, v := range extra {
			if strings.HasPrefix(k, "secret.") {
				secret[strings.TrimPrefix(k, "secret.")] = v
			} else {
				cred[k] = v
			}
		}
		e.v1("PUT", "/v1/credentials/iot/dev1", []any{cred}, 204)
	}
	setPassword("secret1", nil)
	// A second device with Hono's salted SHA-512 hash.
	salt := []byte("salt-of-dev2")
	sum := sha512.Sum512(append(append([]byte{}, salt...), "secret2"...))
	e.v1("POST", "/v1/devices/iot/dev2", map[string]any{}, 201)
	e.v1("PUT", "/v1/credentials/iot/dev2", []any{map[string]any{"type": "hashed-password", "auth-id": "sensor2",
		"secrets": []any{map[string]any{"hash-function": "sha-512", "salt": base64.StdEncoding.EncodeToString(salt),
			"pwd-hash": base64.StdEncoding.EncodeToString(sum[:])}}}}, 204)

	t.Run("mosquitto", func(t *testing.T) {
		e := e.in(t)
		if out := e.mosquittoPassword("sensor1@iot", "secret1"); !strings.Contains(out, mosqOK) {
			t.Fatalf("device refused:\n%s", out)
		}
		if out := e.mosquittoPassword("sensor2@iot", "secret2"); !strings.Contains(out, mosqOK) {
			t.Fatalf("sha-512 device refused:\n%s", out)
		}
		for _, c := range [][2]string{{"sensor1@iot", "wrong"}, {"nobody@iot", "secret1"}, {"sensor2@iot", "secret1"}} {
			if out := e.mosquittoPassword(c[0], c[1]); !strings.Contains(out, mosqBadPass) {
				t.Fatalf("%s/%s:\n%s", c[0], c[1], out)
			}
		}
	})

	t.Run("mqtt5", func(t *testing.T) {
		e := e.in(t)
		c, rc := e.pahoConnect("sensor1@iot", "secret1", nil)
		if rc != 0 {
			t.Fatalf("CONNACK %#x", rc)
		}
		// A device has no ordinary addresses, only Hono's topics
		// (hono_test.go): SUBACK says "not authorized" (0x87) to
		// anything but a command subscription, PUBACK "topic name
		// invalid" (0x90) to a name that is not a Hono topic, and
		// telemetry without a consumer gets "no matching subscribers".
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "#", QoS: 1}, {Topic: "telemetry", QoS: 0}}})
		if err != nil && sa == nil {
			t.Fatal(err)
		}
		if len(sa.Reasons) != 2 || sa.Reasons[0] != 0x87 || sa.Reasons[1] != 0x87 {
			t.Fatalf("SUBACK %v", sa.Reasons)
		}
		pr, err := c.Publish(ctx, &paho.Publish{Topic: "some/address", QoS: 1, Payload: []byte("x")})
		if pr == nil || pr.ReasonCode != 0x90 {
			t.Fatalf("PUBACK %+v %v", pr, err)
		}
		pr, err = c.Publish(ctx, &paho.Publish{Topic: "telemetry", QoS: 1, Payload: []byte("x")})
		if pr == nil || pr.ReasonCode != 0x10 {
			t.Fatalf("PUBACK %+v %v", pr, err)
		}
		if _, rc := e.pahoConnect("sensor1@iot", "wrong", nil); rc != 0x86 {
			t.Fatalf("wrong password: CONNACK %#x", rc)
		}
		if _, rc := e.pahoConnect("ghost@iot", "secret1", nil); rc != 0x86 {
			t.Fatalf("unknown auth-id: CONNACK %#x", rc)
		}
		// The platform administrator (a user) is unchanged.
		if _, rc := e.pahoConnect(e.AdminUser, e.AdminPassword, nil); rc != 0 {
			t.Fatalf("admin user: CONNACK %#x", rc)
		}
	})

	t.Run("cache", func(t *testing.T) {
		e := e.in(t)
		// sensor1's verification is cached by now: another connect runs
		// no bcrypt.
		before := e.metric("throng_auth_bcrypt_comparisons_total")
		hits := e.metric("throng_auth_cache_hits_total")
		if _, rc := e.pahoConnect("sensor1@iot", "secret1", nil); rc != 0 {
			t.Fatalf("CONNACK %#x", rc)
		}
		if got := e.metric("throng_auth_bcrypt_comparisons_total"); got != before {
			t.Fatalf("a cached connect ran %v bcrypt comparisons", got-before)
		}
		if e.metric("throng_auth_cache_hits_total") != hits+1 {
			t.Fatal("no cache hit counted")
		}
	})

	t.Run("amqp", func(t *testing.T) {
		e := e.in(t)
		out := e.proton("amqp://sensor1%40iot:secret1@"+e.AMQPAddr, "ok")
		t.Log(strings.TrimSpace(out))
		e.proton("amqp://sensor1%40iot:wrong@"+e.AMQPAddr, "refused")
		e.proton("amqp://sensor2%40iot:secret2@"+e.AMQPAddr, "ok")
		// go-amqp tells the SASL outcome code: 1 (auth).
		if err := e.amqpPlain("sensor1@iot", "secret1"); err != nil {
			t.Fatal(err)
		}
		if err := e.amqpPlain("ghost@iot", "secret1"); err == nil || !strings.Contains(err.Error(), "code 0x1") {
			t.Fatalf("unknown auth-id: %v", err)
		}
	})

	t.Run("credential change", func(t *testing.T) {
		e := e.in(t)
		setPassword("secret1b", nil)
		// At once, for the next connection: the old password is refused
		// (it is cached), the new one accepted.
		if _, rc := e.pahoConnect("sensor1@iot", "secret1", nil); rc != 0x86 {
			t.Fatalf("old password after the change: CONNACK %#x", rc)
		}
		if _, rc := e.pahoConnect("sensor1@iot", "secret1b", nil); rc != 0 {
			t.Fatalf("new password: CONNACK %#x", rc)
		}
	})

	t.Run("refusals", func(t *testing.T) {
		e := e.in(t)
		reason := func(r string) float64 {
			return e.metric("throng_auth_device_failures_total", "adapter", "hono-mqtt", "reason", r)
		}
		check := func(what, r string, wantRC byte, mosq string) {
			t.Helper()
			n := reason(r)
			if _, rc := e.pahoConnect("sensor1@iot", "secret1b", nil); rc != wantRC {
				t.Fatalf("%s: CONNACK %#x, want %#x", what, rc, wantRC)
			}
			if out := e.mosquittoPassword("sensor1@iot", "secret1b"); !strings.Contains(out, mosq) {
				t.Fatalf("%s: mosquitto_pub:\n%s", what, out)
			}
			if reason(r) != n+2 {
				t.Fatalf("%s: %s counted %v times, want 2", what, r, reason(r)-n)
			}
		}
		e.v1("PUT", "/v1/devices/iot/dev1", map[string]any{"enabled": false}, 204)
		check("device disabled", "device-disabled", 0x86, mosqBadPass)
		e.v1("PUT", "/v1/devices/iot/dev1", map[string]any{"enabled": true}, 204)

		setPassword("secret1b", map[string]any{"enabled": false})
		check("credential disabled", "credential-disabled", 0x86, mosqBadPass)
		setPassword("secret1b", map[string]any{"secret.not-after": time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)})
		check("secret expired", "credential-expired", 0x86, mosqBadPass)
		setPassword("secret1b", nil)

		e.v1("PUT", "/v1/tenants/iot", map[string]any{"adapters": []any{
			map[string]any{"type": "hono-mqtt", "enabled": false}, map[string]any{"type": "hono-amqp", "enabled": true}}}, 204)
		check("adapter disabled", "adapter-disabled", 0x87, mosqNotAuth)
		e.proton("amqp://sensor1%40iot:secret1b@"+e.AMQPAddr, "ok") // AMQP is still enabled

		e.v1("PUT", "/v1/tenants/iot", map[string]any{"enabled": false}, 204)
		check("tenant disabled", "tenant-disabled", 0x87, mosqNotAuth)
		e.proton("amqp://sensor1%40iot:secret1b@"+e.AMQPAddr, "refused")
		if e.metric("throng_auth_device_failures_total", "adapter", "hono-amqp", "reason", "tenant-disabled") != 1 {
			t.Fatal("AMQP refusal not counted")
		}
		e.v1("PUT", "/v1/tenants/iot", map[string]any{}, 204)
		if _, rc := e.pahoConnect("sensor1@iot", "secret1b", nil); rc != 0 {
			t.Fatalf("enabled again: CONNACK %#x", rc)
		}
		for _, r := range []string{"wrong-secret", "unknown-auth-id"} {
			if reason(r) == 0 {
				t.Errorf("%s not counted", r)
			}
		}
	})
}

func TestDeviceCertificateAuthentication(t *testing.T) {
	e, userCA := startIoT(t, true)
	devCA := newPKICA(t, e.dir, "device-ca", pkix.Name{CommonName: "devices", Organization: []string{"ACME"}})
	e.v1("POST", "/v1/tenants/certs", map[string]any{"trusted-ca": []any{map[string]any{
		"id": "acme", "cert": base64.StdEncoding.EncodeToString(devCA.cert.Raw)}}}, 201)
	e.v1("POST", "/v1/devices/certs/cdev", map[string]any{}, 201)
	e.v1("PUT", "/v1/credentials/certs/cdev", []any{map[string]any{"type": "x509-cert", "auth-id": "CN=cdev,O=ACME", "secrets": []any{map[string]any{}}}}, 204)
	certFile, keyFile, tlsCert := devCA.issue(t, e.dir, "cdev", pkix.Name{CommonName: "cdev", Organization: []string{"ACME"}}, false)
	host, port, _ := net.SplitHostPort(e.mqtts)
	mosqTLS := func(e *iotEnv, cert, key string, extra ...string) string {
		return e.mosquitto(append([]string{"-h", host, "-p", port, "--cafile", e.serverCA.file, "--cert", cert, "--key", key}, extra...)...)
	}

	t.Run("mosquitto", func(t *testing.T) {
		e := e.in(t)
		// No user name: the certificate decides.
		if out := mosqTLS(e, certFile, keyFile); !strings.Contains(out, mosqOK) {
			t.Fatalf("device certificate refused:\n%s", out)
		}
	})
	t.Run("mqtt5", func(t *testing.T) {
		e := e.in(t)
		if _, rc := e.pahoConnect("", "", &tlsCert); rc != 0 {
			t.Fatalf("CONNACK %#x", rc)
		}
	})
	t.Run("amqp external", func(t *testing.T) {
		e := e.in(t)
		e.proton("amqps://"+e.amqps, "ok", e.serverCA.file, certFile, keyFile)
	})

	// A certificate of the tenant's CA for an unregistered device.
	ucert, ukey, utls := devCA.issue(t, e.dir, "unknown", pkix.Name{CommonName: "unknown", Organization: []string{"ACME"}}, false)
	t.Run("unknown device", func(t *testing.T) {
		e := e.in(t)
		if _, rc := e.pahoConnect("", "", &utls); rc != 0x86 {
			t.Fatalf("CONNACK %#x", rc)
		}
		if out := mosqTLS(e, ucert, ukey); !strings.Contains(out, mosqBadPass) {
			t.Fatalf("mosquitto_pub:\n%s", out)
		}
		e.proton("amqps://"+e.amqps, "refused", e.serverCA.file, ucert, ukey)
		if e.metric("throng_auth_device_failures_total", "reason", "unknown-auth-id") != 3 {
			t.Fatalf("refusals counted %v", e.metric("throng_auth_device_failures_total", "reason", "unknown-auth-id"))
		}
	})

	t.Run("auto-provisioning", func(t *testing.T) {
		e := e.in(t)
		e.v1("PUT", "/v1/tenants/certs", map[string]any{"trusted-ca": []any{map[string]any{
			"id": "acme", "cert": base64.StdEncoding.EncodeToString(devCA.cert.Raw),
			"auto-provisioning-enabled": true, "auto-provisioning-device-id-template": "auto-{{subject-cn}}"}}}, 204)
		if out := mosqTLS(e, ucert, ukey); !strings.Contains(out, mosqOK) {
			t.Fatalf("auto-provisioning connect:\n%s", out)
		}
		var d map[string]any
		if err := json.Unmarshal(e.v1("GET", "/v1/devices/certs/auto-unknown", nil, 200), &d); err != nil {
			t.Fatal(err)
		}
		if st, _ := d["status"].(map[string]any); st == nil || st["auto-provisioned"] != true {
			t.Fatalf("provisioned device %v", d)
		}
		// The second connection finds it.
		if _, rc := e.pahoConnect("", "", &utls); rc != 0 {
			t.Fatalf("CONNACK %#x", rc)
		}
	})

	t.Run("device disabled", func(t *testing.T) {
		e := e.in(t)
		e.v1("PUT", "/v1/devices/certs/cdev", map[string]any{"enabled": false}, 204)
		if _, rc := e.pahoConnect("", "", &tlsCert); rc != 0x86 {
			t.Fatalf("CONNACK %#x", rc)
		}
		e.proton("amqps://"+e.amqps, "refused", e.serverCA.file, certFile, keyFile)
		e.v1("PUT", "/v1/devices/certs/cdev", map[string]any{}, 204)
	})

	t.Run("foreign certificate", func(t *testing.T) {
		e := e.in(t)
		// Neither the node's client CA nor a trust anchor: the TLS
		// handshake fails (tls.clientCA is configured).
		other := newPKICA(t, e.dir, "other-ca", pkix.Name{CommonName: "other"})
		fcert, fkey, _ := other.issue(t, e.dir, "foreign", pkix.Name{CommonName: "cdev", Organization: []string{"ACME"}}, false)
		if out := mosqTLS(e, fcert, fkey); strings.Contains(out, "CONNACK") {
			t.Fatalf("foreign certificate got a CONNACK:\n%s", out)
		}
	})

	t.Run("user EXTERNAL", func(t *testing.T) {
		e := e.in(t)
		// A user's certificate from the node's client CA still
		// authenticates the user over SASL EXTERNAL.
		_, _, ut := userCA.issue(t, e.dir, "admin", pkix.Name{CommonName: "admin", Organization: []string{"default"}}, false)
		pool := x509.NewCertPool()
		pool.AddCert(e.serverCA.cert)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c, err := goamqp.Dial(ctx, "amqps://"+e.amqps, &goamqp.ConnOptions{
			SASLType:  goamqp.SASLTypeExternal(""),
			TLSConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{ut}},
		})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := c.NewSession(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		snd, err := s.NewSender(ctx, "user/ext", nil)
		if err != nil {
			t.Fatalf("admin user may send: %v", err)
		}
		_ = snd.Close(ctx)
		// go-amqp with a device's certificate: the device.
		dc, err := goamqp.Dial(ctx, "amqps://"+e.amqps, &goamqp.ConnOptions{
			SASLType:  goamqp.SASLTypeExternal(""),
			TLSConfig: &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{tlsCert}},
		})
		if err != nil {
			t.Fatalf("device over go-amqp EXTERNAL: %v", err)
		}
		ds, err := dc.NewSession(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ds.NewSender(ctx, "user/ext", nil); err == nil || !strings.Contains(err.Error(), "unauthorized-access") {
			t.Fatalf("device sender: %v", err)
		}
		dc.Close()
	})
}
