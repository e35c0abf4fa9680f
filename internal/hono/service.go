package hono

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/router"
)

// Hono's application properties and content types.
const (
	PropDeviceID    = "device_id"
	PropTenantID    = "tenant_id"
	PropGatewayID   = "gateway_id"
	PropOrigAdapter = "orig_adapter"
	PropOrigAddress = "orig_address"
	PropQoS         = "qos"
	PropStatus      = "status"
	PropTTD         = "ttd"

	// ContentTypeEmpty is Hono's empty notification (ttd events).
	ContentTypeEmpty = "application/vnd.eclipse-hono-empty-notification"
	// ContentTypeDefault is used for a payload without a content type.
	ContentTypeDefault = "application/octet-stream"
)

// Registry is what the service needs from the device registry
// (*registry.Store).
type Registry interface {
	Device(ctx context.Context, tenantName, id string) (*registry.Device, string, error)
}

// Publisher is what the service needs from the router (*router.Router).
type Publisher interface {
	Publish(ctx context.Context, tenantName, name string, m *message.Message) (router.Outcome, error)
}

// Service is the device side of Hono's APIs, shared by the front-ends.
// It holds no per-device state but caches: every check asks the
// registry; devices' defaults and tenants' settings are cached
// (defaults.go).
type Service struct {
	reg     Registry
	pub     Publisher
	tenants Tenants // nil: no tenant defaults, limits, connection events
	log     *slog.Logger
	now     func() time.Time

	mu    sync.RWMutex
	tconf map[string]*tenantConf // by tenant; guarded by mu
	devs  deviceDefaults

	seen    func(tenantName, device string, ttd time.Duration) // OnDeviceSeen; nil: none
	waiting func(tenantName, device string, waiting bool)      // OnDeviceWaiting; nil: none
}

// OnDeviceWaiting makes Notify call f when a device begins (ttd -1) or
// stops (ttd 0) waiting for commands: the silent-device finder
// (internal/metrics). Call it before the service is used.
func (s *Service) OnDeviceWaiting(f func(tenantName, device string, waiting bool)) { s.waiting = f }

// OnDeviceSeen makes every device message resolved by Upstream (all
// adapters) call f with its device and ttd: the silent-device finder
// (internal/metrics). Call it before the service is used.
func (s *Service) OnDeviceSeen(f func(tenantName, device string, ttd time.Duration)) { s.seen = f }

// New returns the service. A registry that also serves tenants (Tenants,
// as *registry.Store) gives the tenants' defaults, limits and settings;
// one that reports device changes (OnCredentialsChange) keeps the cache
// of devices' defaults current.
func New(reg Registry, pub Publisher, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{reg: reg, pub: pub, log: log.With("component", "hono"), now: time.Now}
	if t, ok := reg.(Tenants); ok {
		s.tenants = t
	}
	if n, ok := reg.(changeNotifier); ok {
		n.OnCredentialsChange(s.devs.invalidate)
		s.devs.watched = true
	}
	return s
}

// Upstream is a device's message resolved: where it goes and what it is.
type Upstream struct {
	Kind    Kind
	Tenant  string
	Device  string // the device the message is for (a gateway's target)
	Address string // telemetry/T, event/T or command_response/T/<reply-id>
	Message *message.Message
}

// UpstreamRequest is a device's PUBLISH (or HTTP request) to resolve.
type UpstreamRequest struct {
	Adapter     string // auth.AdapterMQTT, ...
	Topic       string // the topic as published (orig_address)
	QoS         byte
	Payload     []byte
	ContentType string // the protocol's own content type (MQTT 5), if any
	// TTL is the device's time to live for an event given outside the
	// topic (HTTP's hono-ttl header); the topic's hono-ttl wins.
	TTL time.Duration
	// TTD is how long the device waits for a command (HTTP's hono-ttd),
	// for the silent-device finder.
	TTD time.Duration
}

