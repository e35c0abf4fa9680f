package router

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

// subscriptionConsumer names the stream and durable consumer of a
// subscription address ("topic::name" or a defined subscription).
func subscriptionConsumer(tg target) (stream, consumer string) {
	if tg.topicDef != nil {
		return streamFor(tg.topicDef), address.ConsumerName("S", tg.subName)
	}
	return topicSpaceStream, address.ConsumerName("S", tg.subName)
}

// ensureSubscription creates the durable consumer of a subscription
// address if it does not exist yet; it collects from now on.
func (r *Router) ensureSubscription(ctx context.Context, ts *tenantState, tg target) error {
	topic := tg.def.Topic
	var filters []string
	if tg.topicDef != nil {
		if _, err := r.ensureStream(ctx, ts, tg.topicDef); err != nil {
			return err
		}
	} else {
		if err := r.ensureTopicSpace(ctx, ts); err != nil {
			return err
		}
		filters = address.FilterSubjects("s", topic)
	}
	stream, cname := subscriptionConsumer(tg)
	if err := r.ensureDurable(ctx, ts, stream, cname, tg.subName, filters, ConsumeOptions{}); err != nil {
		return err
	}
	if tg.topicDef == nil {
		ts.addInterest(filters)
	}
	return nil
}

// apiTry bounds one try of a JetStream API request on the subscription
// paths. In a cluster, a request sent while there is no meta leader (a
// node died, an election is on: a second or a few) is answered by nobody,
// and it waited for the caller's whole context: an MQTT session resumed
// on a survivor right after its node's kill -9 hung 15 s in ensureDurable
// and was then closed (TestMQTTSessionAcrossNodes, issue 16). Asked again
// after apiTry, it is answered once the election is over. Consumer
// lookups and creations are idempotent (an existing consumer of the same
// name is taken as it is).
const apiTry = 3 * time.Second

// retryAPI runs f with apiTry per try until it returns something other
// than a timeout or "JetStream system temporarily unavailable", or ctx
// ends.
//
// The second is a meta leader change: a node resumed after SIGSTOP while
// it was the meta leader answered the first requests after it with 503
// (err_code 10008) for a few hundred milliseconds, and a subscription
// made then got none of its retained messages
// (TestRetainedWhileReplicaLags: 0 of 1,000 on another node).
func retryAPI[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	for {
		actx, cancel := context.WithTimeout(ctx, apiTry)
		v, err := f(actx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return v, err
		}
		switch {
		case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout):
		case jsUnavailable(err):
			select {
			case <-ctx.Done():
				return v, err
			case <-time.After(apiUnavailablePause):
			}
		default:
			return v, err
		}
	}
}

// apiUnavailablePause is the wait before asking again after "JetStream
// system temporarily unavailable" (answered at once: no hot loop).
const apiUnavailablePause = 100 * time.Millisecond

// jsUnavailable reports whether err is JetStream's "system temporarily
// unavailable" (HTTP-like 503, err_code 10008): no meta leader yet.
func jsUnavailable(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.ErrorCode == jsErrNotAvailable
}

// jsErrNotAvailable is the server's JSClusterNotAvailErr (nats.go names
// it JSErrCodeJetStreamNotAvailable in its older API only).
const jsErrNotAvailable jetstream.ErrorCode = 10008

func (r *Router) ensureDurable(ctx context.Context, ts *tenantState, stream, cname, subName string, filters []string, opts ConsumeOptions) error {
	if _, err := retryAPI(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return ts.js.Consumer(ctx, stream, cname)
	}); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	cc := jetstream.ConsumerConfig{
		Durable:       cname,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 1 << 16,
		MaxWaiting:    4096,
		Metadata:      map[string]string{"throng.subscription": subName},
	}
	setStart(&cc, opts)
	switch len(filters) {
	case 0:
	case 1:
		cc.FilterSubject = filters[0]
	default:
		cc.FilterSubjects = filters
	}
	_, err := retryAPI(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return ts.js.CreateConsumer(ctx, stream, cc)
	})
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return nil
	}
	return err
}

