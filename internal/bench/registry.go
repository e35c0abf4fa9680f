package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The registry mode measures the device registry (issue 12, DESIGN.md §9)
// through a throng node's public interfaces: bulk creation through the
// Hono API (/v1), pages of a large tenant, MQTT connects of devices
// authenticating as auth-id@tenant, and a reconnect storm. See
// docs/benchmarks.md, "Device registry".
//
// Device i of a run is "<prefix><i, 7 digits>" (its auth-id is its id), so
// ids sort in creation order and a rerun knows which ones exist. Its
// password is registryPassword(i): one of passwordPool fixed passwords, so
// that pre-hashed bcrypt secrets cost passwordPool bcrypt hashes in the
// bench, not one per device (a connect still runs one bcrypt comparison
// per device: the server's verification cache is per auth-id and hash).

// Secret kinds of the created credentials.
const (
	SecretPlain  = "plain"   // pwd-plain: the server hashes with bcrypt (cost 10)
	SecretBcrypt = "bcrypt"  // pwd-hash, hash-function bcrypt, hashed once per pool password by the bench (cost 10)
	SecretSHA256 = "sha-256" // pwd-hash, hash-function sha-256 with a random 16-byte salt per device
)

const (
	passwordPool = 16
	bcryptCost   = 10 // the registry's (registry.BcryptCost)
)

func registryPassword(i int) string { return "bench-pw-" + strconv.Itoa(i%passwordPool) }

// Node is the throng a bench mode runs against: a running one (AdminURL
// and Server) or a binary it starts as `throng serve` (Bin, NodeArgs).
type Node struct {
	AdminURL      string   // http://host:port of the admin listener ("" = start Bin)
	AdminUser     string   // with AdminURL
	AdminPassword string   // with AdminURL
	Server        string   // MQTT host:port of the running throng
	Bin           string   // throng binary to start when AdminURL is ""
	NodeArgs      []string // further `throng serve` flags
}

// RegistryConfig configures a registry run. Either AdminURL and Server
// name a running throng, or Bin is started as `throng serve` on DataDir.
type RegistryConfig struct {
	Node
	DataDir string // the started node's data directory: kept, and a rerun resumes on it ("" = temporary, removed)
	Pprof   bool   // the started node serves /debug/pprof on a free port (printed)

	Tenant      string // IoT tenant, created if missing (default "bench")
	Prefix      string // device id prefix (default "d")
	Devices     int    // devices to have registered (default 1000)
	Secret      string // plain, bcrypt or sha-256 (default bcrypt)
	Concurrency int    // HTTP workers, one keep-alive connection each (default 16)
	CreateFor   time.Duration

	Phases []string // of create, page, connect, storm (default all)

	PageRequests int // sequential requests per page offset (default 50)

	ConnectClients  int    // devices in each connect pass (default 1000, at most Devices)
	ConnectParallel int    // connects in progress at once (default 32)
	ColdParallel    int    // connects in progress at once in the cold pass (default 8: bcrypt-bound, more only wait)
	WarmPasses      int    // warm connect passes (default 5)
	Client          string // raw, paho or both (default raw)
	Version         int    // MQTT version of the raw client: 3 or 5 (default 5)

	Storm        int           // devices in the reconnect storm (default 10000, at most Devices; 0 with "storm" in Phases: default)
	StormTimeout time.Duration // longest a storm may take (default 15m)
	ProbeRate    float64       // probe messages per second during the storm (default 200)

	Label    string
	Progress io.Writer

	pause time.Duration // probe baseline before the storms, hold between them (default 3s; tests shorten it)
}

