package metrics

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/conns"
)

// Silent devices (issue 15, docs/anomalies.md): registered devices that
// were seen at a regular interval and then stopped, or whose last
// message's ttd (the time it said it would wait for commands) lapsed.
//
// A device is seen when it connects (MQTT, AMQP: Observer.Connected) and
// when a message of it goes upstream (telemetry, events, command
// responses, whatever the adapter: hono.Service.Upstream calls
// Observer.DeviceSeen). Per device the tracker keeps the last time it was
// seen, an estimate of its usual interval (an exponentially weighted
// moving average of the gaps, weight 1/4 for the newest) and the ttd of
// its last message: 24 bytes of value in a map keyed by tenant, then
// device id (a copy of the id is the only allocation per device;
// TestSilentBound: about 150 bytes per device with UUID ids, 142 MiB
// at a million). Only
// devices seen on this node are kept, at most MaxTrackedDevices: beyond
// that new devices are not tracked (Observer.DevicesUntracked counts
// them) rather than letting memory grow; a device deleted from the
// registry is dropped when a report finds it silent and the registry no
// longer knows it (Options.DeviceExists).

// MaxTrackedDevices bounds the devices the tracker keeps per node.
const MaxTrackedDevices = 2_000_000

// silentMinSightings is how often a device must have been seen before
// its interval is its usual one (two gaps).
const silentMinSightings = 3

// maxSilentFindings caps the silent devices one report lists (the count
// of all is in each finding's evidence).
const maxSilentFindings = 500

// seen is one device's state.
type seen struct {
	last  int64  // Unix milliseconds of the last sighting
	ival  uint32 // usual interval, milliseconds (EWMA of the gaps)
	ttd   uint32 // the last message's ttd, seconds (0: none)
	count uint8  // sightings, saturating
	flags uint8  // seenWaiting, seenWaitEnded
}

// A device's command subscription (MQTT command///req/#, an AMQP
// receiver on "command": Hono's ttd -1, "until further notice") and its
// end (ttd 0: unsubscribed, link or connection closed).
const (
	// seenWaiting: it waits for commands on an open connection of this
	// node; not silent while that connection lasts (its keep-alive
	// proves it alive).
	seenWaiting uint8 = 1 << iota
	// seenWaitEnded: its wait ended at last and nothing was seen since:
	// judged like a lapsed ttd, whatever its sightings (silent.go's
	// silent).
	seenWaitEnded
)

type devices struct {
	mu        sync.Mutex
	byTenant  map[string]map[string]seen // guarded by mu
	n         int                        // devices kept; guarded by mu
	untracked uint64                     // sightings of devices beyond the bound; guarded by mu
	waiting   int                        // devices with seenWaiting; guarded by mu
	gen       uint64                     // changes so far (the store writes only after one); guarded by mu
	max       int
}

func newDevices(max int) *devices {
	return &devices{byTenant: map[string]map[string]seen{}, max: max}
}

// saw records a sighting of a device at now with the ttd its message
// carried (0: none). The hot path of every device message: one lock,
// two map lookups, no allocation once the device is known.
func (d *devices) saw(tenantName, device string, ttd time.Duration, now time.Time) {
	if !trackable(device) {
		return
	}
	ms := now.UnixMilli()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.gen++
	m := d.byTenant[tenantName]
	if m == nil {
		m = map[string]seen{}
		d.byTenant[tenantName] = m
	}
	s, ok := m[device]
	if !ok {
		if d.n >= d.max {
			d.untracked++
			return
		}
		d.n++
		// A copy: the caller's string may be a slice of a larger one
		// (a topic), which the map would keep alive.
		m[strings.Clone(device)] = seen{last: ms, count: 1, ttd: uint32(max(ttd, 0) / time.Second)}
		return
	}
	gap := max(ms-s.last, 0)
	gap = min(gap, 1<<32-1)
	if s.count == 1 {
		s.ival = uint32(gap)
	} else {
		s.ival = uint32((3*int64(s.ival) + gap) / 4)
	}
	if s.count < 255 {
		s.count++
	}
	s.last = ms
	s.ttd = uint32(max(ttd, 0) / time.Second)
	s.flags &^= seenWaitEnded // a new sighting, as a new message's ttd replaces the last one's
	m[device] = s
}

// trackable: a registry device id. An unauthenticated connection's
// principal names no device ("(unauthenticated)", which no id can be:
// hono.ValidDeviceID) and is not tracked.
func trackable(device string) bool {
	return device != "" && !strings.HasPrefix(device, "(")
}

