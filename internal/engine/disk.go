package engine

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// The disk guard keeps JetStream off a full file system. On ENOSPC the
// engine does not answer the publish and marks the stream with a write
// error that lasts until a restart (nats-server processJetStreamMsg,
// setWriteErrLocked), so a full disk must be refused before it is reached,
// as RabbitMQ's disk_free_limit alarm does: while the free space of the
// data directory's file system is below the limit, the router refuses new
// stored messages with a clear error (AMQP resource-limit-exceeded, MQTT
// 0x97), while settlements, session writes and deliveries go on, so
// consumers can free space. The guard also keeps a reserve file (the
// limit's size, at most maxReserve; allocated, not sparse) in the data
// directory and deletes it when the alarm goes on: if something else fills
// the disk faster than the guard polls, the engine still finds room for
// the writes already under way. The alarm goes off, and the reserve comes
// back, once free space is three times the limit.

// diskPoll is how often the guard looks at the free space by itself;
// while stored messages come in, DiskAlarm looks every diskFresh, so that a
// disk filled at once by something else is seen before the next write.
const (
	diskPoll  = 20 * time.Millisecond
	diskFresh = 2 * time.Millisecond
)

// reserveName is the reserve file in the data directory.
const reserveName = "disk.reserve"

// maxReserve bounds the reserve file: it has to hold what the engine
// writes in one poll interval, not more.
const maxReserve = 32 << 20

type diskGuard struct {
	dir     string // measured (the JetStream store directory)
	reserve string // path of the reserve file
	limit   int64
	log     *slog.Logger
	alarm   atomic.Bool
	checked atomic.Int64 // unix nanos of the last look
	mu      sync.Mutex   // serializes check
	stop    chan struct{}
	done    chan struct{}
	free    func(dir string) (int64, error) // tests replace it
}

// DefaultDiskFreeLimit is the free-space limit when none is configured:
// 5% of the file system, at least 1 MiB and at most 256 MiB.
func DefaultDiskFreeLimit(dir string) int64 {
	size, err := diskSize(dir)
	if err != nil || size <= 0 {
		return 64 << 20
	}
	return min(max(size/20, 1<<20), 256<<20)
}

func startDiskGuard(dataDir, storeDir string, limit int64, free func(string) (int64, error), log *slog.Logger) (*diskGuard, error) {
	if free == nil {
		free = diskFree
	}
	g := &diskGuard{dir: storeDir, reserve: filepath.Join(dataDir, reserveName), limit: limit, log: log,
		stop: make(chan struct{}), done: make(chan struct{}), free: free}
	if err := os.MkdirAll(storeDir, 0o755); err != nil {
		return nil, err
	}
	avail, err := g.free(storeDir)
	if err != nil {
		return nil, fmt.Errorf("engine: free space of %s: %w", storeDir, err)
	}
	if st, err := os.Stat(g.reserve); err == nil {
		avail += st.Size() // ours to give
	}
	g.check(avail)
	go g.loop()
	return g, nil
}

func (g *diskGuard) loop() {
	defer close(g.done)
	t := time.NewTicker(diskPoll)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		g.mu.Lock()
		g.look()
		g.mu.Unlock()
	}
}

// look measures the free space and checks it. g.mu held.
func (g *diskGuard) look() {
	g.checked.Store(time.Now().UnixNano())
	if free, err := g.free(g.dir); err == nil {
		g.check(free)
	}
}

// alarmNow is the alarm, looked at again if the last look is older than
// diskFresh (by one caller; the others take the last result).
func (g *diskGuard) alarmNow() bool {
	if time.Now().UnixNano()-g.checked.Load() > int64(diskFresh) && g.mu.TryLock() {
		g.look()
		g.mu.Unlock()
	}
	return g.alarm.Load()
}

// check sets the alarm from the free space and keeps the reserve file.
// g.mu held (or the guard not started yet).
func (g *diskGuard) check(free int64) {
	switch {
	case !g.alarm.Load() && free < g.limit:
		g.alarm.Store(true)
		os.Remove(g.reserve) // room for the writes under way
		g.log.Error("disk free space below the limit: new stored messages are refused until space is freed",
			"dir", g.dir, "free", free, "limit", g.limit)
	case g.alarm.Load() && free >= 3*g.limit:
		if err := g.makeReserve(); err != nil {
			g.log.Warn("disk reserve file not created", "path", g.reserve, "err", err)
		}
		g.alarm.Store(false)
		g.log.Info("disk free space back above the limit: stored messages accepted again", "dir", g.dir, "free", free, "limit", g.limit)
	case !g.alarm.Load():
		if _, err := os.Stat(g.reserve); os.IsNotExist(err) && free >= 2*g.limit {
			if err := g.makeReserve(); err != nil {
				g.log.Warn("disk reserve file not created", "path", g.reserve, "err", err)
			}
		}
	}
}

// makeReserve allocates the reserve file (real blocks, not a sparse file).
func (g *diskGuard) makeReserve() error {
	tmp := g.reserve + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := allocate(f, min(g.limit, maxReserve)); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, g.reserve)
}

// writeZeros allocates by writing (where fallocate is missing).
func writeZeros(f *os.File, size int64) error {
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), left)]); err != nil {
			return err
		}
	}
	return nil
}

func (g *diskGuard) close() {
	close(g.stop)
	<-g.done
}

// DiskAlarm reports whether the data directory's free space is below the
// limit: new stored messages are to be refused.
func (e *Engine) DiskAlarm() bool { return e.disk != nil && e.disk.alarmNow() }