func (c *RegistryConfig) defaults() error {
	if c.Tenant == "" {
		c.Tenant = "bench"
	}
	if c.Prefix == "" {
		c.Prefix = "d"
	}
	if c.Devices <= 0 {
		c.Devices = 1000
	}
	if c.Devices > 9_999_999 {
		return errors.New("bench: --devices at most 9,999,999 (7-digit ids)")
	}
	if c.Secret == "" {
		c.Secret = SecretBcrypt
	}
	if c.Secret != SecretPlain && c.Secret != SecretBcrypt && c.Secret != SecretSHA256 {
		return fmt.Errorf("bench: --secret %q (want plain, bcrypt or sha-256)", c.Secret)
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 16
	}
	if len(c.Phases) == 0 {
		c.Phases = []string{"create", "page", "connect", "storm"}
	}
	for _, p := range c.Phases {
		if !slices.Contains([]string{"create", "page", "connect", "storm"}, p) {
			return fmt.Errorf("bench: unknown phase %q (want create, page, connect, storm)", p)
		}
	}
	if c.PageRequests <= 0 {
		c.PageRequests = 50
	}
	if c.ConnectClients <= 0 {
		c.ConnectClients = 1000
	}
	if c.ConnectParallel <= 0 {
		c.ConnectParallel = 32
	}
	if c.ColdParallel <= 0 {
		c.ColdParallel = 8
	}
	if c.WarmPasses <= 0 {
		c.WarmPasses = 5
	}
	if c.Client == "" {
		c.Client = "raw"
	}
	if c.Client != "raw" && c.Client != "paho" && c.Client != "both" {
		return fmt.Errorf("bench: --client %q (want raw, paho or both)", c.Client)
	}
	if c.Version == 0 {
		c.Version = 5
	}
	if c.Version != 3 && c.Version != 5 {
		return fmt.Errorf("bench: --version must be 3 or 5, not %d", c.Version)
	}
	if c.Storm <= 0 {
		c.Storm = 10000
	}
	if c.StormTimeout <= 0 {
		c.StormTimeout = 15 * time.Minute
	}
	if c.ProbeRate <= 0 {
		c.ProbeRate = 200
	}
	if c.pause <= 0 {
		c.pause = 3 * time.Second
	}
	if c.AdminURL == "" && c.Bin == "" {
		return errors.New("bench: registry needs --admin-url and --server of a running throng, or a throng binary to start")
	}
	if c.AdminURL != "" && c.Server == "" && (c.has("connect") || c.has("storm")) {
		return errors.New("bench: --server (MQTT host:port) is needed with --admin-url for the connect and storm phases")
	}
	if c.AdminUser == "" {
		c.AdminUser = "admin"
	}
	return nil
}

func (c *RegistryConfig) has(phase string) bool { return slices.Contains(c.Phases, phase) }

func (c *RegistryConfig) deviceID(i int) string { return fmt.Sprintf("%s%07d", c.Prefix, i) }

