package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// runMQTTPaho is RunMQTT with paho.golang (MQTT 5) for every publisher and
// subscriber: a third-party client's view of the same shape, to check
// that the bench's own pipelining client does not flatter the broker.
// paho's Publish waits for the PUBACK, so each publisher keeps its window
// (Inflight, capped by the server's receive maximum inside paho) with that
// many goroutines sharing its connection; sequence numbers are taken only
// by a publish that will be sent, so 0..sent-1 is what was sent.
func runMQTTPaho(ctx context.Context, cfg MQTTConfig, res *Result) (*Result, error) {
	if cfg.Version != 5 {
		return nil, errors.New("bench: --client paho speaks MQTT 5 only (paho.golang): use --version 5")
	}
	var errs errorList
	run := randomID()
	base := time.Now()
	var clients []*paho.Client
	defer func() {
		for _, c := range clients {
			_ = c.Disconnect(&paho.Disconnect{})
		}
	}()
	dial := func(role string, i int, onPublish func([]byte)) (*paho.Client, error) {
		addr := cfg.Server
		if role == "s" && cfg.SubServer != "" {
			addr = cfg.SubServer
		}
		d := net.Dialer{Timeout: 30 * time.Second}
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		pc := paho.ClientConfig{Conn: nc, OnClientError: func(err error) {
			if ctx.Err() == nil {
				errs.add(fmt.Errorf("%s%d: %w", role, i, err))
			}
		}}
		if onPublish != nil {
			pc.OnPublishReceived = []func(paho.PublishReceived) (bool, error){
				func(pr paho.PublishReceived) (bool, error) { onPublish(pr.Packet.Payload); return true, nil },
			}
		}
		c := paho.NewClient(pc)
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cp := &paho.Connect{ClientID: fmt.Sprintf("tb-%s-%s%d", run, role, i), CleanStart: true, KeepAlive: 60}
		if cfg.User != "" {
			cp.Username, cp.UsernameFlag = cfg.User, true
			cp.Password, cp.PasswordFlag = []byte(cfg.Password), true
		}
		ack, err := c.Connect(cctx, cp)
		if ack != nil && ack.ReasonCode != 0 {
			nc.Close()
			return nil, reasonError{"CONNECT", ack.ReasonCode}
		}
		if err != nil {
			nc.Close()
			return nil, err
		}
		clients = append(clients, c)
		return c, nil
	}

	filter := cfg.Topic
	if cfg.Shared != "" {
		filter = "$share/" + cfg.Shared + "/" + cfg.Topic
	}
	rcv := make([]*Receiver, cfg.Subscribers)
	for i := range rcv {
		r := NewReceiver(base)
		rcv[i] = r
		c, err := dial("s", i, r.Record)
		if err != nil {
			return nil, fmt.Errorf("bench: subscriber %d: %w", i, err)
		}
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		ack, err := c.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: byte(cfg.QoS)}}})
		cancel()
		if err == nil && len(ack.Reasons) > 0 && ack.Reasons[0] > 2 {
			err = reasonError{"SUBSCRIBE", ack.Reasons[0]}
		}
		if err != nil {
			return nil, fmt.Errorf("bench: subscriber %d: %w", i, err)
		}
	}

	pubs := make([]*paho.Client, cfg.Publishers)
	for i := range pubs {
		c, err := dial("p", i, nil)
		if err != nil {
			return nil, fmt.Errorf("bench: publisher %d: %w", i, err)
		}
		pubs[i] = c
	}

	pubCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.Count == 0 {
		pubCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	window := 1
	if cfg.QoS > 0 {
		window = cfg.Inflight
	}
	start := time.Now().Add(5 * time.Millisecond)
	seqs := make([]atomic.Int64, len(pubs)) // next sequence number = sent
	var pubWG sync.WaitGroup
	for i, c := range pubs {
		limit := shareOf(cfg.Count, cfg.Publishers, i)
		for range window {
			pubWG.Add(1)
			go func() {
				defer pubWG.Done()
				s := NewSchedule(start, cfg.Rate/float64(cfg.Publishers*window))
				for {
					intended, err := s.Next(pubCtx)
					if err != nil {
						return
					}
					seq := seqs[i].Add(1) - 1
					if limit >= 0 && seq >= limit {
						seqs[i].Add(-1)
						return
					}
					payload := make([]byte, cfg.Size) // paho keeps it until acknowledged
					putHeader(payload, uint32(i), uint64(seq), int64(intended.Sub(base)))
					// Not pubCtx: a publish once started is finished, so
					// that every sequence number taken was sent.
					actx, acancel := context.WithTimeout(ctx, cfg.Drain)
					_, err = c.Publish(actx, &paho.Publish{Topic: cfg.Topic, QoS: byte(cfg.QoS), Payload: payload})
					acancel()
					if err != nil {
						errs.add(fmt.Errorf("publisher %d: %w", i, err))
						return
					}
				}
			}()
		}
	}
	sentNow := func() (n uint64) {
		for i := range seqs {
			n += uint64(seqs[i].Load())
		}
		return n
	}
	recvNow := receivedBy(rcv)
	defer sendProgress(cfg.Progress, sentNow, recvNow)()

	pubWG.Wait() // every publish acknowledged (or failed)
	pubEnd := time.Now()
	sent := map[uint32]uint64{}
	for i := range seqs {
		sent[uint32(i)] = uint64(seqs[i].Load())
	}
	res.finishMQTT(ctx, cfg, sent, rcv, base, start, pubEnd, pubEnd.Add(cfg.Drain))
	res.Errors = errs.list()
	return res, nil
}
