package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
)

// AMQPConfig configures an AMQP 1.0 run. It works against any AMQP 1.0
// broker; AdminURL is throng-specific (create the address first).
type AMQPConfig struct {
	Server        string // host:port
	User          string // SASL PLAIN when set, else ANONYMOUS
	Password      string
	Address       string
	Type          string // address type to create through the admin API
	AdminURL      string
	AdminUser     string
	AdminPassword string
	Tenant        string
	Senders       int
	Receivers     int
	Settle        string // "unsettled" or "presettled"
	Credit        int
	Inflight      int // concurrent unsettled transfers per sender
	Size          int
	Rate          float64
	Duration      time.Duration
	Count         int64
	Shared        bool // receivers compete (queue, anycast) rather than each get a copy
	// Client is "raw" (default: throng's pipelining client, amqpconn.go)
	// or "go-amqp" (github.com/Azure/go-amqp, as applications use it).
	Client   string
	Drain    time.Duration
	Label    string
	Progress io.Writer
}

func (c *AMQPConfig) defaults() error {
	if c.Server == "" {
		c.Server = "127.0.0.1:5672"
	}
	if c.Address == "" {
		c.Address = "bench/" + randomID()
	}
	if c.Senders == 0 {
		c.Senders = 1
	}
	if c.Receivers == 0 {
		c.Receivers = 1
	}
	switch c.Settle {
	case "":
		c.Settle = "unsettled"
	case "unsettled", "presettled":
	default:
		return fmt.Errorf("bench: --settle must be unsettled or presettled, not %q", c.Settle)
	}
	if c.Credit == 0 {
		c.Credit = 500
	}
	if c.Inflight == 0 {
		c.Inflight = 64
	}
	if c.Size == 0 {
		c.Size = 64
	}
	if c.Size < payloadHeader {
		return fmt.Errorf("bench: --size must be at least %d bytes", payloadHeader)
	}
	if c.Duration == 0 && c.Count == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Drain == 0 {
		c.Drain = 10 * time.Second
	}
	if c.Tenant == "" {
		c.Tenant = "default"
	}
	switch c.Client {
	case "":
		c.Client = "raw"
	case "raw", "go-amqp":
	default:
		return fmt.Errorf("bench: --client must be raw or go-amqp, not %q", c.Client)
	}
	if c.AdminUser == "" {
		c.AdminUser = "admin"
	}
	return nil
}