func setStart(cc *jetstream.ConsumerConfig, opts ConsumeOptions) {
	switch {
	case opts.StartSequence > 0:
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = opts.StartSequence
	case !opts.StartTime.IsZero():
		t := opts.StartTime
		cc.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cc.OptStartTime = &t
	default:
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
	}
}

// startTopic attaches to a defined topic or the topic space with a durable
// name or a replay start.
func (c *Consumer) startTopic(ctx context.Context) error {
	var stream string
	var filters []string
	if c.tg.space {
		if err := c.r.ensureTopicSpace(ctx, c.ts); err != nil {
			return err
		}
		stream = topicSpaceStream
		filters = address.FilterSubjects("s", c.tg.name)
	} else {
		sn, err := c.r.ensureStream(ctx, c.ts, c.tg.def)
		if err != nil {
			return err
		}
		stream = sn
	}
	if c.opts.Durable != "" {
		// A durable subscription is identified by its name within the
		// topic (or topic-space filter).
		subName := c.tg.name + "::" + c.opts.Durable
		cname := address.ConsumerName("S", subName)
		if err := c.r.ensureDurable(ctx, c.ts, stream, cname, subName, filters, c.opts); err != nil {
			return err
		}
		if c.tg.space {
			c.ts.addInterest(filters)
		}
		return c.startPull(stream, cname)
	}
	cc := jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           ackWait,
		MaxDeliver:        -1,
		MaxAckPending:     1 << 16,
		InactiveThreshold: time.Minute,
	}
	setStart(&cc, c.opts)
	switch len(filters) {
	case 0:
	case 1:
		cc.FilterSubject = filters[0]
	default:
		cc.FilterSubjects = filters
	}
	cons, err := c.ts.js.CreateConsumer(ctx, stream, cc)
	if err != nil {
		return fmt.Errorf("router: subscribe %q: %w", c.tg.name, err)
	}
	c.ephemeral = true
	if c.tg.space {
		c.ts.addInterest(filters)
	}
	return c.startPull(stream, cons.CachedInfo().Name)
}

func (c *Consumer) startPull(stream, cons string) error {
	c.stream, c.cons = stream, cons
	return c.ts.join(c, stream, cons)
}

// toDeadLetter publishes a copy of a queue message to the queue's
// dead-letter address, with the reason and the original address as
// properties, and calls done with the outcome (an error: not moved). The
// message's entry is settled only after that publish (entry.settled), so
// the message is never lost in between.
func (f *feed) toDeadLetter(m *message.Message, reason string, done func(error)) {
	dla := f.tg.def.DeadLetterAddress()
	dm := *m
	props := make(map[string]any, len(m.Properties)+2)
	for k, v := range m.Properties {
		props[k] = v
	}
	props["x-throng-dead-letter-reason"] = reason
	props["x-throng-original-address"] = f.tg.name
	dm.Properties = props
	// The added properties must reach AMQP consumers too, which are
	// otherwise given the original bare message verbatim: the copy is
	// encoded from its fields (message annotations and footer of the
	// original are not kept).
	dm.NativeFormat, dm.Native = message.NativeNone, nil
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	p, err := f.r.Producer(ctx, f.ts.name, dla)
	if err == nil && p.tg.typ == address.Anycast {
		err = fmt.Errorf("dead-letter address %q is anycast", dla)
	}
	if err != nil {
		f.r.log.Warn("dead-letter address unusable; message released", "tenant", f.ts.name, "address", f.tg.name, "dla", dla, "err", err)
		done(err)
		return
	}
	p.exempt = true // moving a message is not publishing one (quota.go)
	p.Publish(&dm, func(_ Outcome, err error) { done(err) })
}

// parseAck reads the delivery count, stream sequence and timestamp from a
// JetStream ack subject:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
//	$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]
func parseAck(s string) (count, seq uint64, ts time.Time) {
	toks := strings.Split(s, ".")
	i := 4
	if len(toks) >= 11 {
		i = 6
	}
	if len(toks) < i+4 {
		return 1, 0, time.Time{}
	}
	count, _ = strconv.ParseUint(toks[i], 10, 64)
	seq, _ = strconv.ParseUint(toks[i+1], 10, 64)
	if n, err := strconv.ParseInt(toks[i+3], 10, 64); err == nil {
		ts = time.Unix(0, n)
	}
	return count, seq, ts
}
