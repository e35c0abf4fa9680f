package app

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// LockFile is the name of the lock file in the data directory. A node holds
// an exclusive lock on it from before the engine starts until after the
// engine has stopped: two nodes writing one JetStream store corrupt it (a
// second node used to start, print "throng ready", and after a restart the
// engine found a corrupt state file and acknowledged messages were gone).
const LockFile = "throng.lock"

// DataDirLockedError is returned by Run when another node (another process,
// or another App in this process) holds the data directory.
type DataDirLockedError struct {
	Dir string
	// PID is the holder's process id as written in the lock file, 0 when it
	// could not be read (the holder has not written it yet).
	PID int
}

func (e *DataDirLockedError) Error() string {
	holder := "another throng process (PID unknown)"
	if e.PID > 0 {
		holder = "throng process PID " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("data directory %s is in use by %s; "+
		"each node needs its own data directory (lock file %s)",
		e.Dir, holder, filepath.Join(e.Dir, LockFile))
}

// errWouldBlock is returned by tryLock when the lock is held elsewhere.
var errWouldBlock = errors.New("lock held")

// dirLock is a held data-directory lock.
type dirLock struct {
	f *os.File
}

// lockDataDir creates dir if needed and takes the exclusive lock on its
// lock file without waiting, then records this process's PID in it. The
// lock belongs to the open file: it is released by unlock, or by the
// kernel when the process dies (so a kill -9 leaves no stale lock; the
// stale PID left in the file is harmless). Each call opens the file anew,
// so two Apps in one process exclude each other as well.
func lockDataDir(dir string) (*dirLock, error) {
	if err := CheckDataDir(dir); err != nil {
		return nil, fmt.Errorf("app: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("app: data directory: %w", err)
	}
	path := filepath.Join(dir, LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("app: data directory lock: %w", err)
	}
	if err := tryLock(f); err != nil {
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return nil, &DataDirLockedError{Dir: dir, PID: readPID(path)}
		}
		return nil, fmt.Errorf("app: data directory lock %s: %w", path, err)
	}
	// Only the holder writes, so truncating first cannot clobber a PID.
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		if err == nil {
			err = f.Sync()
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("app: data directory lock %s: %w", path, err)
		}
	}
	return &dirLock{f: f}, nil
}

// unlock clears the PID (a reader then never names a process that has
// stopped) and releases the lock. The file itself stays: removing it would
// let a node that opened the old file and one that creates a new one both
// think they hold the lock.
func (l *dirLock) unlock() {
	if l == nil || l.f == nil {
		return
	}
	_ = l.f.Truncate(0)
	_ = l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
}

func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// StoreDir is the engine's directory in the data directory.
const StoreDir = "jetstream"

// CheckDataDir checks that a node can use dir as its data directory: it
// is a directory, or can be created (the nearest existing parent is a
// directory where one can be created), it is writable, and its store
// directory, if there, is a directory. It tries what the node will do
// (create a file, or a directory in the parent) and removes what it
// created, because permission bits do not tell (root passes them all,
// /proc refuses root too, a read-only mount refuses everyone). Used by
// serve --check and before the node starts, so that a bad directory is
// reported with its cause instead of as an engine that never gets ready.
func CheckDataDir(dir string) error {
	if dir == "" {
		return errors.New("data directory: not set")
	}
	fail := func(err error) error { return fmt.Errorf("data directory %s: %w", dir, err) }
	fi, err := os.Stat(dir)
	switch {
	case err == nil && !fi.IsDir():
		return fail(errors.New("not a directory"))
	case err == nil:
		f, err := os.CreateTemp(dir, ".throng-check-*")
		if err != nil {
			return fail(fmt.Errorf("not writable: %w", cause(err)))
		}
		f.Close()
		os.Remove(f.Name())
		if fi, err := os.Stat(filepath.Join(dir, StoreDir)); err == nil && !fi.IsDir() {
			return fail(fmt.Errorf("%s is not a directory (the message store)", filepath.Join(dir, StoreDir)))
		}
		return nil
	case !missing(err):
		return fail(err)
	}
	// Missing: the nearest existing parent must take a new directory.
	parent := filepath.Dir(filepath.Clean(dir))
	for {
		fi, err := os.Stat(parent)
		if err == nil {
			if !fi.IsDir() {
				return fail(fmt.Errorf("cannot be created: %s is not a directory", parent))
			}
			break
		}
		if !missing(err) || filepath.Dir(parent) == parent {
			return fail(fmt.Errorf("cannot be created: %w", err))
		}
		parent = filepath.Dir(parent)
	}
	d, err := os.MkdirTemp(parent, ".throng-check-*")
	if err != nil {
		return fail(fmt.Errorf("cannot be created in %s: %w", parent, cause(err)))
	}
	os.Remove(d)
	return nil
}

// cause strips the path of a *os.PathError (the check's temporary
// name, which means nothing to the reader).
func cause(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// missing reports whether a stat error means the path is not there (a
// file on the way counts: the walk up then names it).
func missing(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}