// deviceIndex parses an id of this run's prefix; -1 for any other.
func (c *RegistryConfig) deviceIndex(id string) int {
	s, ok := strings.CutPrefix(id, c.Prefix)
	if !ok || len(s) != 7 {
		return -1
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 0 {
		return -1
	}
	return i
}

// Registry is the outcome of a registry run (Result.Registry).
type Registry struct {
	Tenant      string  `json:"tenant"`
	Registered  int     `json:"registered"` // devices in the tenant at the end
	Secret      string  `json:"secret"`
	NodePID     int     `json:"node_pid,omitempty"`
	DataDir     string  `json:"data_dir,omitempty"`
	DataBytes   int64   `json:"data_bytes,omitempty"`
	NodeRSSKiB  int64   `json:"node_rss_kib,omitempty"`
	LoadStart   float64 `json:"load_start"` // 1-minute load average
	LoadEnd     float64 `json:"load_end"`
	NodeStartup float64 `json:"node_startup_seconds,omitempty"` // start → /readyz

	Create  *CreateStats  `json:"create,omitempty"`
	Pages   []PageStats   `json:"pages,omitempty"`
	Connect []ConnectPass `json:"connect,omitempty"`
	Storms  []StormPass   `json:"storms,omitempty"`
}

// CreateStats is the bulk-create phase.
type CreateStats struct {
	Requested   int     `json:"requested"`
	Existing    int     `json:"existing"` // found at the start (resumed or idempotent rerun)
	Created     int     `json:"created"`  // devices created by this run with their credentials
	Failed      int     `json:"failed"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Rate        float64 `json:"devices_per_second"`
	// ETASeconds extrapolates, when CreateFor stopped the phase, the
	// time to create the rest at the measured rate.
	ETASeconds  float64 `json:"eta_seconds,omitempty"`
	ListSeconds float64 `json:"list_seconds,omitempty"` // listing existing ids to resume
	Load        float64 `json:"load"`
	Post        Latency `json:"post"` // POST /v1/devices/{t}/{id}
	Put         Latency `json:"put"`  // PUT /v1/credentials/{t}/{id}
}

// PageStats is one page offset of the page phase.
type PageStats struct {
	Total    int     `json:"total"`
	Offset   int     `json:"offset"`
	Where    string  `json:"where"` // start, middle, end
	Size     int     `json:"size"`
	Requests int     `json:"requests"`
	Bytes    int     `json:"bytes"` // of one answer
	Latency  Latency `json:"latency"`
}

// ConnectPass is one pass of device connects (CONNECT → CONNACK →
// DISCONNECT, ConnectParallel at a time).
type ConnectPass struct {
	Name      string   `json:"name"` // cold, warm, warm-2…, paho-warm
	Client    string   `json:"client"`
	Clients   int      `json:"clients"`
	Parallel  int      `json:"parallel"`
	OK        int      `json:"ok"`
	Failed    int      `json:"failed"`
	Seconds   float64  `json:"seconds"`
	Rate      float64  `json:"connects_per_second"`
	Latency   Latency  `json:"latency"` // dial → CONNACK
	Bcrypts   float64  `json:"bcrypt_comparisons"`
	CacheHits float64  `json:"cache_hits"`
	Load      float64  `json:"load"`
	Errors    []string `json:"errors,omitempty"`
}

// StormPass is one reconnect storm: every device dials at once, and
// retries with backoff until connected.
type StormPass struct {
	Name      string   `json:"name"` // cold (first connects since the node started), warm (after a drop)
	Devices   int      `json:"devices"`
	Connected int      `json:"connected"`
	Attempts  int      `json:"attempts"`
	Seconds   float64  `json:"seconds"` // start → last device connected
	Rate      float64  `json:"connects_per_second"`
	Attempt   Latency  `json:"attempt_latency"`    // dial → CONNACK of successful attempts
	ToConnect Latency  `json:"time_to_connected"`  // storm start → a device's CONNACK
	Bcrypts   float64  `json:"bcrypt_comparisons"` // during the pass
	CacheHits float64  `json:"cache_hits"`
	Probe     *Probe   `json:"probe,omitempty"`
	Load      float64  `json:"load"`
	Errors    []string `json:"errors,omitempty"` // failed attempts by reason
}

// Probe is what a connected client saw meanwhile: QoS 1 messages from a
// publisher to a subscriber at a fixed rate, latency from each message's
// intended send time to its delivery.
type Probe struct {
	Sent     uint64  `json:"sent"`
	Received uint64  `json:"received"`
	Latency  Latency `json:"latency"`
}

// lockedHist is a Histogram many goroutines record into.
type lockedHist struct {
	mu sync.Mutex
	h  *Histogram
}

func newLockedHist() *lockedHist { return &lockedHist{h: NewHistogram()} }

func (l *lockedHist) record(d time.Duration) {
	l.mu.Lock()
	l.h.RecordDuration(d)
	l.mu.Unlock()
}

func (l *lockedHist) summary() Latency {
	l.mu.Lock()
	defer l.mu.Unlock()
	return summarize(l.h)
}

// regClient talks to the admin API.
type regClient struct {
	base, user, password string
	hc                   *http.Client
}

func newRegClient(base, user, password string, conns int) *regClient {
	tr := &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, IdleConnTimeout: time.Minute}
	return &regClient{base: strings.TrimRight(base, "/"), user: user, password: password,
		hc: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

// do sends a request and returns the status and body.
func (c *regClient) do(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.SetBasicAuth(c.user, c.password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// metrics reads the counters of /metrics whose names are given, summed
// over their labels.
func (c *regClient) metrics(ctx context.Context, names ...string) map[string]float64 {
	out := map[string]float64{}
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+"/metrics", nil)
	if err != nil {
		return out
	}
	req.SetBasicAuth(c.user, c.password)
	resp, err := c.hc.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, n := range names {
			if rest, ok := strings.CutPrefix(line, n); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
				f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
				if len(f) > 0 {
					if v, err := strconv.ParseFloat(f[0], 64); err == nil {
						out[n] += v
					}
				}
			}
		}
	}
	return out
}

const (
	mBcrypts   = "throng_auth_bcrypt_comparisons_total"
	mCacheHits = "throng_auth_cache_hits_total"
)

// RunRegistry runs the registry phases and reports.
func RunRegistry(ctx context.Context, cfg RegistryConfig) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	res := &Result{Mode: "registry", Label: cfg.Label, Started: time.Now().UTC().Format(time.RFC3339), Version: cfg.Version}
	reg := &Registry{Tenant: cfg.Tenant, Secret: cfg.Secret, LoadStart: loadAverage()}
	res.Registry = reg
	r := &regRun{cfg: cfg, res: res, reg: reg}
	raiseFileLimit() // before a node is started: it inherits the limit
	if cfg.AdminURL == "" {
		dir := cfg.DataDir
		work := ""
		if dir == "" {
			var err error
			if work, err = os.MkdirTemp("", "throng-bench-registry-"); err != nil {
				return nil, err
			}
			defer os.RemoveAll(work)
			dir = filepath.Join(work, "data")
		}
		logPath := filepath.Join(filepath.Dir(filepath.Clean(dir)), filepath.Base(dir)+".log")
		r.logf("starting %s serve --data-dir %s (log %s)", cfg.Bin, dir, logPath)
		t0 := time.Now()
		n, err := startNode(ctx, cfg.Bin, dir, logPath, cfg.Pprof, cfg.NodeArgs)
		if err != nil {
			return nil, err
		}
		reg.NodeStartup = time.Since(t0).Seconds()
		defer n.stop(time.Minute)
		r.node = n
		cfg.AdminURL, cfg.Server, cfg.AdminUser, cfg.AdminPassword = n.adminURL(), n.mqtt, "admin", n.password
		reg.NodePID = n.pid()
		if cfg.DataDir != "" {
			reg.DataDir = cfg.DataDir
		}
		if n.pprof != "" {
			r.logf("node pid %d: pprof at http://%s/debug/pprof/ (go tool pprof http://%s/debug/pprof/profile?seconds=30)", n.pid(), n.pprof, n.pprof)
		}
		r.cfg = cfg
	}
	res.Target = cfg.AdminURL
	r.api = newRegClient(cfg.AdminURL, cfg.AdminUser, cfg.AdminPassword, cfg.Concurrency)

	if err := r.ensureTenant(ctx); err != nil {
		return nil, err
	}
	if cfg.has("create") {
		if err := r.create(ctx); err != nil {
			return nil, err
		}
	}
	total, err := r.total(ctx)
	if err != nil {
		return nil, err
	}
	reg.Registered = total
	if r.node != nil {
		if kib, err := VmRSS(r.node.pid()); err == nil {
			reg.NodeRSSKiB = kib
		}
	}
	if cfg.has("page") {
		if err := r.pages(ctx, total); err != nil {
			return nil, err
		}
	}
	// Connects and storms use devices this run's numbering knows: those
	// below Devices (created now or by an earlier run).
	n := min(cfg.Devices, total)
	if cfg.has("connect") && ctx.Err() == nil {
		r.connectPasses(ctx, n)
	}
	if cfg.has("storm") && ctx.Err() == nil {
		if err := r.storms(ctx, n); err != nil {
			return nil, err
		}
	}
	if r.node != nil {
		if kib, err := VmRSS(r.node.pid()); err == nil {
			reg.NodeRSSKiB = max(reg.NodeRSSKiB, kib)
		}
		reg.DataBytes = dirSize(r.node.dataDir)
	}
	reg.LoadEnd = loadAverage()
	res.Errors = r.errs.list()
	return res, ctx.Err()
}

type regRun struct {
	cfg  RegistryConfig
	res  *Result
	reg  *Registry
	node *node
	api  *regClient
	errs errorList
}

func (r *regRun) logf(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
}

func (r *regRun) ensureTenant(ctx context.Context) error {
	code, body, err := r.api.do(ctx, "POST", "/v1/tenants/"+url.PathEscape(r.cfg.Tenant), []byte("{}"))
	if err != nil {
		return fmt.Errorf("bench: creating tenant %q: %w", r.cfg.Tenant, err)
	}
	if code != http.StatusCreated && code != http.StatusConflict {
		return fmt.Errorf("bench: creating tenant %q: HTTP %d %s", r.cfg.Tenant, code, bytes.TrimSpace(body))
	}
	return nil
}

// total is the tenant's device count (a search's total; an empty tenant
// answers 404 as in Hono).
func (r *regRun) total(ctx context.Context) (int, error) {
	code, body, err := r.api.do(ctx, "GET", "/v1/devices/"+url.PathEscape(r.cfg.Tenant)+"?pageSize=1", nil)
	if err != nil {
		return 0, err
	}
	switch code {
	case http.StatusNotFound:
		return 0, nil
	case http.StatusOK:
		var p struct {
			Total int `json:"total"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return 0, fmt.Errorf("bench: search answer: %w", err)
		}
		return p.Total, nil
	}
	return 0, fmt.Errorf("bench: device search: HTTP %d %s", code, bytes.TrimSpace(body))
}

