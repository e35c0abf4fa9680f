package bridge

import (
	"context"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/tenant"
)

// TestOpenStoreKeepsExistingBuckets: an existing bucket is opened as it
// is, never updated. In a cluster an update needs every replica's node,
// so a node restarting while another was down waited for it (the tenant
// and registry stores already opened theirs this way). The operator's
// description stands in for any setting an update would have rewritten.
func TestOpenStoreKeepsExistingBuckets(t *testing.T) {
	e, err := engine.Start(engine.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	nc, err := e.Connect(engine.SystemAccount)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{bucket, ownersBucket} {
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: b, Description: "made before", History: 1, Storage: jetstream.FileStorage,
		}); err != nil {
			t.Fatal(err)
		}
	}
	tenants, err := tenant.Open(ctx, nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tenants.Close)
	s, err := OpenStore(ctx, nc, tenants, slog.New(slog.DiscardHandler), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for _, b := range []string{bucket, ownersBucket} {
		kv, err := js.KeyValue(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		st, err := kv.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d := st.(*jetstream.KeyValueBucketStatus).StreamInfo().Config.Description; d != "made before" {
			t.Errorf("bucket %s was updated at open: description %q", b, d)
		}
	}

	// A missing bucket is still created.
	for _, b := range []string{bucket, ownersBucket} {
		if err := js.DeleteKeyValue(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	s2, err := OpenStore(ctx, nc, tenants, slog.New(slog.DiscardHandler), 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s2.Close)
	for _, b := range []string{bucket, ownersBucket} {
		if _, err := js.KeyValue(ctx, b); err != nil {
			t.Errorf("bucket %s not created: %v", b, err)
		}
	}
}