// commands records that a device began (on) or stopped waiting for
// commands at now (hono.Service's ttd -1 and 0 notifications). The
// beginning is a sighting that does not count as one for the interval
// (the connect before it did); the end sets the last sighting to now —
// the device was alive until then — without a gap for the interval
// either: the time it waited is not a silence.
func (d *devices) commands(tenantName, device string, on bool, now time.Time) {
	if !trackable(device) {
		return
	}
	ms := now.UnixMilli()
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.byTenant[tenantName]
	s, ok := m[device]
	switch {
	case !ok && !on:
		return
	case !ok:
		// Not seen before on this node (the connect is seen first, so:
		// beyond the bound, or forgotten meanwhile).
		if d.n >= d.max {
			d.untracked++
			return
		}
		if m == nil {
			m = map[string]seen{}
			d.byTenant[tenantName] = m
		}
		d.n++
		device = strings.Clone(device)
		s = seen{count: 1}
	}
	d.gen++
	was := s.flags&seenWaiting != 0
	if on {
		s.flags = s.flags&^seenWaitEnded | seenWaiting
		if !was {
			d.waiting++
		}
	} else {
		if !was {
			return // its end is known already (MQTT and AMQP may report it twice)
		}
		s.flags = s.flags&^seenWaiting | seenWaitEnded
		d.waiting--
	}
	s.last = max(s.last, ms)
	m[device] = s
}

// forget drops a device (deleted from the registry).
func (d *devices) forget(tenantName, device string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.byTenant[tenantName][device]; ok {
		m := d.byTenant[tenantName]
		if m[device].flags&seenWaiting != 0 {
			d.waiting--
		}
		delete(m, device)
		d.n--
		d.gen++
		if len(m) == 0 {
			delete(d.byTenant, tenantName)
		}
	}
}

// silentDevice is a device found silent.
type silentDevice struct {
	tenant, device string
	last           time.Time
	ival           time.Duration
	ttd            time.Duration
	count          int
	reason         string // "interval" or "ttd"
	silence        time.Duration
}

// silent lists the silent devices of the tenants mine accepts, with each
// tenant's thresholds (thOf), oldest silence first. A device waiting for
// commands is taken at its word (silentLive has the connections' say).
func (d *devices) silent(now time.Time, mine func(string) bool, thOf func(string) Thresholds) []silentDevice {
	return d.silentLive(now, mine, thOf, nil)
}

// liveSet is the devices with an open connection on the node, by tenant
// then device; a tenant with an unauthenticated devices' connection has
// anyLive (its devices are not named by the connection).
type liveSet map[string]struct {
	devices map[string]bool
	anyLive bool
}

// silentLive is silent where a device waiting for commands counts as
// alive only while live has a connection of it (nil: always): the ttd 0
// of its end is sent in the background and may come before the ttd -1
// of a connection that ended at once, or not at all if the node stopped.
func (d *devices) silentLive(now time.Time, mine func(string) bool, thOf func(string) Thresholds, live liveSet) []silentDevice {
	var out []silentDevice
	d.mu.Lock()
	defer d.mu.Unlock()
	for t, m := range d.byTenant {
		if !mine(t) {
			continue
		}
		th := thOf(t)
		minSilence := time.Duration(th.SilentMinSeconds * float64(time.Second))
		lt, hasLive := live[t]
		for id, s := range m {
			ended := s.flags&seenWaitEnded != 0
			if s.flags&seenWaiting != 0 {
				if live == nil || (hasLive && (lt.anyLive || lt.devices[id])) {
					continue // connected and waiting for commands: alive
				}
				ended = true
			}
			var wait time.Duration
			reason := ""
			if s.count >= silentMinSightings {
				wait = time.Duration(th.SilentFactor * float64(time.Duration(s.ival)*time.Millisecond))
				reason = "interval"
			}
			if ended {
				// It waited for commands and stopped (its connection
				// ended): like a lapsed ttd it is judged whatever its
				// sightings, after its usual interval's silence if it
				// has one, the minimum silence at least.
				reason = "commands"
			}
			if ttd := time.Duration(s.ttd) * time.Second; ttd > 0 && ttd >= wait {
				// It said it would wait this long for commands: not
				// silent before that, silent after whatever its history.
				wait, reason = ttd, "ttd"
			}
			if reason == "" {
				continue
			}
			wait = max(wait, minSilence)
			last := time.UnixMilli(s.last)
			if silence := now.Sub(last); silence > wait {
				out = append(out, silentDevice{tenant: t, device: id, last: last, ival: time.Duration(s.ival) * time.Millisecond,
					ttd: time.Duration(s.ttd) * time.Second, count: int(s.count), reason: reason, silence: silence})
			}
		}
	}
	slices.SortFunc(out, func(a, b silentDevice) int {
		return cmp.Or(cmp.Compare(a.tenant, b.tenant), cmp.Compare(b.silence, a.silence), cmp.Compare(a.device, b.device))
	})
	return out
}