// existing lists the tenant's device ids of this run's numbering, page by
// page in id order.
func (r *regRun) existing(ctx context.Context, total int) (map[int]bool, error) {
	have := make(map[int]bool, total)
	const size = 200
	for off := 0; off < total; off += size {
		q := fmt.Sprintf("/v1/devices/%s?pageSize=%d&pageOffset=%d", url.PathEscape(r.cfg.Tenant), size, off)
		code, body, err := r.api.do(ctx, "GET", q, nil)
		if err != nil {
			return nil, err
		}
		if code == http.StatusNotFound {
			break
		}
		if code != http.StatusOK {
			return nil, fmt.Errorf("bench: listing devices: HTTP %d %s", code, bytes.TrimSpace(body))
		}
		var p struct {
			Result []struct {
				ID string `json:"id"`
			} `json:"result"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, err
		}
		if len(p.Result) == 0 {
			break
		}
		for _, d := range p.Result {
			if i := r.cfg.deviceIndex(d.ID); i >= 0 {
				have[i] = true
			}
		}
		if off%20000 == 0 && off > 0 {
			r.logf("listing existing devices: %d of %d", off, total)
		}
	}
	return have, nil
}

// secrets builds the credentials body of device i.
type secretMaker struct {
	kind   string
	bcrypt [passwordPool]string
}

func newSecretMaker(kind string) (*secretMaker, error) {
	m := &secretMaker{kind: kind}
	if kind == SecretBcrypt {
		for i := range m.bcrypt {
			h, err := bcrypt.GenerateFromPassword([]byte(registryPassword(i)), bcryptCost)
			if err != nil {
				return nil, err
			}
			m.bcrypt[i] = string(h)
		}
	}
	return m, nil
}

func (m *secretMaker) body(authID string, i int) []byte {
	secret := map[string]any{}
	pw := registryPassword(i)
	switch m.kind {
	case SecretPlain:
		secret["pwd-plain"] = pw
	case SecretBcrypt:
		secret["hash-function"], secret["pwd-hash"] = "bcrypt", m.bcrypt[i%passwordPool]
	case SecretSHA256:
		salt := make([]byte, 16)
		_, _ = rand.Read(salt)
		sum := sha256.Sum256(append(slices.Clone(salt), pw...))
		secret["hash-function"], secret["pwd-hash"], secret["salt"] = "sha-256",
			base64.StdEncoding.EncodeToString(sum[:]), base64.StdEncoding.EncodeToString(salt)
	}
	b, _ := json.Marshal([]any{map[string]any{"type": "hashed-password", "auth-id": authID, "secrets": []any{secret}}})
	return b
}

// create registers the devices 0..Devices-1 that do not exist yet, each
// with its credentials, Concurrency at a time over keep-alive connections.
//
// Resuming: the ids found are skipped. A device whose credentials were not
// set when an earlier run stopped is among the last ones it took (workers
// take ids in order and finish one before the next): the credentials of
// the existing devices among the 4×Concurrency highest existing ids are
// set again (a PUT replaces the set, so this is idempotent).
func (r *regRun) create(ctx context.Context) error {
	cfg := r.cfg
	cs := &CreateStats{Requested: cfg.Devices, Concurrency: cfg.Concurrency}
	r.reg.Create = cs
	sm, err := newSecretMaker(cfg.Secret)
	if err != nil {
		return err
	}
	total, err := r.total(ctx)
	if err != nil {
		return err
	}
	var have map[int]bool
	if total > 0 {
		t0 := time.Now()
		r.logf("tenant %q has %d devices: listing them to resume", cfg.Tenant, total)
		if have, err = r.existing(ctx, total); err != nil {
			return err
		}
		cs.ListSeconds = time.Since(t0).Seconds()
	}
	var todo []int // devices to create
	var redo []int // existing devices whose credentials are set again
	maxHave := -1
	for i := range have {
		if i < cfg.Devices {
			cs.Existing++
			maxHave = max(maxHave, i)
		}
	}
	for i := 0; i < cfg.Devices; i++ {
		switch {
		case !have[i]:
			todo = append(todo, i)
		case i > maxHave-4*cfg.Concurrency:
			redo = append(redo, i)
		}
	}
	if len(todo) == 0 {
		r.logf("all %d devices exist: nothing to create", cfg.Devices)
	}
	post, put := newLockedHist(), newLockedHist()
	var created, failed atomic.Int64
	runCtx := ctx
	if cfg.CreateFor > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, cfg.CreateFor)
		defer cancel()
	}
	stop := make(chan struct{})
	var last int64
	go progress(cfg.Progress, 5*time.Second, stop, func(el time.Duration) string {
		n := created.Load()
		line := fmt.Sprintf("%5s  created %d of %d (%d/s over the last 5s, %d existed)  failed %d", el, n, len(todo), (n-last)/5, cs.Existing, failed.Load())
		last = n
		return line
	})
	work := make(chan [2]int) // index, 1 if only the credentials
	var wg sync.WaitGroup
	start := time.Now()
	tenantPath := url.PathEscape(cfg.Tenant) + "/"
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for job := range work {
				i := job[0]
				id := cfg.deviceID(i)
				if job[1] == 0 {
					t := time.Now()
					code, body, err := r.retry(ctx, "POST", "/v1/devices/"+tenantPath+id, []byte("{}"))
					switch {
					case err != nil:
						r.errs.add(fmt.Errorf("POST device: %w", err))
						failed.Add(1)
						continue
					case code == http.StatusConflict: // created meanwhile: set its credentials
					case code != http.StatusCreated:
						r.errs.add(fmt.Errorf("POST device: HTTP %d %s", code, bytes.TrimSpace(body)))
						failed.Add(1)
						continue
					default:
						post.record(time.Since(t))
					}
				}
				t := time.Now()
				code, body, err := r.retry(ctx, "PUT", "/v1/credentials/"+tenantPath+id, sm.body(id, i))
				switch {
				case err != nil:
					r.errs.add(fmt.Errorf("PUT credentials: %w", err))
					failed.Add(1)
				case code != http.StatusNoContent:
					r.errs.add(fmt.Errorf("PUT credentials: HTTP %d %s", code, bytes.TrimSpace(body)))
					failed.Add(1)
				default:
					put.record(time.Since(t))
					if job[1] == 0 {
						created.Add(1)
					}
				}
			}
		}()
	}
	func() {
		for _, i := range redo {
			select {
			case work <- [2]int{i, 1}:
			case <-ctx.Done():
				return
			}
		}
		for _, i := range todo {
			select {
			case work <- [2]int{i, 0}:
			case <-runCtx.Done():
				return
			}
		}
	}()
	close(work)
	wg.Wait()
	close(stop)
	el := time.Since(start)
	cs.Created, cs.Failed = int(created.Load()), int(failed.Load())
	cs.Seconds = el.Seconds()
	if el > 0 {
		cs.Rate = float64(cs.Created) / el.Seconds()
	}
	if rest := len(todo) - cs.Created; rest > 0 && cs.Rate > 0 && runCtx.Err() != nil && ctx.Err() == nil {
		cs.ETASeconds = float64(rest) / cs.Rate
	}
	cs.Post, cs.Put = post.summary(), put.summary()
	cs.Load = loadAverage()
	r.logf("created %d devices in %.1fs: %.0f/s (POST p50 %s p99 %s, PUT p50 %s p99 %s)", cs.Created, cs.Seconds, cs.Rate,
		fmtUS(cs.Post.P50), fmtUS(cs.Post.P99), fmtUS(cs.Put.P50), fmtUS(cs.Put.P99))
	return ctx.Err()
}

// retry sends a request, again after a transport error or a 5xx (at most
// 3 tries).
func (r *regRun) retry(ctx context.Context, method, path string, body []byte) (int, []byte, error) {
	var code int
	var b []byte
	var err error
	for try := 0; try < 3; try++ {
		code, b, err = r.api.do(ctx, method, path, body)
		if err == nil && code < 500 {
			return code, b, nil
		}
		if ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
	}
	return code, b, err
}

// pages times GET /v1/devices/{t}?pageSize=100&pageOffset=X at the start,
// middle and end of the tenant, one request at a time.
func (r *regRun) pages(ctx context.Context, total int) error {
	if total == 0 {
		return nil
	}
	const size = 100
	for _, at := range []struct {
		where string
		off   int
	}{{"start", 0}, {"middle", total / 2}, {"end", max(0, total-size)}} {
		ps := PageStats{Total: total, Offset: at.off, Where: at.where, Size: size, Requests: r.cfg.PageRequests}
		h := NewHistogram()
		q := fmt.Sprintf("/v1/devices/%s?pageSize=%d&pageOffset=%d", url.PathEscape(r.cfg.Tenant), size, at.off)
		for i := 0; i < r.cfg.PageRequests && ctx.Err() == nil; i++ {
			t := time.Now()
			code, body, err := r.api.do(ctx, "GET", q, nil)
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("bench: page at %d: HTTP %d %s", at.off, code, bytes.TrimSpace(body))
			}
			h.RecordDuration(time.Since(t))
			ps.Bytes = len(body)
		}
		ps.Latency = summarize(h)
		r.reg.Pages = append(r.reg.Pages, ps)
		r.logf("page of %d at offset %d of %d: p50 %s p99 %s", size, at.off, total, fmtUS(ps.Latency.P50), fmtUS(ps.Latency.P99))
	}
	return ctx.Err()
}

// spread picks k device indexes spread evenly over 0..n-1, each shifted
// by off within its stride when the stride allows.
func spread(n, k, off int) []int {
	k = min(k, n)
	if k <= 0 {
		return nil
	}
	stride := n / k
	out := make([]int, k)
	for j := range out {
		out[j] = j*stride + off%max(1, stride)
	}
	sort.Ints(out)
	return out
}

func (g *Registry) writeText(w io.Writer) {
	fmt.Fprintf(w, "  tenant       %s: %d devices registered (secrets: %s)\n", g.Tenant, g.Registered, g.Secret)
	if g.NodePID != 0 {
		fmt.Fprintf(w, "  node         pid %d, ready in %.1fs, VmRSS %d MiB", g.NodePID, g.NodeStartup, g.NodeRSSKiB/1024)
		if g.DataBytes > 0 {
			fmt.Fprintf(w, ", data %d MiB", g.DataBytes>>20)
		}
		if g.DataDir != "" {
			fmt.Fprintf(w, " (%s)", g.DataDir)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  load average %.2f at the start, %.2f at the end\n", g.LoadStart, g.LoadEnd)
	if c := g.Create; c != nil {
		fmt.Fprintf(w, "  create       %d created, %d existed, %d failed of %d in %.1fs: %.0f devices/s (concurrency %d, load %.2f)\n",
			c.Created, c.Existing, c.Failed, c.Requested, c.Seconds, c.Rate, c.Concurrency, c.Load)
		if c.ListSeconds > 0 {
			fmt.Fprintf(w, "               listing the existing devices to resume took %.1fs\n", c.ListSeconds)
		}
		if c.ETASeconds > 0 {
			fmt.Fprintf(w, "               stopped by --create-for: the other %d would take %s more at this rate (extrapolated)\n",
				c.Requested-c.Existing-c.Created, (time.Duration(c.ETASeconds) * time.Second).Round(time.Second))
		}
		fmt.Fprintf(w, "               POST device      p50 %s  p99 %s  max %s  (%d)\n", fmtUS(c.Post.P50), fmtUS(c.Post.P99), fmtUS(c.Post.Max), c.Post.Count)
		fmt.Fprintf(w, "               PUT credentials  p50 %s  p99 %s  max %s  (%d)\n", fmtUS(c.Put.P50), fmtUS(c.Put.P99), fmtUS(c.Put.Max), c.Put.Count)
	}
	for _, p := range g.Pages {
		fmt.Fprintf(w, "  page         %-6s pageSize=%d pageOffset=%d of %d: p50 %s  p99 %s  max %s  (%d requests, %d bytes)\n",
			p.Where, p.Size, p.Offset, p.Total, fmtUS(p.Latency.P50), fmtUS(p.Latency.P99), fmtUS(p.Latency.Max), p.Requests, p.Bytes)
	}
	for _, c := range g.Connect {
		fmt.Fprintf(w, "  connect      %-9s %s: %d ok, %d failed of %d (parallel %d) in %.2fs: %.0f/s; p50 %s  p99 %s  max %s; %.0f bcrypt, %.0f cache hits (load %.2f)\n",
			c.Name, c.Client, c.OK, c.Failed, c.Clients, c.Parallel, c.Seconds, c.Rate, fmtUS(c.Latency.P50), fmtUS(c.Latency.P99), fmtUS(c.Latency.Max), c.Bcrypts, c.CacheHits, c.Load)
		for _, e := range c.Errors {
			fmt.Fprintf(w, "               failed: %s\n", e)
		}
	}
	for _, s := range g.Storms {
		if s.Name != "baseline" {
			fmt.Fprintf(w, "  storm        %-5s %d of %d connected in %.1fs: %.0f/s, %d attempts; attempt p50 %s p99 %s; time to connected p50 %s p99 %s; %.0f bcrypt, %.0f cache hits (load %.2f)\n",
				s.Name, s.Connected, s.Devices, s.Seconds, s.Rate, s.Attempts, fmtUS(s.Attempt.P50), fmtUS(s.Attempt.P99),
				fmtUS(s.ToConnect.P50), fmtUS(s.ToConnect.P99), s.Bcrypts, s.CacheHits, s.Load)
			for _, e := range s.Errors {
				fmt.Fprintf(w, "               failed attempts: %s\n", e)
			}
		}
		if p := s.Probe; p != nil {
			fmt.Fprintf(w, "  probe        %-8s QoS 1 %d sent, %d received: p50 %s  p99 %s  max %s\n", s.Name, p.Sent, p.Received, fmtUS(p.Latency.P50), fmtUS(p.Latency.P99), fmtUS(p.Latency.Max))
		}
	}
}