// Upstream resolves a device's publish: parses the topic, checks a
// gateway's right to publish for the device it names, and builds the
// message with Hono's properties, the tenant's and device's defaults and
// the tenant's TTL limits (defaults.go). Errors wrap ErrMalformed,
// ErrNotAuthorized or ErrUnknownDevice.
func (s *Service) Upstream(ctx context.Context, p *auth.Principal, req UpstreamRequest) (*Upstream, error) {
	pt, err := ParsePublish(req.Topic)
	if err != nil {
		return nil, err
	}
	if IsUnauthenticated(p) {
		// The topic names the device (unauth.go): it publishes as itself.
		if p, err = s.unauthenticated(ctx, p, req.Adapter, pt.Tenant, pt.Device); err != nil {
			return nil, err
		}
	}
	dev, err := s.target(ctx, p, pt.Tenant, pt.Device)
	if err != nil {
		return nil, err
	}
	if s.seen != nil {
		s.seen(p.Tenant, dev, req.TTD)
	}
	t := p.Tenant
	ct := req.ContentType
	if v := pt.Bag.Get("content-type"); v != "" {
		ct = v
	}
	now := s.now()
	m := &message.Message{
		Body: req.Payload, CreationTime: now, ContentType: ct, Durable: req.QoS > 0,
		Properties: map[string]any{
			PropDeviceID:    dev,
			PropTenantID:    t,
			PropOrigAdapter: req.Adapter,
			PropOrigAddress: req.Topic,
		},
	}
	if dev != p.Device {
		m.Properties[PropGatewayID] = p.Device
	}
	u := &Upstream{Kind: pt.Kind, Tenant: t, Device: dev, Message: m}
	var deviceTTL time.Duration
	switch pt.Kind {
	case KindTelemetry, KindEvent:
		// An empty payload needs the message's own content type (Hono:
		// a default does not count).
		if m.ContentType == "" && len(req.Payload) == 0 {
			return nil, fmt.Errorf("%w: an empty payload needs a content-type", ErrMalformed)
		}
		m.Properties[PropQoS] = int32(req.QoS)
		u.Address = Telemetry + "/" + t
		if pt.Kind == KindEvent {
			u.Address = Event + "/" + t
			m.Durable = true
			deviceTTL = req.TTL
			if v := pt.Bag.Get("hono-ttl"); v != "" {
				ttl, err := strconv.ParseUint(v, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("%w: hono-ttl %q", ErrMalformed, v)
				}
				deviceTTL = time.Duration(ttl) * time.Second
			}
		}
		// Other entries of the bag travel as application properties
		// (Hono does the same); Hono's own names stay out.
		for k, vs := range pt.Bag {
			switch k {
			case "content-type", "hono-ttl", "hono-ttd", "on-error", "correlation-id":
				continue
			}
			if _, taken := m.Properties[k]; !taken && len(vs) > 0 {
				m.Properties[k] = vs[len(vs)-1]
			}
		}
	case KindCommandResponse:
		corr, replyID, err := DecodeReqID(pt.ReqID)
		if err != nil {
			return nil, err
		}
		u.Address = CommandResponse + "/" + t + "/" + replyID
		m.To = u.Address
		m.CorrelationID = corr
		m.Properties = map[string]any{
			PropDeviceID: dev,
			PropTenantID: t,
			PropStatus:   int32(pt.Status),
		}
	}
	if m.To == "" {
		m.To = u.Address
	}
	defs, err := s.deviceDefaults(ctx, t, dev)
	if err != nil {
		return nil, err
	}
	applyDefaults(s.tenantConf(t), defs, m, pt.Kind, req.QoS, deviceTTL)
	// A response without a body stays without a content type; one with a
	// body gets the default, as Hono's adapters do (their downstream
	// message factory sets application/octet-stream whenever a payload
	// has none).
	if m.ContentType == "" && (pt.Kind != KindCommandResponse || len(m.Body) > 0) {
		m.ContentType = ContentTypeDefault
	}
	return u, nil
}

// target returns the device a message or subscription of principal p is
// for: p's own device when the topic names none (or names p), else the
// device named, which must list p as a gateway (via, or a group of
// viaGroups that p is a member of).
func (s *Service) target(ctx context.Context, p *auth.Principal, topicTenant, device string) (string, error) {
	if !p.IsDevice() {
		return "", fmt.Errorf("%w: not a device", ErrNotAuthorized)
	}
	if topicTenant != "" && topicTenant != p.Tenant {
		return "", fmt.Errorf("%w: tenant %q is not the device's", ErrNotAuthorized, topicTenant)
	}
	if device == "" || device == p.Device {
		return p.Device, nil
	}
	if err := s.AuthorizeGateway(ctx, p.Tenant, p.Device, device); err != nil {
		return "", err
	}
	return device, nil
}

