//go:build !unix

package app

import "os"

// tryLock is a no-op where flock is not available: the data directory is
// not protected against a second node there (docs/operations.md).
func tryLock(*os.File) error { return nil }
