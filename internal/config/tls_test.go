package config

import (
	"crypto/tls"
	"strings"
	"testing"
)

func TestTLSAndAbuseSettings(t *testing.T) {
	for in, want := range map[string]uint16{"": tls.VersionTLS12, "1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13, "TLS1.1": tls.VersionTLS11, "1.0": tls.VersionTLS10} {
		if v, err := TLSVersion(in); err != nil || v != want {
			t.Errorf("TLSVersion(%q) = %x %v", in, v, err)
		}
	}
	if _, err := TLSVersion("1.4"); err == nil {
		t.Error("TLSVersion(1.4) accepted")
	}
	ids, err := CipherSuites("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
	if err != nil || len(ids) != 2 || ids[0] != tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 {
		t.Fatalf("CipherSuites: %v %v", ids, err)
	}
	for _, bad := range []string{"TLS_NOPE", "TLS_AES_128_GCM_SHA256"} {
		if _, err := CipherSuites(bad); err == nil {
			t.Errorf("CipherSuites(%q) accepted", bad)
		}
	}
	ps, err := Prefixes("127.0.0.1, ::1, 10.0.0.0/8, ::ffff:192.0.2.1")
	if err != nil || len(ps) != 4 || ps[0].String() != "127.0.0.1/32" || ps[3].String() != "192.0.2.1/32" {
		t.Fatalf("Prefixes: %v %v", ps, err)
	}
	if _, err := Prefixes("10.0.0.0/33"); err == nil {
		t.Error("a bad prefix accepted")
	}

	// Defaults, and every problem reported with its key.
	d := Default()
	if d.Connections.RatePerSource != 200 || d.Connections.BurstPerSource != 400 || d.TLS.MinVersion != "1.2" ||
		d.Connections.LoginBackoff != DefaultLoginBackoff || d.Connections.UnlimitedSources != "127.0.0.0/8, ::1" {
		t.Fatalf("defaults %+v %+v", d.Connections, d.TLS)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	_, err = Load("", []string{"THRONG_TLS_MIN_VERSION=1.1", "THRONG_RATE_PER_SOURCE=0"}, []string{"--tls-ciphers", "TLS_BAD", "--unlimited-sources", "nope", "--max-half-open", "-1", "--tls-crl", "/no/such/file"})
	for _, want := range []string{"tls.ciphers", "connections.unlimitedSources", "connections.maxHalfOpen", "tls.crl"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s not reported: %v", want, err)
		}
	}
	c, err := Load("", []string{"THRONG_TLS_MIN_VERSION=1.3", "THRONG_LOGIN_BACKOFF=0"}, []string{"--rate-per-source", "0"})
	if err != nil || c.TLS.MinVersion != "1.3" || c.Connections.LoginBackoff != 0 || c.Connections.RatePerSource != 0 {
		t.Fatalf("%+v %v", c, err)
	}
}
