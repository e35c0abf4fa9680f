package tenant

import "testing"

func TestLimitsOver(t *testing.T) {
	plan := Limits{MaxConnections: 10, MaxAddresses: 5, MaxMessagesInPerSecond: 100, Burst: 500, MaxMessagesInPerSecondPerConnection: 10, MaxStoredBytes: 1 << 20}
	// Zero fields inherit; set ones override.
	got := Limits{MaxAddresses: 50}.Over(plan)
	want := plan
	want.MaxAddresses = 50
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	// An own rate keeps its own burst (0: one second's worth).
	got = Limits{MaxMessagesInPerSecond: 1000}.Over(plan)
	if got.MaxMessagesInPerSecond != 1000 || got.Burst != 0 {
		t.Fatalf("own rate: %+v", got)
	}
	if got := (Limits{}).Over(Limits{}); got != (Limits{}) {
		t.Fatalf("no plan: %+v", got)
	}
	// A tenant outside a store has its own limits.
	tn := &Tenant{Limits: Limits{MaxUsers: 3}}
	if tn.Effective().MaxUsers != 3 {
		t.Fatal("Effective without a store")
	}
}
