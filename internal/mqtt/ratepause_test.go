package mqtt

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/quota"
	"github.com/throngmq/throng/internal/router"
)

// A publish refused over a message rate pauses the connection's reading
// for the time the rate needs for it (backpressure, evread.go), bounded
// by maxRatePause; other refusals do not.
func TestOverRatePause(t *testing.T) {
	var in inbuf
	over := func(l quota.Limit, rate float64) error {
		return fmt.Errorf("%w: %w", router.ErrLimitExceeded, &quota.Error{Tenant: "acme", Limit: l, Rate: rate})
	}
	for range 5 {
		in.overRate(over(quota.MessagesIn, 100))
	}
	in.overRate(over(quota.MessagesInPerConnection, 50))
	if want := 5*10*time.Millisecond + 20*time.Millisecond; in.pause != want {
		t.Fatalf("pause %v, want %v", in.pause, want)
	}
	in.pause = 0
	in.overRate(over(quota.Retained, 0))
	in.overRate(errors.New("other"))
	in.overRate(router.ErrLimitExceeded) // a size limit: no *quota.Error
	if in.pause != 0 {
		t.Fatalf("pause %v for refusals that are not over a rate", in.pause)
	}
	for range 10_000 {
		in.overRate(over(quota.MessagesIn, 1))
	}
	if in.pause > maxRatePause+time.Second {
		t.Fatalf("pause grew to %v", in.pause)
	}
}
