package engine

import (
	"os"
	"syscall"
)

func fallocate(f *os.File, size int64) error {
	if err := syscall.Fallocate(int(f.Fd()), 0, 0, size); err == nil {
		return nil
	}
	return writeZeros(f, size)
}
