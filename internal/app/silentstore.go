package app

import (
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/metrics"
)

// SilentDevicesFile is the silent-device tracker's file in the data
// directory (docs/anomalies.md, "Across restarts").
const SilentDevicesFile = "silent-devices"

// silentSaveInterval is how often the tracker is written when it
// changed: a kill -9 loses at most this much of its sightings.
const silentSaveInterval = 30 * time.Second

// silentStore keeps the anomaly finder's silent-device tracker across
// restarts: read when the node starts, written every silentSaveInterval
// when something changed and once more when the node stops.
//
// A file in the data directory rather than a JetStream KV bucket: the
// tracker is the node's own (what its connections saw; a cluster's
// nodes each have theirs), it is written whole and read once, and at a
// million devices it is ~50 MB — a KV entry per device would be a
// million writes every period, one value a message larger than the
// engine's limit.
type silentStore struct {
	obs  *metrics.Observer
	path string
	log  *slog.Logger

	stopOnce sync.Once
	stopCh   chan struct{}
	done     chan struct{}
}

// startSilentStore starts reading the tracker's file and then writing
// it; called after startObserver, before the front-ends (whose command
// subscriptions it wires). A file that cannot be read is reported and
// the tracker starts empty: the node starts anyway (the finder's
// history is not worth an outage).
func (a *App) startSilentStore() {
	a.mu.Lock()
	o := a.obs
	a.mu.Unlock()
	if o == nil {
		return
	}
	// Devices' command subscriptions (ttd -1 and 0) for the same
	// tracker that hono.Service.OnDeviceSeen feeds (observe.go).
	a.hono.OnDeviceWaiting(o.tenants.DeviceWaiting)
	s := &silentStore{
		obs:    o.tenants,
		path:   filepath.Join(a.cfg.DataDir, SilentDevicesFile),
		log:    a.log.With("component", "anomalies"),
		stopCh: make(chan struct{}),
		done:   make(chan struct{}),
	}
	a.mu.Lock()
	a.silent = s
	a.mu.Unlock()
	go s.run()
}

// run reads the file, then writes it every silentSaveInterval. The read
// is not waited for: at a million devices it takes seconds, and the
// sightings meanwhile are merged with it (metrics.Observer.LoadDevices);
// no write begins before it ended, so none can replace the file with
// less than it held.
func (s *silentStore) run() {
	defer close(s.done)
	start := time.Now()
	n, err := s.obs.LoadDevices(s.path)
	if err != nil {
		s.log.Warn("silent-device tracker not restored; it starts empty", "file", s.path, "err", err)
	} else if n > 0 {
		s.log.Info("silent-device tracker restored", "devices", n, "took", time.Since(start).Round(time.Millisecond))
	}
	t := time.NewTicker(silentSaveInterval)
	defer t.Stop()
	last := s.obs.DevicesGeneration()
	for {
		select {
		case <-s.stopCh:
			return
		case <-t.C:
			// Unchanged and nobody waiting for commands (whose "alive
			// until" each write moves): the file says it all already.
			if g := s.obs.DevicesGeneration(); g != last || s.obs.DevicesWaiting() > 0 {
				if s.save() {
					last = g
				}
			}
		}
	}
}

func (s *silentStore) save() bool {
	st, err := s.obs.SaveDevices(s.path)
	if err != nil {
		s.log.Warn("silent-device tracker not written", "file", s.path, "err", err)
		return false
	}
	s.log.Debug("silent-device tracker written", "devices", st.Devices, "bytes", st.Bytes,
		"locked", st.Locked.Round(time.Microsecond), "took", st.Took.Round(time.Millisecond))
	return true
}

// stop ends the writer and writes the tracker once more (nil: nothing);
// called once the front-ends stopped, so that it holds their last
// sightings.
func (s *silentStore) stop() {
	if s == nil {
		return
	}
	s.stopOnce.Do(func() {
		close(s.stopCh)
		<-s.done
		s.save()
	})
}