// DeviceSeen records that a device of a tenant was seen now (a message
// upstream; ttd: the time the message said the device waits for
// commands, 0 if none). hono.Service calls it for every device message.
func (o *Observer) DeviceSeen(tenantName, device string, ttd time.Duration) {
	if device == "" {
		return
	}
	o.devs.saw(tenantName, device, ttd, o.opt.Now())
}

// DeviceWaiting records that a device began (ttd -1) or stopped (ttd 0)
// waiting for commands on this node: hono.Service.Notify calls it for
// MQTT command subscriptions and AMQP command links.
func (o *Observer) DeviceWaiting(tenantName, device string, waiting bool) {
	o.devs.commands(tenantName, device, waiting, o.opt.Now())
}

// liveDevices is the devices with an open connection on the node (nil:
// no registry, or no device waits for commands, so none is asked about).
// Built before the tracker's lock is taken: the registry's lock is not
// held with it.
func (o *Observer) liveDevices() liveSet {
	o.devs.mu.Lock()
	waiting := o.devs.waiting
	o.devs.mu.Unlock()
	if waiting == 0 || o.opt.Conns == nil {
		return nil
	}
	live := liveSet{}
	o.opt.Conns.Each(func(e *conns.Entry) {
		info := e.Info()
		if info.Device == "" {
			return
		}
		lt := live[info.Tenant]
		if trackable(info.Device) {
			if lt.devices == nil {
				lt.devices = map[string]bool{}
			}
			lt.devices[info.Device] = true
		} else {
			lt.anyLive = true
		}
		live[info.Tenant] = lt
	})
	return live
}

// DevicesTracked reports how many devices the tracker keeps and how many
// sightings of devices beyond MaxTrackedDevices it did not record.
func (o *Observer) DevicesTracked() (tracked int, untracked uint64) {
	o.devs.mu.Lock()
	defer o.devs.mu.Unlock()
	return o.devs.n, o.devs.untracked
}

// silentFindings turns the silent devices into findings; a device the
// registry no longer knows is dropped instead.
func (o *Observer) silentFindings(now time.Time, mine func(string) bool, thOf func(string) Thresholds) []Finding {
	list := o.devs.silentLive(now, mine, thOf, o.liveDevices())
	var out []Finding
	perTenant := map[string]int{}
	for _, s := range list {
		perTenant[s.tenant]++
	}
	for _, s := range list {
		if len(out) >= maxSilentFindings {
			break
		}
		if o.opt.DeviceExists != nil && !o.opt.DeviceExists(s.tenant, s.device) {
			o.devs.forget(s.tenant, s.device)
			continue
		}
		ev := map[string]any{"lastSeen": s.last.UTC().Format(time.RFC3339), "silentSeconds": int64(s.silence / time.Second),
			"sightings": s.count, "reason": s.reason, "silentInTenant": perTenant[s.tenant]}
		var summary string
		switch s.reason {
		case "ttd":
			ev["ttdSeconds"] = int64(s.ttd / time.Second)
			summary = fmt.Sprintf("device %q not seen for %s; its last message's ttd of %s lapsed", s.device, roundDur(s.silence), s.ttd)
		case "commands":
			summary = fmt.Sprintf("device %q not seen for %s since it stopped waiting for commands (unsubscribed or disconnected)", s.device, roundDur(s.silence))
			if s.count >= silentMinSightings {
				ev["usualIntervalSeconds"] = round2(s.ival.Seconds())
				summary += fmt.Sprintf("; it used to be seen every %s", roundDur(s.ival))
			}
		default:
			ev["usualIntervalSeconds"] = round2(s.ival.Seconds())
			summary = fmt.Sprintf("device %q not seen for %s; it used to be seen every %s", s.device, roundDur(s.silence), roundDur(s.ival))
		}
		out = append(out, Finding{Kind: KindSilent, Tenant: s.tenant, Device: s.device, Summary: summary, Evidence: ev})
	}
	return out
}

// roundDur shows a duration to the second (to the millisecond below one).
func roundDur(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}
