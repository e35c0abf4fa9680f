package testkit_test

import (
	"context"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
	"github.com/throngmq/throng/internal/testkit"
)

func TestStartAndRestart(t *testing.T) {
	p := testkit.Start(t)
	resp := p.Do(t, "GET", "/readyz", nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz = %d", resp.StatusCode)
	}
	if _, ok := p.Store.Tenant(tenant.Default); !ok {
		t.Fatal("default tenant missing")
	}
	ctx := context.Background()
	if err := p.Router.CreateTenant(ctx, &tenant.Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Router.CreateAddress(ctx, "acme", &address.Address{Name: "orders/eu", Type: address.Queue}); err != nil {
		t.Fatal(err)
	}
	p.Restart(t)
	if p.AdminURL == "" {
		t.Fatal("no admin URL after restart")
	}
	if _, ok := p.Store.Address("acme", "orders/eu"); !ok {
		t.Fatal("address lost across restart")
	}
	resp = p.Do(t, "GET", "/api/tenants/acme/addresses/orders/eu", nil)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET address after restart = %d %s", resp.StatusCode, b)
	}
}

func TestEventually(t *testing.T) {
	var n atomic.Int32
	go func() {
		for i := 0; i < 3; i++ {
			time.Sleep(5 * time.Millisecond)
			n.Add(1)
		}
	}()
	testkit.Eventually(t, 5*time.Second, func() bool { return n.Load() == 3 })
}