// createAddress defines the address through throng's admin API; an
// existing address is fine.
func createAddress(ctx context.Context, cfg AMQPConfig) error {
	body, _ := json.Marshal(map[string]string{"name": cfg.Address, "type": cfg.Type})
	u := cfg.AdminURL + "/api/tenants/" + url.PathEscape(cfg.Tenant) + "/addresses"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(cfg.AdminUser, cfg.AdminPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: creating address: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusConflict {
		return nil
	}
	return fmt.Errorf("bench: creating address %q: HTTP %d: %s", cfg.Address, resp.StatusCode, bytes.TrimSpace(msg))
}

func (c *AMQPConfig) dial(ctx context.Context) (*amqp.Conn, error) {
	o := &amqp.ConnOptions{SASLType: amqp.SASLTypeAnonymous()}
	if c.User != "" {
		o.SASLType = amqp.SASLTypePlain(c.User, c.Password)
	}
	return amqp.Dial(ctx, "amqp://"+c.Server, o)
}

// RunAMQP runs senders and receivers on one address and reports.
func RunAMQP(ctx context.Context, cfg AMQPConfig) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if cfg.AdminURL != "" && cfg.Type != "" {
		if err := createAddress(ctx, cfg); err != nil {
			return nil, err
		}
	}
	res := &Result{
		Mode: "amqp", Target: cfg.Server, Label: cfg.Label, Started: time.Now().UTC().Format(time.RFC3339),
		Publishers: cfg.Senders, Subscribers: cfg.Receivers, Size: cfg.Size, Rate: cfg.Rate, Topic: cfg.Address,
		Settle: cfg.Settle, Credit: cfg.Credit, Client: cfg.Client,
	}
	if cfg.Shared {
		res.Shared = "competing"
	}
	var errs errorList
	base := time.Now()
	rcvCtx, stopReceivers := context.WithCancel(ctx)
	defer stopReceivers()
	var rwg sync.WaitGroup
	defer rwg.Wait()
	defer stopReceivers()
	sendCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Count == 0 {
		sendCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	start := time.Now().Add(5 * time.Millisecond)
	var swg sync.WaitGroup
	var rcv []*Receiver
	var sentBy []*atomic.Uint64
	var err error
	if cfg.Client == "go-amqp" {
		rcv, sentBy, err = runGoAMQP(ctx, rcvCtx, sendCtx, cfg, base, start, &errs, &rwg, &swg)
	} else {
		rcv, sentBy, err = runRawAMQP(ctx, rcvCtx, sendCtx, cfg, base, start, &errs, &rwg, &swg)
	}
	if err != nil {
		return nil, err
	}
	sentNow := func() (n uint64) {
		for _, s := range sentBy {
			n += s.Load()
		}
		return n
	}
	recvNow := receivedBy(rcv)
	defer sendProgress(cfg.Progress, sentNow, recvNow)()
	swg.Wait()
	sendEnd := time.Now()

	sent := map[uint32]uint64{}
	for i, s := range sentBy {
		sent[uint32(i)] = s.Load()
	}
	expected := sentNow()
	if !cfg.Shared {
		expected *= uint64(cfg.Receivers)
	}
	awaitDeliveries(ctx, time.Now().Add(cfg.Drain), expected, recvNow)
	stopReceivers()
	rwg.Wait()
	t := Count(sent, rcv, cfg.Shared)
	var last int64
	for _, r := range rcv {
		last = max(last, r.last.Load())
	}
	seconds := sendEnd.Sub(start).Seconds()
	if last > 0 {
		seconds = max(seconds, (time.Duration(last) - start.Sub(base)).Seconds())
	}
	res.fill(t, seconds, sendEnd.Sub(start).Seconds())
	res.Errors = errs.list()
	if t.Sent == 0 && len(res.Errors) == 0 {
		return res, errors.New("bench: nothing was sent")
	}
	return res, nil
}

// runGoAMQP starts receivers and senders using go-amqp. Connections close
// when the receivers and senders are done.
func runGoAMQP(ctx, rcvCtx, sendCtx context.Context, cfg AMQPConfig, base, start time.Time, errs *errorList,
	rwg, swg *sync.WaitGroup) (rcv []*Receiver, sentBy []*atomic.Uint64, err error) {
	presettled := cfg.Settle == "presettled"
	var conns []*amqp.Conn
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()
	open := func(role string, i int) (*amqp.Session, error) {
		c, err := cfg.dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("bench: %s %d: %w", role, i, err)
		}
		conns = append(conns, c)
		s, err := c.NewSession(ctx, nil)
		if err != nil {
			return nil, fmt.Errorf("bench: %s %d: session: %w", role, i, err)
		}
		return s, nil
	}

	rcv = make([]*Receiver, cfg.Receivers)
	for i := range rcv {
		s, err := open("receiver", i)
		if err != nil {
			return nil, nil, err
		}
		ro := &amqp.ReceiverOptions{Credit: int32(cfg.Credit)}
		if presettled {
			ro.RequestedSenderSettleMode = amqp.SenderSettleModeSettled.Ptr()
		}
		link, err := s.NewReceiver(ctx, cfg.Address, ro)
		if err != nil {
			return nil, nil, fmt.Errorf("bench: receiver %d on %q: %w", i, cfg.Address, err)
		}
		r := NewReceiver(base)
		rcv[i] = r
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				m, err := link.Receive(rcvCtx, nil)
				if err != nil {
					if rcvCtx.Err() == nil {
						errs.add(fmt.Errorf("receiver: %w", err))
					}
					return
				}
				r.Record(m.GetData())
				if !presettled {
					if err := link.AcceptMessage(rcvCtx, m); err != nil && rcvCtx.Err() == nil {
						errs.add(fmt.Errorf("accept: %w", err))
					}
				}
			}
		}()
	}

	type sender struct {
		link *amqp.Sender
		sent atomic.Uint64 // sequence numbers handed out
		done atomic.Uint64 // transfers finished (settled or sent presettled)
	}
	snd := make([]*sender, cfg.Senders)
	for i := range snd {
		s, err := open("sender", i)
		if err != nil {
			return nil, nil, err
		}
		so := &amqp.SenderOptions{}
		if presettled {
			so.SettlementMode = amqp.SenderSettleModeSettled.Ptr()
		} else {
			so.SettlementMode = amqp.SenderSettleModeUnsettled.Ptr()
		}
		link, err := s.NewSender(ctx, cfg.Address, so)
		if err != nil {
			return nil, nil, fmt.Errorf("bench: sender %d on %q: %w", i, cfg.Address, err)
		}
		snd[i] = &sender{link: link}
	}

	for i, sd := range snd {
		n := shareOf(cfg.Count, cfg.Senders, i)
		type token struct {
			seq      uint64
			intended time.Time
		}
		// The schedule hands out (sequence, intended time) tokens; workers
		// send them, one transfer each in flight. A token waiting for a
		// free worker keeps its intended time: the wait counts as latency.
		tokens := make(chan token, cfg.Inflight)
		sched := NewSchedule(start, cfg.Rate/float64(cfg.Senders))
		swg.Add(1)
		go func() {
			defer swg.Done()
			defer close(tokens)
			for seq := int64(0); n < 0 || seq < n; seq++ {
				intended, err := sched.Next(sendCtx)
				if err != nil {
					return
				}
				select {
				case tokens <- token{uint64(seq), intended}:
					sd.sent.Add(1)
				case <-sendCtx.Done():
					return
				}
			}
		}()
		workers := cfg.Inflight
		if presettled {
			workers = 1 // nothing to wait for: one writer keeps order and the link busy
		}
		for w := 0; w < workers; w++ {
			swg.Add(1)
			go func() {
				defer swg.Done()
				body := make([]byte, cfg.Size)
				for t := range tokens {
					putHeader(body, uint32(i), t.seq, int64(t.intended.Sub(base)))
					m := amqp.NewMessage(body)
					// Tokens still queued when sending stops are sent
					// anyway: they were counted as sent.
					sctx, c := context.WithTimeout(ctx, 30*time.Second)
					err := sd.link.Send(sctx, m, nil)
					c()
					if err != nil {
						errs.add(fmt.Errorf("send: %w", err))
					}
					sd.done.Add(1)
				}
			}()
		}
	}
	for _, sd := range snd {
		sentBy = append(sentBy, &sd.sent)
	}
	go func() {
		swg.Wait()
		<-rcvCtx.Done()
		rwg.Wait()
		closeAll()
	}()
	return rcv, sentBy, nil
}

