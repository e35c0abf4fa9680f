package bridge

import (
	"errors"
	"testing"

	"github.com/throngmq/throng/internal/tenant"
)

func TestMappingRewrites(t *testing.T) {
	for _, c := range []struct {
		m             Mapping
		local, remote string
		ok            bool
	}{
		{Mapping{Filter: "sensors/#"}, "sensors/a/t", "sensors/a/t", true},
		{Mapping{Filter: "up/#", RemotePrefix: "site1/"}, "up/x", "site1/up/x", true},
		{Mapping{Filter: "#", LocalPrefix: "cmd/", RemotePrefix: "site1/cmd/"}, "cmd/valve", "site1/cmd/valve", true},
		{Mapping{Filter: "+/t", LocalPrefix: "a/"}, "a/x/t", "x/t", true},
		{Mapping{Filter: "+/t", LocalPrefix: "a/"}, "b/x/t", "", false},
		{Mapping{Filter: "up/#"}, "down/x", "", false},
	} {
		r, ok := c.m.ToRemote(c.local)
		if ok != c.ok || r != c.remote {
			t.Errorf("%+v ToRemote(%q) = %q %v, want %q %v", c.m, c.local, r, ok, c.remote, c.ok)
		}
		if !c.ok {
			continue
		}
		if l, ok := c.m.ToLocal(c.remote); !ok || l != c.local {
			t.Errorf("%+v ToLocal(%q) = %q %v, want %q", c.m, c.remote, l, ok, c.local)
		}
	}
	if _, ok := (Mapping{Filter: "up/#", RemotePrefix: "site1/"}).ToLocal("site2/up/x"); ok {
		t.Error("another prefix mapped")
	}
}

func TestValidateDefaults(t *testing.T) {
	b := &Bridge{Name: "cloud", Remote: Remote{URL: "mqtts://broker.example.com"}, Mappings: []Mapping{{Filter: "a/#"}}}
	if err := b.Validate(); err != nil {
		t.Fatal(err)
	}
	if b.Kind != KindMQTT || b.Direction != Out || b.qos() != 1 || b.bufferLimit() != DefaultBufferLimit || b.window() != DefaultWindow || b.overflow() != OverflowKeep {
		t.Fatalf("defaults: %+v", b)
	}
	u, _ := b.remoteURL()
	if u.Scheme != "tls" || u.Host != "broker.example.com:8883" {
		t.Fatalf("url %v", u)
	}
	cfg, err := b.tlsConfig()
	if err != nil || cfg.ServerName != "broker.example.com" {
		t.Fatalf("tls %+v %v", cfg, err)
	}
	bad := &Bridge{Name: "x", Remote: Remote{URL: "mqtt://h"}, Mappings: []Mapping{{Filter: "#", LocalPrefix: "$SYS/"}}}
	if err := bad.Validate(); !errors.Is(err, tenant.ErrInvalid) {
		t.Fatalf("a $ local filter: %v", err)
	}
	r := (&Bridge{Remote: Remote{Password: "p", ClientKey: "k"}}).Redacted()
	if r.Remote.Password != "********" || r.Remote.ClientKey != "********" {
		t.Fatalf("redacted %+v", r.Remote)
	}
}
