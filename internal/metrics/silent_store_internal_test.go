package metrics

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

// observerAt is an observer whose clock the test sets.
func observerAt(now *time.Time) *Observer {
	return NewObserver(Options{Now: func() time.Time { return *now }})
}

func silentNames(o *Observer, now time.Time, minSeconds float64) []string {
	th := DefaultThresholds
	th.SilentMinSeconds = minSeconds
	var out []string
	for _, s := range o.devs.silent(now, func(string) bool { return true }, func(string) Thresholds { return th }) {
		out = append(out, s.tenant+"/"+s.device+"/"+s.reason)
	}
	slices.Sort(out)
	return out
}

// The file gives a restarted node every device with its last sighting,
// interval, ttd and sightings; a device that waited for commands is
// restored as having stopped when the file was written, and is judged
// like a lapsed ttd from then.
func TestSilentStoreRoundTrip(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	o := observerAt(&now)
	for i := range 4 {
		now = t0.Add(time.Duration(i) * 10 * time.Second)
		o.DeviceSeen("acme", "regular", 0)
	}
	now = t0.Add(30 * time.Second)
	o.DeviceSeen("acme", "http", 5*time.Minute)
	o.DeviceSeen("beta", "actuator", 0)
	o.DeviceWaiting("beta", "actuator", true)
	o.DeviceSeen("beta", "(unauthenticated)", 0) // no device: not tracked
	path := filepath.Join(t.TempDir(), "silent-devices")
	now = t0.Add(40 * time.Second)
	st, err := o.SaveDevices(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Devices != 3 {
		t.Errorf("%d devices written, want 3", st.Devices)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Size() != st.Bytes {
		t.Errorf("file: %v %v, written %d bytes", fi, err, st.Bytes)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}

	// The new node serves while it reads the file: a device seen since
	// it started keeps its new sighting on top of its history.
	r := observerAt(&now)
	r.DeviceSeen("acme", "seen-since-start", 0)
	r.DeviceSeen("acme", "http", 0)
	n, err := r.LoadDevices(path)
	if err != nil || n != 3 {
		t.Fatalf("load: %d, %v", n, err)
	}
	want := o.devs.byTenant["acme"]["regular"]
	if got := r.devs.byTenant["acme"]["regular"]; got != want || got.count != 4 || got.ival != 10_000 {
		t.Errorf("regular: %+v, want %+v", got, want)
	}
	if got := r.devs.byTenant["acme"]["http"]; got.count != 2 || got.ttd != 0 || got.last != now.UnixMilli() {
		t.Errorf("http, seen since the start: %+v", got)
	}
	r.devs.forget("acme", "http")
	if n, err := r.LoadDevices(path); n != 3 || err != nil {
		t.Errorf("load again: %d %v", n, err)
	}
	if got := r.devs.byTenant["acme"]["http"]; got.ttd != 300 || got.last != t0.Add(30*time.Second).UnixMilli() {
		t.Errorf("http: %+v", got)
	}
	if got := r.devs.byTenant["beta"]["actuator"]; got.flags != seenWaitEnded || got.last != now.UnixMilli() {
		t.Errorf("actuator: %+v, want ended at the write", got)
	}
	if r.devs.waiting != 0 || r.devs.n != 4 {
		t.Errorf("restored: %d waiting, %d devices", r.devs.waiting, r.devs.n)
	}
	// Judged as before the restart: the regular device after 3× 10 s,
	// the actuator a minimum silence after the write.
	if got := fmt.Sprint(silentNames(r, now.Add(60*time.Second), 1)); got != "[acme/regular/interval beta/actuator/commands]" {
		t.Errorf("silent after the restart: %s", got)
	}

	// No file: a first start.
	if n, err := r.LoadDevices(filepath.Join(t.TempDir(), "none")); n != 0 || err != nil {
		t.Errorf("missing file: %d %v", n, err)
	}
}

// A damaged file is refused as a whole: nothing of it is taken.
func TestSilentStoreCorrupt(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	o := observerAt(&now)
	for i := range 100 {
		o.DeviceSeen("acme", fmt.Sprintf("dev-%d", i), 0)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "silent-devices")
	if _, err := o.SaveDevices(path); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	flipped := slices.Clone(good)
	flipped[len(flipped)/2] ^= 0x40
	for name, b := range map[string][]byte{
		"truncated": good[:len(good)/2],
		"flipped":   flipped,
		"empty":     nil,
		"other":     []byte("{\"devices\": []}\n"),
		"no-sum":    good[:len(good)-4],
	} {
		bad := filepath.Join(dir, name)
		if err := os.WriteFile(bad, b, 0o600); err != nil {
			t.Fatal(err)
		}
		r := observerAt(&now)
		n, err := r.LoadDevices(bad)
		if !errors.Is(err, ErrDevicesFile) || n != 0 || r.devs.n != 0 {
			t.Errorf("%s: %d devices, %v", name, n, err)
		}
	}
}

// The rule for command subscriptions: a device waiting for commands on a
// connection of the node is alive; when the wait ends it is judged like
// a lapsed ttd (its interval, the minimum silence at least), whatever
// its sightings; a new sighting makes it an ordinary device again. A
// device marked waiting without a connection (its end lost or reported
// before its start) is judged as if its wait had ended.
func TestSilentCommandsRule(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	o := observerAt(&now)
	all := func(string) bool { return true }
	th := DefaultThresholds
	th.SilentMinSeconds = 10
	thOf := func(string) Thresholds { return th }
	at := func(after time.Duration, live liveSet) string {
		var out []string
		for _, s := range o.devs.silentLive(t0.Add(after), all, thOf, live) {
			out = append(out, s.device+"/"+s.reason)
		}
		slices.Sort(out)
		return fmt.Sprint(out)
	}
	// "sensor" talks every second and waits for commands; "actuator"
	// connects once and waits.
	for i := range 4 {
		now = t0.Add(time.Duration(i) * time.Second)
		o.DeviceSeen("t", "sensor", 0)
	}
	o.DeviceWaiting("t", "sensor", true)
	o.DeviceSeen("t", "actuator", 0)
	o.DeviceWaiting("t", "actuator", true)
	o.DeviceWaiting("t", "actuator", true) // a second subscription
	bothLive := liveSet{"t": {devices: map[string]bool{"sensor": true, "actuator": true}}}
	if got := at(time.Hour, bothLive); got != "[]" {
		t.Errorf("connected and waiting, an hour on: %s", got)
	}
	if got := at(time.Hour, nil); got != "[]" {
		t.Errorf("waiting, without the connections' say: %s", got)
	}
	// The actuator's connection is gone but its end was not reported.
	sensorLive := liveSet{"t": {devices: map[string]bool{"sensor": true}}}
	if got := at(time.Hour, sensorLive); got != "[actuator/commands]" {
		t.Errorf("the actuator's connection gone: %s", got)
	}
	// An unauthenticated devices' connection of the tenant may be any.
	if got := at(time.Hour, liveSet{"t": {anyLive: true}}); got != "[]" {
		t.Errorf("with an unauthenticated connection: %s", got)
	}

	// Both stop waiting at 100 s (the end reported twice).
	now = t0.Add(100 * time.Second)
	o.DeviceWaiting("t", "sensor", false)
	o.DeviceWaiting("t", "actuator", false)
	o.DeviceWaiting("t", "actuator", false)
	if o.devs.waiting != 0 {
		t.Errorf("%d waiting", o.devs.waiting)
	}
	if s := o.devs.byTenant["t"]["sensor"]; s.ival != 1000 || s.count != 4 {
		t.Errorf("the wait changed the sensor's interval or sightings: %+v", s)
	}
	if got := at(109*time.Second, bothLive); got != "[]" {
		t.Errorf("before the minimum silence: %s", got)
	}
	if got := at(111*time.Second, bothLive); got != "[actuator/commands sensor/commands]" {
		t.Errorf("after it: %s", got)
	}
	// The actuator connects again: an ordinary device seen twice, not
	// judged; it waits again: alive.
	now = t0.Add(120 * time.Second)
	o.DeviceSeen("t", "actuator", 0)
	if got := at(time.Hour, bothLive); got != "[sensor/commands]" {
		t.Errorf("the actuator back: %s", got)
	}
	if o.DeviceWaiting("t", "actuator", true); at(time.Hour, bothLive) != "[sensor/commands]" {
		t.Errorf("the actuator waiting again: %s", at(time.Hour, bothLive))
	}
	// Forgotten while waiting: the count of waiting devices follows.
	o.devs.forget("t", "actuator")
	if o.devs.waiting != 0 {
		t.Errorf("%d waiting after forget", o.devs.waiting)
	}
}

// TestSilentStoreBound measures the file at a million devices (UUID ids,
// one tenant): bytes per device, how long a write holds sightings up and
// takes, and how long a start reads it. docs/anomalies.md states them.
func TestSilentStoreBound(t *testing.T) {
	const n = 1_000_000
	if testing.Short() {
		t.Skip("a million devices")
	}
	now := time.Now()
	o := observerAt(&now)
	for i := range n {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		for k := range 3 {
			now = now.Add(time.Millisecond)
			o.devs.saw("acme", id, time.Duration(k), now)
		}
	}
	path := filepath.Join(t.TempDir(), "silent-devices")
	var best DevicesSaved
	for i := range 3 {
		st, err := o.SaveDevices(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("write %d: %d devices, %.1f MiB (%.1f B per device), locked %s, took %s", i+1, st.Devices,
			float64(st.Bytes)/(1<<20), float64(st.Bytes)/n, st.Locked.Round(time.Millisecond), st.Took.Round(time.Millisecond))
		if i == 0 || st.Took < best.Took {
			best = st
		}
	}
	if per := float64(best.Bytes) / n; per > 64 {
		t.Errorf("%.1f B per device on disk", per)
	}
	runtime.GC()
	r := observerAt(&now)
	start := time.Now()
	got, err := r.LoadDevices(path)
	took := time.Since(start)
	if err != nil || got != n {
		t.Fatalf("load: %d, %v", got, err)
	}
	t.Logf("read: %d devices in %s", got, took.Round(time.Millisecond))
	if r.devs.byTenant["acme"]["00000007-0000-4000-8000-000000000007"] != o.devs.byTenant["acme"]["00000007-0000-4000-8000-000000000007"] {
		t.Error("a device differs after the round trip")
	}
}
