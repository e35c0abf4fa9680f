package tenant

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/engine"
)

func openStore(t *testing.T, e *engine.Engine) *Store {
	t.Helper()
	nc, err := e.Connect(engine.SystemAccount)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	s, err := Open(context.Background(), nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestStore(t *testing.T) {
	e, err := engine.Start(engine.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	ctx := context.Background()
	s := openStore(t, e)
	other := openStore(t, e) // a second node's view of the same buckets

	if err := s.CreateTenant(ctx, &Tenant{Name: "Bad Name"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	if err := s.CreateTenant(ctx, &Tenant{Name: "acme", AutoCreate: []AutoCreateRule{{Pattern: "jobs/#/x", Type: address.Queue}}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad rule: %v", err)
	}
	if err := s.CreateTenant(ctx, &Tenant{Name: "acme", Limits: Limits{MaxAddresses: 1, MaxUsers: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTenant(ctx, &Tenant{Name: "acme"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if err := s.CreateAddress(ctx, "acme", &address.Address{Name: "q", Type: address.Queue}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAddress(ctx, "acme", &address.Address{Name: "q2", Type: address.Queue}); !errors.Is(err, ErrLimit) {
		t.Fatalf("address limit: %v", err)
	}
	if err := s.CreateAddress(ctx, "nope", &address.Address{Name: "q", Type: address.Queue}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
	u := &User{Name: "app", Tenant: "acme", PasswordHash: "x", Roles: []Role{RoleApp},
		Permissions: []Permission{{Pattern: "orders/${user}/#", Actions: []Action{ActionSend}}}}
	if err := s.PutUser(ctx, u, true); err != nil {
		t.Fatal(err)
	}
	if err := s.PutUser(ctx, &User{Name: "b", Tenant: "acme", Roles: []Role{RoleApp}}, true); !errors.Is(err, ErrLimit) {
		t.Fatalf("user limit: %v", err)
	}
	if err := s.PutUser(ctx, &User{Name: "x@y", Tenant: "acme", Roles: []Role{RoleApp}}, true); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad user: %v", err)
	}
	// The other node sees everything through its watch.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, okT := other.Tenant("acme")
		_, okA := other.Address("acme", "q")
		_, okU := other.User("acme", "app")
		if okT && okA && okU {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("other node: tenant %v address %v user %v", okT, okA, okU)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.DeleteTenant(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Address("acme", "q"); ok {
		t.Fatal("address survived tenant deletion")
	}
	for {
		if _, ok := other.Tenant("acme"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("deletion not seen by the other node")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMaxMessageSizeCeiling(t *testing.T) {
	tn := &Tenant{Name: "big", Limits: Limits{MaxMessageSize: 256 << 20}}
	if err := tn.Validate(); err != nil {
		t.Fatal(err)
	}
	tn.Limits.MaxMessageSize++
	if err := tn.Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("257 MiB: %v", err)
	}
}
