package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
)

// knownWrong remembers passwords that failed against a stored bcrypt
// hash, so that the same password against the same hash is refused
// without a comparison: the result cannot change until the hash does
// (and a new hash is a new key). It takes the CPU out of the commonest
// failed logins, a device or application reconnecting in a loop with a
// stale password, and out of a guesser's repeated tries.
//
// Entries are keyed by an HMAC of the hash and the password under a key
// made at start, never the password: a memory dump shows neither the
// wrong passwords (often near misses of right ones) nor an unsalted
// digest of them. The set is bounded; when full it starts afresh.
type knownWrong struct {
	secret []byte

	mu   sync.Mutex
	keys map[[sha256.Size]byte]struct{} // guarded by mu
}

// maxKnownWrong bounds the set (about 64 bytes an entry).
const maxKnownWrong = 1 << 14

func newKnownWrong() *knownWrong {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return &knownWrong{secret: k, keys: map[[sha256.Size]byte]struct{}{}}
}

func (w *knownWrong) key(hash []byte, password string) [sha256.Size]byte {
	m := hmac.New(sha256.New, w.secret)
	m.Write(hash)
	m.Write([]byte{0})
	m.Write([]byte(password))
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

func (w *knownWrong) has(k [sha256.Size]byte) bool {
	w.mu.Lock()
	_, ok := w.keys[k]
	w.mu.Unlock()
	return ok
}

func (w *knownWrong) add(k [sha256.Size]byte) {
	w.mu.Lock()
	if len(w.keys) >= maxKnownWrong {
		w.keys = map[[sha256.Size]byte]struct{}{}
	}
	w.keys[k] = struct{}{}
	w.mu.Unlock()
}
