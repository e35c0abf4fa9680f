package mqtt

import (
	"testing"
	"unsafe"
)

// TestConnSize keeps an idle connection's own struct within the 512-byte
// allocation class (docs/mqtt.md, memory per idle connection; DESIGN §9:
// ≤ 2 KiB per idle connection in all). State only some connections need
// belongs behind a pointer (connExtra, connSetup, producerCache): one
// field too many moves every connection to the 576- or 640-byte class.
func TestConnSize(t *testing.T) {
	if n := unsafe.Sizeof(conn{}); n > 416 {
		t.Fatalf("conn is %d bytes, more than 416 (the 416-byte size class; docs/mqtt.md)", n)
	} else {
		t.Logf("conn is %d bytes", n)
	}
}
