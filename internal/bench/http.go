package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// HTTPConfig configures an HTTP run: devices POSTing telemetry (or
// events) to Hono's HTTP adapter, each worker on its own kept-alive
// connection. A request counts as delivered when it is answered 2xx; its
// latency is from when it was due to its answer.
type HTTPConfig struct {
	URL      string // base URL, e.g. http://127.0.0.1:8080
	User     string // auth-id@tenant of a device with a hashed-password credential
	Password string
	Endpoint string // "telemetry" (default) or "event"
	QoS      int    // qos-level: 0 (not waited for) or 1 (needs an application consuming telemetry/T)
	Workers  int    // concurrent requests, one connection each (default 16)
	Size     int    // body bytes (default 64)
	Rate     float64
	Duration time.Duration // when Count is 0 (default 10 s)
	Count    int64
	Label    string
	Progress io.Writer
}

func (c *HTTPConfig) defaults() error {
	if c.URL == "" {
		c.URL = "http://127.0.0.1:8080"
	}
	c.URL = strings.TrimRight(c.URL, "/")
	if c.Endpoint == "" {
		c.Endpoint = "telemetry"
	}
	if c.Endpoint != "telemetry" && c.Endpoint != "event" {
		return fmt.Errorf("bench: --endpoint must be telemetry or event, not %q", c.Endpoint)
	}
	if c.QoS != 0 && c.QoS != 1 {
		return fmt.Errorf("bench: --qos must be 0 or 1, not %d", c.QoS)
	}
	if c.User == "" {
		return errors.New("bench: http needs --user auth-id@tenant and --password of a registered device")
	}
	if c.Workers <= 0 {
		c.Workers = 16
	}
	if c.Size <= 0 {
		c.Size = 64
	}
	if c.Duration == 0 && c.Count == 0 {
		c.Duration = 10 * time.Second
	}
	return nil
}

// RunHTTP runs the HTTP device load and reports.
func RunHTTP(ctx context.Context, cfg HTTPConfig) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	res := &Result{Mode: "http", Target: cfg.URL + "/" + cfg.Endpoint, Label: cfg.Label,
		Started: time.Now().UTC().Format(time.RFC3339), Publishers: cfg.Workers, QoS: cfg.QoS, Size: cfg.Size, Rate: cfg.Rate}
	body := []byte(strings.Repeat("x", cfg.Size))
	var (
		errs       errorList
		sent, ok   atomic.Uint64
		wg         sync.WaitGroup
		mu         sync.Mutex
		hist       = NewHistogram()
		firstSend  = time.Now().Add(50 * time.Millisecond)
		lastAnswer atomic.Int64
	)
	runCtx := ctx
	var cancel context.CancelFunc = func() {}
	if cfg.Count == 0 {
		runCtx, cancel = context.WithDeadline(ctx, firstSend.Add(cfg.Duration))
	}
	defer cancel()
	stop := sendProgress(cfg.Progress, sent.Load, ok.Load)
	var next atomic.Int64 // messages handed out, with Count
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DisableCompression: true}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr, Timeout: time.Minute}
			sched := NewSchedule(firstSend, cfg.Rate/float64(cfg.Workers))
			h := NewHistogram()
			defer func() {
				mu.Lock()
				hist.Merge(h)
				mu.Unlock()
			}()
			for {
				if cfg.Count > 0 && next.Add(1) > cfg.Count {
					return
				}
				due, err := sched.Next(runCtx)
				if err != nil {
					return
				}
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, cfg.URL+"/"+cfg.Endpoint, strings.NewReader(string(body)))
				req.SetBasicAuth(cfg.User, cfg.Password)
				req.Header.Set("Content-Type", "application/octet-stream")
				if cfg.QoS == 1 && cfg.Endpoint == "telemetry" {
					req.Header.Set("QoS-Level", "1")
				}
				sent.Add(1)
				resp, err := client.Do(req)
				if err != nil {
					errs.add(err)
					if ctx.Err() != nil {
						return
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				now := time.Now()
				lastAnswer.Store(now.UnixNano())
				if resp.StatusCode/100 != 2 {
					errs.add(fmt.Errorf("status %d", resp.StatusCode))
					continue
				}
				ok.Add(1)
				h.RecordDuration(now.Sub(due))
			}
		}()
	}
	wg.Wait()
	stop()
	end := time.Unix(0, lastAnswer.Load())
	secs := end.Sub(firstSend).Seconds()
	n := sent.Load()
	t := Tally{Sent: n, Expected: n, Received: ok.Load(), Lost: n - ok.Load(), Latency: hist}
	res.fill(t, secs, secs)
	res.Errors = errs.list()
	if ok.Load() == 0 && n > 0 {
		return res, fmt.Errorf("bench: no request succeeded (%s)", strings.Join(res.Errors, "; "))
	}
	return res, nil
}
