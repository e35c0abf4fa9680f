package amqp

import (
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// protonPython is Debian's interpreter with python3-qpid-proton.
const protonPython = "/usr/bin/python3"

// requireProton skips when Proton is missing, except in CI (CI=true), where
// a missing client must fail the run rather than hide it.
func requireProton(t *testing.T) {
	t.Helper()
	if err := exec.Command(protonPython, "-c", "import proton").Run(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("python3-qpid-proton is required in CI (apt-get install -y python3-qpid-proton): %v", err)
		}
		t.Skipf("python3-qpid-proton not installed: %v", err)
	}
}

func TestProtonInterop(t *testing.T) {
	requireProton(t)
	pki := newPKI(t, "unused", "unused")
	e := startEnv(t, nil)
	e.tenant(t, &tenant.Tenant{Name: "acme"})
	e.user(t, "acme", "alice", "secret")
	for _, q := range []string{"interop/q", "interop/work", "interop/requests", "interop/outcomes", "interop/settle", "interop/big", "DLQ"} {
		e.addrDef(t, "default", &address.Address{Name: q, Type: address.Queue})
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", pki.serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.srv.Serve(ln) }()
	script := filepath.Join("interop", "proton_client.py")
	ca := filepath.Join(pki.dir, "ca.pem")
	for _, sc := range []string{"queue_send_receive", "competing_consumers", "request_response", "outcomes",
		"presettled_and_unsettled", "large_message", "sasl_plain", "sasl_anonymous", "tls"} {
		t.Run(sc, func(t *testing.T) {
			url := "amqp://" + e.addr
			if sc == "tls" {
				url = "amqp://" + ln.Addr().String()
			}
			out, err := exec.CommandContext(ctxT(t), protonPython, script, url, sc, ca).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "OK "+sc) {
				t.Fatalf("%s: %v\n%s", sc, err, out)
			}
		})
	}
}
