package registry

import (
	"context"
	"slices"
	"testing"
)

func TestGroupMembers(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	mustCreate(t, s, "acme", "gw-b", &Device{MemberOf: []string{"north", "south"}})
	mustCreate(t, s, "acme", "gw-a", &Device{MemberOf: []string{"north"}})
	mustCreate(t, s, "acme", "dev", &Device{ViaGroups: []string{"north"}})
	mustCreate(t, s, "other", "gw-c", &Device{MemberOf: []string{"north"}})

	got, err := s.GroupMembers(ctx, "acme", "north")
	if err != nil || !slices.Equal(got, []string{"gw-a", "gw-b"}) {
		t.Fatalf("north = %v, %v", got, err)
	}
	if got, _ := s.GroupMembers(ctx, "acme", "south"); !slices.Equal(got, []string{"gw-b"}) {
		t.Fatalf("south = %v", got)
	}
	if got, _ := s.GroupMembers(ctx, "acme", "west"); len(got) != 0 {
		t.Fatalf("west = %v", got)
	}
	if got, _ := s.GroupMembers(ctx, "nobody", "north"); len(got) != 0 {
		t.Fatalf("unknown tenant = %v", got)
	}
	// A writer reads its own writes: leaving a group, and deleting.
	if _, err := s.UpdateDevice(ctx, "acme", "gw-b", &Device{MemberOf: []string{"south"}}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDevice(ctx, "acme", "gw-a", ""); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GroupMembers(ctx, "acme", "north"); len(got) != 0 {
		t.Fatalf("north after changes = %v", got)
	}
	// The Tenant API the hono package reads.
	if ten, ok := s.Tenant("acme"); !ok || ten.Name != "acme" {
		t.Fatalf("Tenant(acme) = %v, %v", ten, ok)
	}
	if _, ok := s.Tenant("nobody"); ok {
		t.Fatal("Tenant(nobody) found")
	}
}

// Indexed answers from this node's index, without the engine: a device
// written here is in it at once (a writer reads its own writes), a
// deleted one is not.
func TestIndexed(t *testing.T) {
	_, s, _ := setup(t)
	<-s.Loaded()
	mustCreate(t, s, "acme", "d1", &Device{})
	if known, loaded := s.Indexed("acme", "d1"); !known || !loaded {
		t.Fatalf("d1 after its creation: known %v, loaded %v", known, loaded)
	}
	for _, c := range [][2]string{{"acme", "d2"}, {"other", "d1"}} {
		if known, loaded := s.Indexed(c[0], c[1]); known || !loaded {
			t.Fatalf("%s of %s, never created: known %v, loaded %v", c[1], c[0], known, loaded)
		}
	}
	if err := s.DeleteDevice(context.Background(), "acme", "d1", ""); err != nil {
		t.Fatal(err)
	}
	if known, _ := s.Indexed("acme", "d1"); known {
		t.Fatal("d1 still indexed after its deletion")
	}
}
