package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ConnsConfig configures an idle-connection run.
type ConnsConfig struct {
	Server    string
	User      string
	Password  string
	N         int
	SourceIPs int // spread over 127.0.0.1..127.0.0.SourceIPs (0: one per 5000 connections; loopback targets only)
	Parallel  int
	Version   int
	PID       int           // broker process whose VmRSS is reported
	Hold      time.Duration // idle time before measuring
	KeepAlive time.Duration
	Label     string
	Progress  io.Writer
}

// RunConns opens cfg.N MQTT connections (CONNECT/CONNACK), keeps them
// idle with keep-alive pings for cfg.Hold, and reports the connect rate
// and, with a PID, the broker's resident memory per connection.
func RunConns(ctx context.Context, cfg ConnsConfig) (*Result, error) {
	if cfg.N <= 0 {
		return nil, errors.New("bench: --n must be positive")
	}
	if cfg.Server == "" {
		cfg.Server = "127.0.0.1:1883"
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 32
	}
	if cfg.Version == 0 {
		cfg.Version = 3
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 60 * time.Second
	}
	raiseFileLimit()
	host, _, err := net.SplitHostPort(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("bench: --server: %w", err)
	}
	var sources []net.IP
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() && ip.To4() != nil {
		k := cfg.SourceIPs
		if k <= 0 {
			k = (cfg.N + 4999) / 5000
		}
		for i := 1; i <= min(k, 254); i++ {
			sources = append(sources, net.IPv4(127, 0, 0, byte(i)))
		}
	}
	res := &Result{Mode: "conns", Target: cfg.Server, Label: cfg.Label, Started: time.Now().UTC().Format(time.RFC3339), Version: cfg.Version}
	cr := &Conns{Requested: cfg.N, SourceIPs: max(1, len(sources)), PID: cfg.PID}
	res.Conns = cr
	if cfg.PID != 0 {
		kib, err := VmRSS(cfg.PID)
		if err != nil {
			return nil, err
		}
		cr.RSSBeforeKiB = kib
	}
	var errs errorList
	run := randomID()
	conns := make([]*mqttConn, cfg.N)
	var opened, failed atomic.Int64
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.conn.Close()
			}
		}
	}()
	stop := make(chan struct{})
	go progress(cfg.Progress, time.Second, stop, func(el time.Duration) string {
		return fmt.Sprintf("%5s  connected %d  failed %d", el, opened.Load(), failed.Load())
	})
	defer close(stop)

	start := time.Now()
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for w := 0; w < cfg.Parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= cfg.N {
					return
				}
				o := mqttOptions{Addr: cfg.Server, ClientID: fmt.Sprintf("tb-%s-c%d", run, i), User: cfg.User, Password: cfg.Password,
					Version: cfg.Version, KeepAlive: cfg.KeepAlive, Timeout: 30 * time.Second}
				if len(sources) > 0 {
					o.LocalIP = sources[i%len(sources)]
				}
				c, err := dialMQTT(ctx, o)
				if err != nil {
					failed.Add(1)
					errs.add(err)
					continue
				}
				conns[i] = c
				opened.Add(1)
			}
		}()
	}
	wg.Wait()
	connectTime := time.Since(start)
	cr.Opened, cr.Failed = int(opened.Load()), int(failed.Load())
	if connectTime > 0 {
		cr.ConnectRate = float64(cr.Opened) / connectTime.Seconds()
	}

	// Idle: one goroutine pings every connection at half the keep-alive;
	// no reader per connection (PINGRESPs wait in the socket buffer).
	pingEvery := cfg.KeepAlive / 2
	holdEnd := time.NewTimer(cfg.Hold)
	defer holdEnd.Stop()
	ticker := time.NewTicker(pingEvery)
	defer ticker.Stop()
hold:
	for {
		select {
		case <-holdEnd.C:
			break hold
		case <-ctx.Done():
			break hold
		case <-ticker.C:
			for _, c := range conns {
				if c != nil {
					errs.add(c.ping())
				}
			}
		}
	}
	if cfg.PID != 0 {
		kib, err := VmRSS(cfg.PID)
		if err != nil {
			errs.add(err)
		} else {
			cr.RSSAfterKiB = kib
			if cr.Opened > 0 {
				cr.KiBPerConn = float64(kib-cr.RSSBeforeKiB) / float64(cr.Opened)
			}
		}
	}
	// Connections the broker closed while idle count as failed.
	alive := 0
	for _, c := range conns {
		if c == nil {
			continue
		}
		_ = c.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
		var b [64]byte
		_, err := c.conn.Read(b[:])
		if ne, ok := err.(net.Error); err == nil || (ok && ne.Timeout()) {
			alive++
		}
	}
	if alive < cr.Opened {
		errs.add(fmt.Errorf("%d connections were closed by the server while idle", cr.Opened-alive))
	}
	res.Seconds = connectTime.Seconds()
	res.Errors = errs.list()
	return res, nil
}

// VmRSS reads a process's resident set size in KiB from /proc.
func VmRSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("bench: reading memory of pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(v)
			if len(fields) > 0 {
				return strconv.ParseInt(fields[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("bench: no VmRSS for pid %d", pid)
}

// raiseFileLimit lifts the soft open-files limit to the hard one: each
// connection is a descriptor.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
