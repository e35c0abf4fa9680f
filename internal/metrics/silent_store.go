package metrics

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"
)

// The silent-device tracker's file (docs/anomalies.md, "Across
// restarts"): the node writes it to its data directory every 30 s when
// something changed and at a clean shutdown (internal/app,
// silentstore.go), and reads it when it starts, so that a device silent
// since before a restart is still known, with its last sighting and its
// usual interval, and is found silent.
//
// Format (integers are varints, encoding/binary):
//
//	magic "throng-silent-devices\n", version 1
//	saved at (Unix milliseconds, signed), tenants (unsigned)
//	per tenant: name (length, bytes), devices (unsigned)
//	  per device: id (length, bytes), saved at − last sighting in ms
//	  (signed), interval ms, ttd s (unsigned), sightings, flags (a byte each)
//	CRC-32C of all of the above, 4 bytes little-endian
//
// A device waiting for commands is written as having stopped at the
// time of the write: whoever reads the file is a node started again,
// whose connections are new (the device was alive at least until then).
// A file that does not end with its checksum (a torn write, a full
// disk, another file) is refused as a whole.

const (
	devicesMagic   = "throng-silent-devices\n"
	devicesVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrDevicesFile is wrapped by LoadDevices' error for a file it cannot
// read as the tracker's (corrupt, truncated, another version).
var ErrDevicesFile = errors.New("not a valid silent-device file")

// DevicesSaved describes a write of the tracker's file.
type DevicesSaved struct {
	Devices int
	Bytes   int64
	// Locked is how long the tracker was locked (sightings wait): the
	// copy of the entries, not the encoding or the disk.
	Locked time.Duration
	Took   time.Duration // all of it, fsync and rename included
}

// DevicesGeneration counts the tracker's changes; with DevicesWaiting it
// tells the store whether a write would change the file.
func (o *Observer) DevicesGeneration() uint64 {
	o.devs.mu.Lock()
	defer o.devs.mu.Unlock()
	return o.devs.gen
}

// DevicesWaiting is how many devices wait for commands on this node:
// while one does, every write moves its "alive until".
func (o *Observer) DevicesWaiting() int {
	o.devs.mu.Lock()
	defer o.devs.mu.Unlock()
	return o.devs.waiting
}

// SaveDevices writes the tracker to path atomically: a temporary file
// next to it, synced, renamed over it, and the directory synced. A crash
// at any point leaves the previous file or the new one.
func (o *Observer) SaveDevices(path string) (DevicesSaved, error) {
	start := time.Now()
	snap, locked := o.devs.snapshot()
	st := DevicesSaved{Locked: locked}
	saved := o.opt.Now().UnixMilli()

	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return st, err
	}
	defer func() {
		if f != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	crc := crc32.New(castagnoli)
	cw := &countWriter{w: io.MultiWriter(f, crc)}
	w := bufio.NewWriterSize(cw, 1<<16)
	var buf [binary.MaxVarintLen64]byte
	uv := func(v uint64) { w.Write(buf[:binary.PutUvarint(buf[:], v)]) }
	sv := func(v int64) { w.Write(buf[:binary.PutVarint(buf[:], v)]) }
	str := func(s string) { uv(uint64(len(s))); w.WriteString(s) }

	w.WriteString(devicesMagic)
	w.WriteByte(devicesVersion)
	sv(saved)
	uv(uint64(len(snap)))
	for _, t := range snap {
		str(t.name)
		uv(uint64(len(t.recs)))
		for _, r := range t.recs {
			s := r.s
			if s.flags&seenWaiting != 0 {
				s.flags = s.flags&^seenWaiting | seenWaitEnded
				s.last = max(s.last, saved)
			}
			str(r.id)
			sv(saved - s.last)
			uv(uint64(s.ival))
			uv(uint64(s.ttd))
			w.WriteByte(s.count)
			w.WriteByte(s.flags)
			st.Devices++
		}
	}
	if err := w.Flush(); err != nil {
		return st, err
	}
	if err := binary.Write(f, binary.LittleEndian, crc.Sum32()); err != nil {
		return st, err
	}
	st.Bytes = cw.n + 4
	if err := f.Sync(); err != nil {
		return st, err
	}
	err = f.Close()
	f = nil
	if err != nil {
		os.Remove(tmp)
		return st, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return st, err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync() // the rename itself survives a power cut
		d.Close()
	}
	st.Took = time.Since(start)
	return st, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// tenantRecs is one tenant's devices copied out of the tracker.
type tenantRecs struct {
	name string
	recs []devRec
}

type devRec struct {
	id string
	s  seen
}

// snapshot copies the entries (ids shared, not copied) under the lock:
// the only part of a write that holds sightings up. The copy's memory is
// allocated before, with room for the devices that arrive meanwhile, so
// that the lock is not held through an allocation (and the garbage
// collector's assists it may bring).
func (d *devices) snapshot() ([]tenantRecs, time.Duration) {
	d.mu.Lock()
	sizes := make(map[string]int, len(d.byTenant))
	for t, m := range d.byTenant {
		sizes[t] = len(m)
	}
	d.mu.Unlock()
	pre := make(map[string][]devRec, len(sizes))
	for t, n := range sizes {
		pre[t] = make([]devRec, 0, n+n/64+16)
	}

	out := make([]tenantRecs, 0, len(sizes)+16)
	locked := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for t, m := range d.byTenant {
		recs := pre[t]
		for id, s := range m {
			recs = append(recs, devRec{id, s})
		}
		out = append(out, tenantRecs{t, recs})
	}
	return out, time.Since(locked)
}

// LoadDevices reads the tracker's file into the tracker (restore), up to
// its bound. A missing file is no error (0 devices: a first start); an
// unreadable one is (wrapping ErrDevicesFile when its content is wrong),
// and nothing of it is taken.
func (o *Observer) LoadDevices(path string) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	snap, err := decodeDevices(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return o.devs.restore(snap), nil
}

func decodeDevices(b []byte) ([]tenantRecs, error) {
	bad := func(what string) error { return fmt.Errorf("%w: %s", ErrDevicesFile, what) }
	if len(b) < len(devicesMagic)+1+4 || string(b[:len(devicesMagic)]) != devicesMagic {
		return nil, bad("no header")
	}
	body, sum := b[:len(b)-4], binary.LittleEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, bad("checksum mismatch (truncated or damaged)")
	}
	if v := body[len(devicesMagic)]; v != devicesVersion {
		return nil, bad(fmt.Sprintf("version %d", v))
	}
	p := body[len(devicesMagic)+1:]
	var failed bool
	uv := func() uint64 {
		v, n := binary.Uvarint(p)
		if n <= 0 {
			failed = true
			return 0
		}
		p = p[n:]
		return v
	}
	sv := func() int64 {
		v, n := binary.Varint(p)
		if n <= 0 {
			failed = true
			return 0
		}
		p = p[n:]
		return v
	}
	str := func() string {
		n := uv()
		if failed || n > uint64(len(p)) {
			failed = true
			return ""
		}
		s := string(p[:n])
		p = p[n:]
		return s
	}
	byt := func() uint8 {
		if len(p) == 0 {
			failed = true
			return 0
		}
		v := p[0]
		p = p[1:]
		return v
	}
	saved := sv()
	nt := uv()
	if failed || nt > uint64(len(p)) {
		return nil, bad("tenant count")
	}
	out := make([]tenantRecs, 0, nt)
	for range nt {
		t := tenantRecs{name: str()}
		nd := uv()
		if failed || nd > uint64(len(p)) {
			return nil, bad("device count")
		}
		t.recs = make([]devRec, 0, nd)
		for range nd {
			var r devRec
			r.id = str()
			r.s.last = saved - sv()
			ival, ttd := uv(), uv()
			r.s.count, r.s.flags = byt(), byt()
			if failed || ival > 1<<32-1 || ttd > 1<<32-1 {
				return nil, bad("device entry")
			}
			r.s.ival, r.s.ttd = uint32(ival), uint32(ttd)
			r.s.flags &= seenWaitEnded // nobody waits on a node that just started
			if !trackable(r.id) {
				continue
			}
			t.recs = append(t.recs, r)
		}
		out = append(out, t)
	}
	if len(p) != 0 {
		return nil, bad("trailing bytes")
	}
	return out, nil
}

// restore adds the devices of snap to the tracker, up to its bound; it
// returns how many it added. A device seen since the start (the file is
// read while the node already serves) keeps what it did since, on top
// of its history: its sightings add up, its interval is the file's until
// it has one of its own (the gap across the restart is not one), its
// last sighting, ttd and wait for commands are the new ones.
func (d *devices) restore(snap []tenantRecs) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	added := 0
	for _, t := range snap {
		m := d.byTenant[t.name]
		for _, r := range t.recs {
			if cur, ok := m[r.id]; ok {
				if cur.count < 2 && r.s.count >= 2 {
					cur.ival = r.s.ival
				}
				cur.count = uint8(min(int(cur.count)+int(r.s.count), 255))
				m[r.id] = cur
				added++
				continue
			}
			if d.n >= d.max {
				return added
			}
			if m == nil {
				m = make(map[string]seen, len(t.recs))
				d.byTenant[t.name] = m
			}
			m[r.id] = r.s
			d.n++
			added++
		}
	}
	if added > 0 {
		d.gen++
	}
	return added
}