// runRawAMQP starts receivers and senders using the pipelining client
// (amqpconn.go).
func runRawAMQP(ctx, rcvCtx, sendCtx context.Context, cfg AMQPConfig, base, start time.Time, errs *errorList,
	rwg, swg *sync.WaitGroup) (rcv []*Receiver, sentBy []*atomic.Uint64, err error) {
	presettled := cfg.Settle == "presettled"
	var links []*amqpLink
	defer func() {
		if err != nil {
			for _, l := range links {
				l.close()
			}
		}
	}()
	dial := func(role string, i int) (*amqpLink, error) {
		l, err := dialAMQP(ctx, amqpDial{addr: cfg.Server, user: cfg.User, password: cfg.Password})
		if err != nil {
			return nil, fmt.Errorf("bench: %s %d: %w", role, i, err)
		}
		links = append(links, l)
		return l, nil
	}
	for i := 0; i < cfg.Receivers; i++ {
		l, err := dial("receiver", i)
		if err != nil {
			return nil, nil, err
		}
		if err := l.attach(frames.RoleReceiver, cfg.Address, presettled); err != nil {
			return nil, nil, fmt.Errorf("bench: receiver %d on %q: %w", i, cfg.Address, err)
		}
		r := NewReceiver(base)
		rcv = append(rcv, r)
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			defer l.close()
			if err := l.receive(rcvCtx, uint32(cfg.Credit), r.Record); err != nil && rcvCtx.Err() == nil {
				errs.add(fmt.Errorf("receiver: %w", err))
			}
		}()
	}
	senders := make([]*amqpSender, cfg.Senders)
	for i := range senders {
		l, err := dial("sender", i)
		if err != nil {
			return nil, nil, err
		}
		if err := l.attach(frames.RoleSender, cfg.Address, presettled); err != nil {
			return nil, nil, fmt.Errorf("bench: sender %d on %q: %w", i, cfg.Address, err)
		}
		senders[i] = newAMQPSender(l, presettled, func(n int, accepted bool, st encoding.DeliveryState) {
			if !accepted {
				errs.add(fmt.Errorf("send: delivery settled with %T %v", st, st))
			}
		})
	}
	for i, sd := range senders {
		sent := new(atomic.Uint64)
		sentBy = append(sentBy, sent)
		n := int64(-1)
		if cfg.Count > 0 {
			n = cfg.Count / int64(cfg.Senders)
			if int64(i) < cfg.Count%int64(cfg.Senders) {
				n++
			}
		}
		sched := NewSchedule(start, cfg.Rate/float64(cfg.Senders))
		sched.OnIdle = func() { _ = sd.l.flush() }
		swg.Add(1)
		go func() {
			defer swg.Done()
			defer sd.l.close()
			body := make([]byte, cfg.Size)
			for seq := int64(0); n < 0 || seq < n; seq++ {
				intended, err := sched.Next(sendCtx)
				if err != nil {
					break
				}
				putHeader(body, uint32(i), uint64(seq), int64(intended.Sub(base)))
				if err := sd.send(sendCtx, body, cfg.Inflight, true); err != nil {
					if sendCtx.Err() == nil {
						errs.add(fmt.Errorf("send: %w", err))
					}
					break
				}
				sent.Add(1)
			}
			// Settle what is in flight before the connection closes.
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			sd.waitUnsettled(wctx)
			cancel()
		}()
	}
	return rcv, sentBy, nil
}
