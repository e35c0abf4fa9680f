//go:build !unix

package engine

import (
	"math"
	"os"
)

// Without statfs the guard sees unlimited space: it never raises the alarm.
func diskFree(string) (int64, error) { return math.MaxInt64 / 4, nil }

func diskSize(string) (int64, error) { return 0, nil }

func allocate(f *os.File, size int64) error { return writeZeros(f, size) }