// AuthorizeGateway checks that gateway may act for device in a tenant
// (Hono's registration assertion with a gateway id).
func (s *Service) AuthorizeGateway(ctx context.Context, tenantName, gateway, device string) error {
	d, _, err := s.reg.Device(ctx, tenantName, device)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		// Hono answers 403 for a gateway and an unknown device too.
		return fmt.Errorf("%w: device %q is not registered", ErrNotAuthorized, device)
	case err != nil:
		return fmt.Errorf("hono: registry: %w", err)
	case !d.IsEnabled():
		return fmt.Errorf("%w: device %q is disabled", ErrNotAuthorized, device)
	}
	if slices.Contains(d.Via, gateway) {
		return nil
	}
	if len(d.ViaGroups) > 0 {
		g, _, err := s.reg.Device(ctx, tenantName, gateway)
		if err != nil && !errors.Is(err, registry.ErrNotFound) {
			return fmt.Errorf("hono: registry: %w", err)
		}
		if g != nil {
			for _, grp := range g.MemberOf {
				if slices.Contains(d.ViaGroups, grp) {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("%w: %q is not a gateway of device %q", ErrNotAuthorized, gateway, device)
}

// CommandSubscription is a device's command subscription resolved: the
// addresses to consume in Tenant, and how commands go out to it.
type CommandSubscription struct {
	Filter    CommandFilter
	Tenant    string
	Self      string   // the subscribing device
	Device    string   // the device named by the filter ("" own, "+" all of a gateway's)
	Addresses []string // command/T/<device>, and command/T/<self>/gateway for "+"
}

// Subscribe resolves a device's SUBSCRIBE filter for commands.
func (s *Service) Subscribe(ctx context.Context, p *auth.Principal, filter string) (*CommandSubscription, error) {
	return s.subscribe(ctx, p, auth.AdapterMQTT, filter)
}

// SubscribeAMQP resolves the filter of an AMQP device's command link
// (CommandSourceFilter) as Subscribe does an MQTT filter; an
// unauthenticated device's is checked against the tenant's hono-amqp
// adapter entry.
func (s *Service) SubscribeAMQP(ctx context.Context, p *auth.Principal, filter string) (*CommandSubscription, error) {
	return s.subscribe(ctx, p, auth.AdapterAMQP, filter)
}

func (s *Service) subscribe(ctx context.Context, p *auth.Principal, adapter, filter string) (*CommandSubscription, error) {
	f, err := ParseCommandFilter(filter)
	if err != nil {
		return nil, err
	}
	if !p.IsDevice() {
		return nil, fmt.Errorf("%w: not a device", ErrNotAuthorized)
	}
	if IsUnauthenticated(p) {
		// command/T/<device>/req/# only (unauth.go; AMQP:
		// command/T/<device>).
		if p, err = s.unauthenticated(ctx, p, adapter, f.Tenant, f.Device); err != nil {
			return nil, err
		}
	}
	if f.Tenant != "" && f.Tenant != "+" && f.Tenant != p.Tenant {
		return nil, fmt.Errorf("%w: tenant %q is not the device's", ErrNotAuthorized, f.Tenant)
	}
	cs := &CommandSubscription{Filter: f, Tenant: p.Tenant, Self: p.Device, Device: f.Device}
	switch f.Device {
	case "+":
		// A gateway for all its devices (and, as for any device, itself):
		// commands for a device without a subscription of its own are
		// sent to its gateways' command/T/<gateway>/gateway addresses.
		cs.Addresses = []string{DeviceAddress(p.Tenant, p.Device), GatewayAddress(p.Tenant, p.Device)}
	default:
		dev, err := s.target(ctx, p, "", f.Device)
		if err != nil {
			return nil, err
		}
		cs.Addresses = []string{DeviceAddress(p.Tenant, dev)}
	}
	return cs, nil
}

// Downstream is a command shaped for a device: its topic and the message
// to send (payload and content type only).
type Downstream struct {
	Topic   string
	Message *message.Message
}

// CommandTopic shapes a command delivered on one of the subscription's
// addresses (its message's "to" names the target device). ok is false for
// a message that is not a well-formed command (it is then rejected).
func (cs *CommandSubscription) CommandTopic(m *message.Message) (Downstream, bool) {
	_, tn, rest, ok := Northbound(m.To)
	if !ok || tn != cs.Tenant || rest == "" || !ValidDeviceID(rest) || !ValidCommandName(m.Subject) {
		return Downstream{}, false
	}
	reqID := ""
	if m.ReplyTo != "" {
		_, rtn, replyID, ok := Northbound(m.ReplyTo)
		if !ok || rtn != cs.Tenant {
			return Downstream{}, false
		}
		corr := m.CorrelationID
		if corr == nil {
			corr = m.MessageID
		}
		id, err := EncodeReqID(corr, replyID)
		if err != nil {
			return Downstream{}, false
		}
		reqID = id
	}
	out := &message.Message{Body: m.Body, BodyKind: m.BodyKind, ContentType: m.ContentType, Durable: true, CreationTime: m.CreationTime}
	return Downstream{Topic: cs.Filter.CommandTopic(cs.Tenant, cs.Self, rest, reqID, m.Subject), Message: out}, true
}

// CheckCommand validates an application's command for tenant T (Hono's
// command API): to = command/T/<device>, a subject, and for
// request/response a reply-to command_response/T/<reply-id> with a
// correlation-id or message-id. It returns the target device.
func CheckCommand(tenantName string, m *message.Message) (string, error) {
	fam, tn, rest, ok := Northbound(m.To)
	if !ok || fam != Command || tn != tenantName || rest == "" || !ValidDeviceID(rest) {
		return "", fmt.Errorf("%w: a command's to must be %s/%s/<device-id>", ErrMalformed, Command, tenantName)
	}
	if !ValidCommandName(m.Subject) {
		return "", fmt.Errorf("%w: a command needs a subject (the command name) usable in a topic", ErrMalformed)
	}
	if m.ReplyTo != "" {
		fam, rtn, _, ok := Northbound(m.ReplyTo)
		if !ok || fam != CommandResponse || rtn != tenantName {
			return "", fmt.Errorf("%w: reply-to must be %s/%s/<reply-id>", ErrMalformed, CommandResponse, tenantName)
		}
		corr := m.CorrelationID
		if corr == nil {
			corr = m.MessageID
		}
		if _, err := EncodeReqID(corr, "x"); err != nil {
			return "", fmt.Errorf("%w: a request/response command needs a correlation-id or message-id", ErrMalformed)
		}
	}
	return rest, nil
}

// ViaGateway sends a command for a device that has no subscription of its
// own to the first of its gateways that subscribed for all its devices:
// those of via in their order, then the members (memberOf) of its
// viaGroups (gateways.go). router.ErrNoConsumers when none did.
func (s *Service) ViaGateway(ctx context.Context, tenantName, device string, m *message.Message) (router.Outcome, error) {
	d, _, err := s.reg.Device(ctx, tenantName, device)
	if err != nil || !d.IsEnabled() {
		return router.Outcome{}, router.ErrNoConsumers
	}
	tried := make(map[string]bool, len(d.Via))
	send := func(gws []string) (router.Outcome, error) {
		for _, gw := range gws {
			if gw == device || tried[gw] || !ValidDeviceID(gw) {
				continue
			}
			tried[gw] = true
			o, err := s.pub.Publish(ctx, tenantName, GatewayAddress(tenantName, gw), m)
			if errors.Is(err, router.ErrNoConsumers) {
				continue
			}
			return o, err
		}
		return router.Outcome{}, router.ErrNoConsumers
	}
	if o, err := send(d.Via); !errors.Is(err, router.ErrNoConsumers) {
		return o, err
	}
	return send(s.groupGateways(ctx, tenantName, d.ViaGroups))
}

// Notify sends Hono's empty notification for a device on event/T: ttd -1
// when it subscribed for commands, 0 when it unsubscribed or left.
func (s *Service) Notify(ctx context.Context, tenantName, device, adapter string, ttd int32) {
	if s.waiting != nil {
		s.waiting(tenantName, device, ttd != 0)
	}
	m := &message.Message{
		ContentType: ContentTypeEmpty, CreationTime: s.now(), Durable: true,
		To: Event + "/" + tenantName,
		Properties: map[string]any{
			PropDeviceID: device, PropTenantID: tenantName, PropOrigAdapter: adapter, PropTTD: ttd,
		},
	}
	if _, err := s.pub.Publish(ctx, tenantName, Event+"/"+tenantName, m); err != nil {
		s.log.Debug("empty notification not sent", "tenant", tenantName, "device", device, "ttd", ttd, "err", err)
	}
}

// ErrorPayload is the JSON body of an error message:
// {"code", "message", "timestamp", "correlation-id"}.
func ErrorPayload(status int, msg, corrID string, now time.Time) []byte {
	b, _ := json.Marshal(struct {
		Code          int    `json:"code"`
		Message       string `json:"message"`
		Timestamp     string `json:"timestamp"`
		CorrelationID string `json:"correlation-id"`
	}{status, msg, now.UTC().Format(time.RFC3339Nano), corrID})
	return b
}

// Status is the HTTP status code Hono reports for an upstream error.
func Status(err error) int {
	switch {
	case errors.Is(err, ErrMalformed):
		return 400
	case errors.Is(err, ErrNotAuthorized), errors.Is(err, ErrUnknownDevice):
		return 403
	case errors.Is(err, router.ErrNoConsumers), errors.Is(err, router.ErrTimeout), errors.Is(err, router.ErrClosed):
		return 503
	case errors.Is(err, router.ErrLimitExceeded):
		return 429
	}
	return 500
}
