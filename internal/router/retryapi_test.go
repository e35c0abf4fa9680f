package router

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// retryAPI asks again after "JetStream system temporarily unavailable"
// (a meta leader change), wrapped or not, and not after other API errors.
func TestRetryAPIUnavailable(t *testing.T) {
	unavailable := &jetstream.APIError{Code: 503, ErrorCode: jsErrNotAvailable, Description: "JetStream system temporarily unavailable"}
	for _, first := range []error{unavailable, fmt.Errorf("read retained: %w", unavailable)} {
		tries := 0
		v, err := retryAPI(context.Background(), func(context.Context) (int, error) {
			tries++
			if tries < 3 {
				return 0, first
			}
			return 42, nil
		})
		if err != nil || v != 42 || tries != 3 {
			t.Fatalf("after %v: %d, %v in %d tries; want 42 after 3", first, v, err, tries)
		}
	}

	tries := 0
	_, err := retryAPI(context.Background(), func(context.Context) (int, error) {
		tries++
		return 0, jetstream.ErrConsumerNotFound
	})
	if tries != 1 || err != jetstream.ErrConsumerNotFound {
		t.Fatalf("not found: %v after %d tries; want it at once", err, tries)
	}

	// Unavailable until ctx ends: the error, not a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 3*apiUnavailablePause)
	defer cancel()
	start := time.Now()
	_, err = retryAPI(ctx, func(context.Context) (int, error) { return 0, unavailable })
	if !jsUnavailable(err) || time.Since(start) > 2*time.Second {
		t.Fatalf("always unavailable: %v after %s", err, time.Since(start))
	}
}
