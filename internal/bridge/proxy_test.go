package bridge_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// proxy forwards a loopback port to a remote; down closes the port and
// every connection through it (the remote is unreachable, as when it or
// the network dies), up opens the same port again.
type proxy struct {
	t      *testing.T
	target string
	Addr   string

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, target: target, conns: map[net.Conn]bool{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.Addr = l.Addr().String()
	p.serve(l)
	t.Cleanup(p.down)
	return p
}

func (p *proxy) serve(l net.Listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			r, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			if p.l != l {
				p.mu.Unlock()
				c.Close()
				r.Close()
				return
			}
			p.conns[c], p.conns[r] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(r, c); r.Close(); c.Close() }()
			go func() { _, _ = io.Copy(c, r); r.Close(); c.Close() }()
		}
	}()
}

func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *proxy) up() {
	p.t.Helper()
	var l net.Listener
	var err error
	for range 50 {
		if l, err = net.Listen("tcp", p.Addr); err == nil {
			p.serve(l)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("proxy: %v", err)
}
