package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/throngmq/throng/internal/router"
)

// Kafka out (docs/bridges.md): every mapping's durable subscription feeds
// records to its Kafka topic through franz-go's producer — idempotent,
// acks=all, retrying without a limit while the cluster is unreachable —
// and each delivery is settled locally only in the record's promise,
// after Kafka acknowledged it. Up to outWindow records per mapping are in
// flight; the idempotent producer keeps their order per partition.

// kafkaOut is a bridge's Kafka client.
type kafkaOut struct {
	cl     *kgo.Client
	lastOK atomic.Int64 // unix nanoseconds of the last acknowledged record
}

// kafkaHooks reports broker connections to the runner.
type kafkaHooks struct{ r *runner }

func (h kafkaHooks) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err != nil {
		h.r.fail(fmt.Errorf("kafka broker %s:%d: %w", meta.Host, meta.Port, err))
		h.r.setDown()
		return
	}
	h.r.markUp()
}

func (r *runner) startKafka() {
	u, err := r.def.remoteURL()
	if err != nil {
		r.fail(err)
		return
	}
	tlsCfg, err := r.def.tlsConfig()
	if err != nil {
		r.fail(err)
		return
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(strings.Split(u.Host, ",")...),
		kgo.ClientID("throng-" + r.tenant + "-" + r.def.Name),
		kgo.RequiredAcks(kgo.AllISRAcks()), // with the idempotent producer (the default)
		kgo.UnknownTopicRetries(-1),        // a missing topic waits (lag, last error) until it exists
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.RetryBackoffFn(func(n int) time.Duration { return min(time.Duration(n)*250*time.Millisecond, 5*time.Second) }),
		kgo.WithHooks(kafkaHooks{r}),
	}
	if tlsCfg != nil {
		opts = append(opts, kgo.DialTLSConfig(tlsCfg))
	}
	if r.def.Remote.Username != "" {
		opts = append(opts, kgo.SASL(plain.Auth{User: r.def.Remote.Username, Pass: r.def.Remote.Password}.AsMechanism()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		r.fail(fmt.Errorf("kafka client: %w", err))
		return
	}
	r.kafka = &kafkaOut{cl: cl}
	r.wg.Add(1)
	go r.kafkaPing()
}

// markUp records a connection unless one is recorded already.
func (r *runner) markUp() {
	r.mu.Lock()
	up := !r.connected.IsZero()
	r.mu.Unlock()
	if !up {
		r.setUp()
	}
}

// kafkaPing shows the cluster's reachability while no records flow: a
// metadata request every 2 s unless a record was acknowledged meanwhile.
func (r *runner) kafkaPing() {
	defer r.wg.Done()
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		if time.Since(time.Unix(0, r.kafka.lastOK.Load())) > 2*time.Second {
			ctx, cancel := context.WithTimeout(r.ctx, 5*time.Second)
			err := r.kafka.cl.Ping(ctx)
			cancel()
			switch {
			case r.ctx.Err() != nil:
				return
			case err != nil:
				r.fail(fmt.Errorf("kafka: %w", err))
				r.setDown()
			default:
				r.markUp()
			}
		}
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (k *kafkaOut) close() { k.cl.Close() }

// sendKafka produces one delivery; its promise settles it and calls done.
func (r *runner) sendKafka(d *router.Delivery, mp Mapping, done func()) {
	if _, ok := mp.ToRemote(d.Address); !ok {
		d.Settle(router.Outcome{Kind: router.Accepted}) // not this mapping's
		done()
		return
	}
	rec := kafkaRecord(d, mp)
	r.kafka.cl.Produce(r.ctx, rec, func(_ *kgo.Record, err error) {
		switch {
		case err == nil:
			r.kafka.lastOK.Store(time.Now().UnixNano())
			r.markUp()
			d.Settle(router.Outcome{Kind: router.Accepted})
			r.count("out", "sent")
		case r.ctx.Err() != nil:
			d.Settle(router.Outcome{Kind: router.Released}) // stopping: it comes again
		case isPermanentKafka(err):
			// Refused for good (too large, not authorised, invalid):
			// dead-lettered where the address has a dead-letter address.
			r.fail(fmt.Errorf("kafka refused a record for %q: %w", mp.Topic, err))
			d.Settle(router.Outcome{Kind: router.Rejected, Description: "kafka refused it: " + err.Error()})
			r.count("out", "dropped")
		default:
			// Passing (retries exhausted): the router delivers it
			// again after a moment.
			r.fail(fmt.Errorf("kafka produce to %q: %w", mp.Topic, err))
			r.count("out", "retried")
			time.AfterFunc(time.Second, func() {
				d.Settle(router.Outcome{Kind: router.Released})
				done()
			})
			return
		}
		done()
	})
}

// isPermanentKafka tells Kafka errors that sending again cannot cure.
func isPermanentKafka(err error) bool {
	var ke *kerr.Error
	if errors.As(err, &ke) {
		return !ke.Retriable
	}
	// The client's own refusal of an oversized record.
	return strings.Contains(err.Error(), "too large")
}

// kafkaRecord builds a mapping's record: the body as the value, the key
// the mapping chooses, and headers as Hono's Kafka API names them
// (content-type, content-encoding, creation-time and ttl in milliseconds,
// qos, the application properties, device_id among them) plus the local
// address.
func kafkaRecord(d *router.Delivery, mp Mapping) *kgo.Record {
	m := d.Message
	rec := &kgo.Record{Topic: mp.Topic, Value: m.Body, Key: kafkaKey(d, mp.Key)}
	if !m.CreationTime.IsZero() {
		rec.Timestamp = m.CreationTime
	}
	add := func(k, v string) { rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: []byte(v)}) }
	add("address", d.Address)
	if m.ContentType != "" {
		add("content-type", m.ContentType)
	}
	if m.ContentEncoding != "" {
		add("content-encoding", m.ContentEncoding)
	}
	if !m.CreationTime.IsZero() {
		add("creation-time", strconv.FormatInt(m.CreationTime.UnixMilli(), 10))
	}
	if m.TTL > 0 {
		add("ttl", strconv.FormatInt(m.TTL.Milliseconds(), 10))
	}
	if m.Subject != "" {
		add("subject", m.Subject)
	}
	if m.ReplyTo != "" {
		add("reply-to", m.ReplyTo)
	}
	if cid := propString(m.CorrelationID); cid != nil {
		add("correlation-id", string(cid))
	}
	qos := "0"
	if m.Durable {
		qos = "1"
	}
	add("qos", qos)
	for k, v := range m.Properties {
		if strings.HasPrefix(k, "x-mqtt-") {
			continue
		}
		if b := propString(v); b != nil {
			rec.Headers = append(rec.Headers, kgo.RecordHeader{Key: k, Value: b})
		}
	}
	return rec
}

// kafkaKey is the record key a mapping's Key names (nil: none).
func kafkaKey(d *router.Delivery, key string) []byte {
	m := d.Message
	switch {
	case key == "none":
		return nil
	case key == "address":
		return []byte(d.Address)
	case strings.HasPrefix(key, "property:"):
		return propString(m.Properties[strings.TrimPrefix(key, "property:")])
	}
	// device: Hono's device_id, else the publishing MQTT client.
	if b := propString(m.Properties["device_id"]); b != nil {
		return b
	}
	if m.Origin != "" && !strings.ContainsRune(m.Origin, 0) {
		return []byte(m.Origin)
	}
	return nil
}

// propString renders a property value as header bytes (nil for none).
func propString(v any) []byte {
	switch v := v.(type) {
	case nil:
		return nil
	case string:
		return []byte(v)
	case []byte:
		return v
	case [16]byte:
		return []byte(fmt.Sprintf("%x-%x-%x-%x-%x", v[0:4], v[4:6], v[6:8], v[8:10], v[10:16]))
	}
	return []byte(fmt.Sprint(v))
}
