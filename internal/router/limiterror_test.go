package router

import (
	"errors"
	"fmt"
	"testing"

	"github.com/throngmq/throng/internal/quota"
)

// The rate refusal's error is made lazily but reads and unwraps as the
// fmt.Errorf("%w: %w") it replaces.
func TestLimitErrorLazy(t *testing.T) {
	qe := &quota.Error{Tenant: "acme", Limit: quota.MessagesIn, Max: 5}
	var err error = &limitError{qe}
	if want := fmt.Errorf("%w: %w", ErrLimitExceeded, qe).Error(); err.Error() != want {
		t.Fatalf("%q, want %q", err.Error(), want)
	}
	var got *quota.Error
	if !errors.Is(err, ErrLimitExceeded) || !errors.As(err, &got) || got != qe {
		t.Fatalf("unwrap: %v %v", errors.Is(err, ErrLimitExceeded), got)
	}
	if n := testing.AllocsPerRun(100, func() { err = &limitError{qe} }); n > 1 {
		t.Fatalf("%v allocations per refusal", n)
	}
}
