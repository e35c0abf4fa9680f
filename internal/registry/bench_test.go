package registry

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/engine"
)

// Scale figures (docs/registry.md, "Storage"):
//
//	go test -run '^$' -bench '^Benchmark(Lookup|Page)$' -benchtime 1000x ./internal/registry/
//	THRONG_BENCH_1M=1 go test -run '^$' -bench '^BenchmarkPage$' -benchtime 200x -timeout 60m ./internal/registry/
//	go test -run '^$' -bench ScanPage -benchtime 3x ./internal/registry/
//	THRONG_REGISTRY_SCALE=100000 go test -run TestScale -v -timeout 30m ./internal/registry/

// populate creates n devices "dev%07d" in tenant "acme", every 10th named
// in another's via, each with a sha-256 hashed-password credential
// "auth-<id>", from par goroutines; it returns the elapsed time.
func populate(tb testing.TB, s *Store, ten string, n, par int) time.Duration {
	tb.Helper()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for w := 0; w < par; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || firstErr.Load() != nil {
					return
				}
				id := fmt.Sprintf("dev%07d", i)
				d := &Device{}
				if i%10 == 1 {
					d.Via = []string{fmt.Sprintf("dev%07d", i-1)}
				}
				if _, _, err := s.CreateDevice(ctx, ten, id, d); err != nil {
					firstErr.Store(err)
					return
				}
				cs := []Credential{{Type: TypePassword, AuthID: "auth-" + id, Secrets: []Secret{{PwdHash: sha256Hash([]byte(id), "secret"), Salt: []byte(id), HashFunction: HashSHA256}}}}
				if _, err := s.SetCredentials(ctx, ten, id, cs, ""); err != nil {
					firstErr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := firstErr.Load(); err != nil {
		tb.Fatal(err)
	}
	return time.Since(start)
}

// fixture is a populated engine shared by the benchmarks of one size.
type fixture struct {
	e       *engine.Engine
	s       *Store
	n       int
	fill    time.Duration
	cleanup func()
}

var (
	fixturesMu sync.Mutex
	fixtures   = map[int]*fixture{}
)

func getFixture(b *testing.B, n int) *fixture {
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	if f := fixtures[n]; f != nil {
		return f
	}
	dir, err := os.MkdirTemp("", "registry-bench")
	if err != nil {
		b.Fatal(err)
	}
	e, err := engine.Start(engine.Config{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	nc, err := e.Connect(engine.SystemAccount)
	if err != nil {
		b.Fatal(err)
	}
	s, err := Open(context.Background(), nc, newTenants("acme"), nil)
	if err != nil {
		b.Fatal(err)
	}
	f := &fixture{e: e, s: s, n: n}
	f.fill = populate(b, s, "acme", n, 32)
	b.Logf("populated %d devices with credentials in %v (%.0f devices/s)", n, f.fill, float64(n)/f.fill.Seconds())
	f.cleanup = func() { s.Close(); nc.Close(); e.Shutdown(); os.RemoveAll(dir) }
	fixtures[n] = f
	return f
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, f := range fixtures {
		f.cleanup()
	}
	os.Exit(code)
}

func benchSizes() []int {
	sizes := []int{1000, 100000}
	if os.Getenv("THRONG_BENCH_1M") == "1" {
		sizes = append(sizes, 1000000)
	}
	return sizes
}

// BenchmarkLookup: "engine" with the lookup cache off (three KV gets),
// "cached" a repeated lookup of 1000 devices.
func BenchmarkLookup(b *testing.B) {
	for _, n := range benchSizes() {
		for _, cached := range []bool{false, true} {
			name := fmt.Sprintf("devices=%d/engine", n)
			if cached {
				name = fmt.Sprintf("devices=%d/cached", n)
			}
			b.Run(name, func(b *testing.B) {
				f := getFixture(b, n)
				ctx := context.Background()
				f.s.cache.mu.Lock()
				f.s.cache.max = map[bool]int{false: 0, true: defaultCacheSize}[cached]
				f.s.cache.mu.Unlock()
				f.s.cache.invalidate("", "")
				span := n
				if cached {
					span = 1000
					for i := 0; i < span; i++ {
						_, _ = f.s.Lookup(ctx, "acme", TypePassword, fmt.Sprintf("auth-dev%07d", (i*7919)%n))
					}
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					id := fmt.Sprintf("dev%07d", ((i%span)*7919)%n)
					idn, err := f.s.Lookup(ctx, "acme", TypePassword, "auth-"+id)
					if err != nil || idn.DeviceID != id {
						b.Fatalf("%v %v", idn, err)
					}
				}
			})
		}
	}
}

func BenchmarkPage(b *testing.B) {
	for _, n := range benchSizes() {
		if n < 100000 {
			continue
		}
		f := getFixture(b, n)
		ctx := context.Background()
		notGW, isGW := false, true
		for _, c := range []struct {
			name string
			q    Query
		}{
			{"offset=0", Query{PageSize: 100}},
			{"offset=end", Query{PageSize: 100, PageOffset: n - 100}},
			{"desc/offset=mid", Query{PageSize: 100, PageOffset: n / 2, Sort: []Sort{{Field: "/id", Direction: "desc"}}}},
			{"isGateway=true/offset=end", Query{PageSize: 100, PageOffset: n/10 - 100, IsGateway: &isGW}},
			{"isGateway=false/offset=end", Query{PageSize: 100, PageOffset: n - n/10 - 100, IsGateway: &notGW}},
		} {
			b.Run(fmt.Sprintf("devices=%d/%s", n, c.name), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					p, err := f.s.Devices(ctx, "acme", c.q)
					if err != nil || len(p.Result) != 100 {
						b.Fatalf("%d results, %v", len(p.Result), err)
					}
				}
			})
		}
	}
}

// BenchmarkScanPage is a query the index cannot answer (a filter on ext):
// it reads every device of the tenant.
func BenchmarkScanPage(b *testing.B) {
	n := 100000
	f := getFixture(b, n)
	ctx := context.Background()
	q := Query{PageSize: 100, Sort: []Sort{{Field: "/status/created", Direction: "desc"}}}
	for i := 0; i < b.N; i++ {
		p, err := f.s.Devices(ctx, "acme", q)
		if err != nil || p.Total != n {
			b.Fatalf("%d, %v", p.Total, err)
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestIndexMemory measures the heap an id index costs per device (ids as
// the benchmarks name them, and UUIDs as generated ids are).
func TestIndexMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const n = 200000
	for _, kind := range []string{"dev%07d", "uuid"} {
		ids := make([]string, n)
		for i := range ids {
			if kind == "uuid" {
				ids[i] = NewUUID()
			} else {
				ids[i] = fmt.Sprintf(kind, i)
			}
		}
		before := heapInUse()
		ti := newTenantIndex()
		for _, id := range ids {
			// the watch decodes each key into a new string
			ti.ids.Set(string([]byte(id)))
		}
		after := heapInUse()
		t.Logf("index of %d %s ids: %.1f bytes per device", n, kind, float64(after-before)/n)
		runtime.KeepAlive(ti)
		runtime.KeepAlive(ids)
	}
}

// TestScale populates THRONG_REGISTRY_SCALE devices and reports the
// creation rate, Open time, the index's memory and page and lookup times.
func TestScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("THRONG_REGISTRY_SCALE"))
	if n == 0 {
		t.Skip("set THRONG_REGISTRY_SCALE=<devices>")
	}
	dir := t.TempDir()
	e := startEngine(t, dir)
	t.Cleanup(e.Shutdown)
	ten := newTenants("acme", "small")
	s := openStore(t, e, ten)
	populate(t, s, "small", 1000, 32)
	heap0 := heapInUse()
	fill := populate(t, s, "acme", n, 32)
	t.Logf("CreateDevice+SetCredentials: %d in %v = %.0f/s", n, fill, float64(n)/fill.Seconds())
	t.Logf("process heap after populating: +%.0f bytes/device (engine state of 3 keys + index)", float64(heapInUse()-heap0)/float64(n))
	ctx := context.Background()

	before := heapInUse()
	start := time.Now()
	s2 := openStore(t, e, ten)
	open := time.Since(start)
	<-s2.Loaded()
	load := time.Since(start)
	after := heapInUse()
	t.Logf("Open with %d devices: returns in %v, index loaded in %v; heap of the new store's index %.1f bytes/device", n, open, load, float64(after-before)/float64(n))
	for _, off := range []int{0, n / 2, n - 100} {
		const reps = 20
		start := time.Now()
		for i := 0; i < reps; i++ {
			if p, err := s2.Devices(ctx, "acme", Query{PageSize: 100, PageOffset: off}); err != nil || len(p.Result) != 100 {
				t.Fatal(err)
			}
		}
		t.Logf("page of 100 at offset %d: %v", off, time.Since(start)/reps)
	}
	notGW := false
	for _, what := range []string{"first", "again"} {
		start = time.Now()
		if _, err := s2.Devices(ctx, "acme", Query{PageSize: 100, PageOffset: n - n/10 - 100, IsGateway: &notGW}); err != nil {
			t.Fatal(err)
		}
		t.Logf("page of 100 non-gateways near the end, %s: %v", what, time.Since(start))
	}
	start = time.Now()
	if p, err := s2.Devices(ctx, "acme", Query{PageSize: 100, Sort: []Sort{{Field: "/status/created", Direction: "desc"}}}); err != nil || p.Total != n {
		t.Fatal(err)
	}
	t.Logf("scan (sort by /status/created): %v", time.Since(start))
	// Lookup without the cache, in the big tenant and in a 1000-device
	// one, interleaved so that both see the same machine load.
	s2.cache.mu.Lock()
	s2.cache.max = 0
	s2.cache.mu.Unlock()
	const lookups = 5000
	var big, small time.Duration
	for i := 0; i < lookups; i++ {
		for _, c := range []struct {
			ten  string
			span int
			d    *time.Duration
		}{{"acme", n, &big}, {"small", 1000, &small}} {
			id := fmt.Sprintf("dev%07d", (i*7919)%c.span)
			start := time.Now()
			if _, err := s2.Lookup(ctx, c.ten, TypePassword, "auth-"+id); err != nil {
				t.Fatal(err)
			}
			*c.d += time.Since(start)
		}
	}
	t.Logf("Lookup (engine, no cache): %v each at %d devices, %v at 1000 devices", big/lookups, n, small/lookups)
}
