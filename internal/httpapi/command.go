package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// A request with hono-ttd consumes the device's command address (as an
// MQTT command subscription does) with credit 1, for at most ttd: the
// first well-formed command is returned in the response (200) and
// accepted once written; none by then, 202. A gateway's request for
// itself also consumes command/T/<gateway>/gateway, where commands for
// its devices without a consumer of their own arrive (the MQTT "+"
// subscription), and a gateway's request for a device consumes that
// device's address: the command names its target in
// hono-cmd-target-device.

// commandWait is a request's consumers of command addresses.
type commandWait struct {
	ch   chan offered
	cons []*router.Consumer
}

type offered struct {
	d *router.Delivery
	c *router.Consumer
}

// waitCommands attaches the request's command consumers.
func (s *Server) waitCommands(ctx context.Context, p *auth.Principal, up *hono.Upstream) (*commandWait, error) {
	addrs := []string{hono.DeviceAddress(up.Tenant, up.Device)}
	if up.Device == p.Device {
		addrs = append(addrs, hono.GatewayAddress(up.Tenant, p.Device))
	}
	cw := &commandWait{ch: make(chan offered, len(addrs))}
	for _, a := range addrs {
		var c *router.Consumer
		// deliver runs under the consumer's lock: hand over, never block
		// (credit 1 per consumer and a slot each: the default case is
		// a safety net).
		deliver := func(d *router.Delivery) {
			select {
			case cw.ch <- offered{d, c}:
			default:
				go d.Settle(router.Outcome{Kind: router.Released})
			}
		}
		var err error
		c, err = s.cfg.Router.Consume(ctx, up.Tenant, a, router.ConsumeOptions{}, func(d *router.Delivery) { deliver(d) })
		if err != nil {
			cw.close()
			return nil, err
		}
		cw.cons = append(cw.cons, c)
	}
	for _, c := range cw.cons {
		c.AddCredit(1)
	}
	return cw, nil
}

// close detaches the consumers; a command offered but not taken is
// released (the application sees the device as gone).
func (cw *commandWait) close() {
	for _, c := range cw.cons {
		c.Close()
	}
	for {
		select {
		case o := <-cw.ch:
			o.d.Settle(router.Outcome{Kind: router.Released})
		default:
			return
		}
	}
}

// command is a command shaped for an HTTP response.
type command struct {
	name, reqID, target string
	m                   *message.Message
}

// shapeCommand checks an application's command for tenant t (to =
// command/T/<device>, a subject, a usable reply-to) and builds its
// request id as for MQTT devices (hono.EncodeReqID).
func shapeCommand(t string, m *message.Message) (command, bool) {
	fam, tn, dev, ok := hono.Northbound(m.To)
	if !ok || fam != hono.Command || tn != t || !hono.ValidDeviceID(dev) || !hono.ValidCommandName(m.Subject) {
		return command{}, false
	}
	cmd := command{name: m.Subject, target: dev, m: m}
	if m.ReplyTo != "" {
		fam, rtn, replyID, ok := hono.Northbound(m.ReplyTo)
		if !ok || fam != hono.CommandResponse || rtn != t {
			return command{}, false
		}
		corr := m.CorrelationID
		if corr == nil {
			corr = m.MessageID
		}
		id, err := hono.EncodeReqID(corr, replyID)
		if err != nil {
			return command{}, false
		}
		cmd.reqID = id
	}
	return cmd, true
}

// awaitCommand waits up to ttd for a command and writes the response:
// 200 with the command, or 202.
func (s *Server) awaitCommand(w http.ResponseWriter, r *http.Request, cw *commandWait, p *auth.Principal, ttd time.Duration) int {
	timer := time.NewTimer(ttd)
	defer timer.Stop()
	for {
		select {
		case o := <-cw.ch:
			cmd, ok := shapeCommand(p.Tenant, o.d.Message)
			if !ok {
				s.m.commands.WithLabelValues("rejected").Inc()
				o.d.Settle(router.Outcome{Kind: router.Rejected, Condition: "amqp:invalid-field", Description: "not a well-formed Hono command"})
				o.c.AddCredit(1)
				continue
			}
			// Lower-case names, as Hono's adapter writes them (the
			// map is set directly: Set would canonicalize them).
			h := w.Header()
			h[headerCmd] = []string{cmd.name}
			if cmd.reqID != "" {
				h[headerCmdReqID] = []string{cmd.reqID}
			}
			if cmd.target != p.Device {
				h[headerCmdTarget] = []string{cmd.target}
			}
			if cmd.m.ContentType != "" {
				h.Set("Content-Type", cmd.m.ContentType)
			}
			h.Set("Content-Length", strconv.Itoa(len(cmd.m.Body)))
			w.WriteHeader(http.StatusOK)
			_, err := w.Write(cmd.m.Body)
			if err == nil {
				err = http.NewResponseController(w).Flush()
			}
			if err != nil {
				// The device is gone: the application learns it.
				o.d.Settle(router.Outcome{Kind: router.Released})
			} else {
				o.d.Settle(router.Outcome{Kind: router.Accepted})
			}
			s.m.commands.WithLabelValues("delivered").Inc()
			return http.StatusOK
		case <-timer.C:
			s.m.commands.WithLabelValues("expired").Inc()
			w.WriteHeader(http.StatusAccepted)
			return http.StatusAccepted
		case <-s.closing:
			s.m.commands.WithLabelValues("expired").Inc()
			w.WriteHeader(http.StatusAccepted)
			return http.StatusAccepted
		case <-r.Context().Done():
			s.m.commands.WithLabelValues("expired").Inc()
			return 499 // the client went away (nginx's code; metrics only)
		}
	}
}
