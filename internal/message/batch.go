package message

import (
	"encoding/binary"
	"fmt"
)

// A batch is several messages stored as one engine entry. The router
// groups the messages a busy producer sends to a queue while earlier
// entries are still being stored (group commit): the engine's cost is per
// entry, so this is what lets a queue go past the engine's per-message
// rate. A batch also carries the deliveries its messages already had
// when the router re-stores some messages of an entry (see
// router/batch.go).
//
// Encoding: batchV1, uvarint prior deliveries, uvarint count, then count
// times (uvarint length, message encoding). A single message is stored
// without this framing (version1), so entries written before batches
// existed, and most entries at low load, decode as before.
const batchV1 = 0xB1

// MaxBatch bounds the messages of one batch (the decoder refuses more).
const MaxBatch = 1024

// IsBatch reports whether an engine entry holds a batch.
func IsBatch(b []byte) bool { return len(b) > 0 && b[0] == batchV1 }

// AppendBatch appends the batch encoding of already-encoded messages
// (each produced by Message.Append) to b.
func AppendBatch(b []byte, prior uint64, encoded [][]byte) []byte {
	b = append(b, batchV1)
	b = binary.AppendUvarint(b, prior)
	b = binary.AppendUvarint(b, uint64(len(encoded)))
	for _, e := range encoded {
		b = binary.AppendUvarint(b, uint64(len(e)))
		b = append(b, e...)
	}
	return b
}

// BatchOverhead is an upper bound of the framing a batch adds to n
// messages of at most size bytes each.
func BatchOverhead(n int) int { return 1 + 2*binary.MaxVarintLen64 + n*binary.MaxVarintLen32 }

// UnmarshalBatch decodes a batch. The messages alias b.
func UnmarshalBatch(b []byte) (prior uint64, msgs []*Message, err error) {
	if !IsBatch(b) {
		return 0, nil, fmt.Errorf("%w: not a batch", ErrDecode)
	}
	b = b[1:]
	prior, k := binary.Uvarint(b)
	if k <= 0 {
		return 0, nil, fmt.Errorf("%w: batch prior deliveries", ErrDecode)
	}
	b = b[k:]
	n, k := binary.Uvarint(b)
	// Each message takes at least two bytes (length and version), which
	// bounds the slice allocated from the count.
	if k <= 0 || n == 0 || n > MaxBatch || n > uint64(len(b)-k)/2 {
		return 0, nil, fmt.Errorf("%w: batch count", ErrDecode)
	}
	b = b[k:]
	msgs = make([]*Message, 0, n)
	for i := uint64(0); i < n; i++ {
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return 0, nil, fmt.Errorf("%w: batch message %d length", ErrDecode, i)
		}
		m, err := Unmarshal(b[k : k+int(l)])
		if err != nil {
			return 0, nil, fmt.Errorf("batch message %d: %w", i, err)
		}
		msgs = append(msgs, m)
		b = b[k+int(l):]
	}
	if len(b) != 0 {
		return 0, nil, fmt.Errorf("%w: trailing bytes after batch", ErrDecode)
	}
	return prior, msgs, nil
}
