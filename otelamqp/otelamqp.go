// Package otelamqp instruments github.com/amqp-go/amqp with OpenTelemetry:
// traces following the messaging semantic conventions for RabbitMQ, W3C
// trace context carried in message headers, and metrics. It is built only
// on the client's tracer hooks ([amqp.Config.Tracer]), so the client's own
// module depends on no OpenTelemetry package.
//
//	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
//		propagation.TraceContext{}, propagation.Baggage{}))
//	cfg.Tracer = otelamqp.NewTracer()
//	conn, err := amqp.DialConfig(ctx, cfg)
//
// What it records:
//
//   - a producer span per publish ("publish <exchange>"), from Publish until
//     the server's ack, nack or return in confirm mode (until Publish
//     returns otherwise), with the propagator's headers (traceparent,
//     tracestate, baggage with the default W3C propagators) injected into
//     the message when the span is recording;
//   - a consumer span per delivery ("process <exchange>"), from the moment
//     [amqp.Consumer.Next] or [amqp.Channel.Get] hands it out until it is
//     acked, nacked, rejected or released. The trace context extracted from
//     the message's headers is its parent, and a link; the span's context is
//     [amqp.Delivery.TraceContext], to parent the message's processing;
//   - a client span per synchronous method (queue.declare, queue.bind,
//     basic.qos, ...) and one per dial ("connect");
//   - metrics (see [NewTracer]): messages sent, consumed, settled, confirmed
//     and returned; operation, processing and publish-to-confirm durations;
//     recoveries; time blocked; channel errors.
//
// Attributes: messaging.system=rabbitmq, messaging.operation.name and .type,
// messaging.destination.name (the exchange, "" for the default exchange),
// messaging.rabbitmq.destination.routing_key,
// messaging.rabbitmq.message.delivery_tag, messaging.message.id,
// messaging.message.conversation_id (the correlation id),
// messaging.message.body.size, messaging.consumer.group.name (the consumer
// tag), server.address, server.port and error.type. Metrics carry only the
// low-cardinality ones (no routing key, message id or tag).
package otelamqp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/amqp-go/amqp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of the spans and metrics.
const ScopeName = "github.com/amqp-go/amqp/otelamqp"

// Tracer implements the client's tracer interfaces ([amqp.PublishTracer],
// [amqp.DeliveryTracer], [amqp.CallTracer], [amqp.ConnectTracer],
// [amqp.RecoveryTracer], [amqp.BlockedTracer], [amqp.ReturnTracer],
// [amqp.ChannelErrorTracer]). Set it as [amqp.Config.Tracer]; one Tracer
// may serve many connections.
type Tracer struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	m          instruments

	mu           sync.Mutex
	blockedSince map[*amqp.Connection]int64 // unix nanoseconds; guarded by mu

	common sync.Map // opKey -> *opAttrs: attributes built once per operation, destination and node
}

// opKey names an operation on a destination at a node.
type opKey struct{ op, destination, addr string }

// opAttrs are the attributes an operation's spans and metrics share.
type opAttrs struct {
	server  []attribute.KeyValue // server.address, server.port
	metrics attribute.Set        // messaging.system, operation name, destination, server
}

// attrsFor returns the shared attributes of op on destination at the node
// ch is connected to, building them once.
func (t *Tracer) attrsFor(op, destination string, ch *amqp.Channel) *opAttrs {
	k := opKey{op, destination, ch.Connection().Addr()}
	if a, ok := t.common.Load(k); ok {
		return a.(*opAttrs)
	}
	a := &opAttrs{server: serverAttrs(k.addr)}
	a.metrics = metricAttrs(op, destination, a.server)
	t.common.Store(k, a)
	return a
}

// Option configures a Tracer.
type Option func(*options)

type options struct {
	tp trace.TracerProvider
	mp metric.MeterProvider
	pr propagation.TextMapPropagator
}

// WithTracerProvider sets where spans go; the default is otel.GetTracerProvider().
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// WithMeterProvider sets where metrics go; the default is otel.GetMeterProvider().
func WithMeterProvider(mp metric.MeterProvider) Option { return func(o *options) { o.mp = mp } }

// WithPropagators sets how trace context is carried in message headers; the
// default is otel.GetTextMapPropagator() (which propagates nothing until the
// application sets one, typically TraceContext and Baggage).
func WithPropagators(p propagation.TextMapPropagator) Option {
	return func(o *options) { o.pr = p }
}

// NewTracer returns a Tracer. It reports an error only if a metric
// instrument cannot be created (an invalid MeterProvider).
//
// Metrics, all with messaging.system=rabbitmq:
//
//   - messaging.client.sent.messages, messaging.client.consumed.messages
//     ({message}, counters; error.type on sent messages that failed or were
//     lost);
//   - messaging.client.operation.duration (s): publish (to its confirmation
//     in confirm mode) and synchronous methods, by messaging.operation.name;
//   - messaging.process.duration (s): a delivery from hand-out to settlement;
//   - amqp.client.settled.messages ({message}, by amqp.outcome: acked,
//     nacked, rejected, released, auto-acked, lost);
//   - amqp.client.confirmed.messages ({message}, by amqp.outcome: acked,
//     nacked, returned, lost) and amqp.client.confirm.duration (s), the
//     publish-to-confirm latency;
//   - amqp.client.returned.messages ({message}), every basic.return;
//   - amqp.client.recoveries ({event}, by amqp.recovery.event: started,
//     attempt failed, succeeded, failed);
//   - amqp.client.blocked.duration (s): time the server blocked publishing,
//     added when the block lifts;
//   - amqp.client.channel.errors ({error}, by error.type, the reply code).
func NewTracer(opts ...Option) (*Tracer, error) {
	o := options{tp: otel.GetTracerProvider(), mp: otel.GetMeterProvider(), pr: otel.GetTextMapPropagator()}
	for _, opt := range opts {
		opt(&o)
	}
	m, err := newInstruments(o.mp.Meter(ScopeName))
	if err != nil {
		return nil, fmt.Errorf("otelamqp: %w", err)
	}
	return &Tracer{
		tracer:       o.tp.Tracer(ScopeName),
		propagator:   o.pr,
		m:            m,
		blockedSince: map[*amqp.Connection]int64{},
	}, nil
}

var (
	systemAttr = semconv.MessagingSystemRabbitMQ

	_ amqp.PublishTracer      = (*Tracer)(nil)
	_ amqp.DeliveryTracer     = (*Tracer)(nil)
	_ amqp.CallTracer         = (*Tracer)(nil)
	_ amqp.ConnectTracer      = (*Tracer)(nil)
	_ amqp.RecoveryTracer     = (*Tracer)(nil)
	_ amqp.BlockedTracer      = (*Tracer)(nil)
	_ amqp.ReturnTracer       = (*Tracer)(nil)
	_ amqp.ChannelErrorTracer = (*Tracer)(nil)
)

// serverAttrs returns server.address and server.port of an address.
func serverAttrs(addr string) []attribute.KeyValue {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return []attribute.KeyValue{semconv.ServerAddress(addr)}
	}
	p, _ := strconv.Atoi(port)
	return []attribute.KeyValue{semconv.ServerAddress(host), semconv.ServerPort(p)}
}

// errorType is a low-cardinality name for err, for error.type.
func errorType(err error) string {
	var ret *amqp.ReturnedError
	var aerr *amqp.Error
	switch {
	case errors.Is(err, amqp.ErrNacked):
		return "nacked"
	case errors.As(err, &ret):
		return "returned"
	case errors.As(err, &aerr):
		return aerr.Code.String()
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline_exceeded"
	}
	return fmt.Sprintf("%T", err)
}

// spanName is "<operation> <exchange>", or the operation alone for the
// default exchange (no destination name).
func spanName(op, exchange string) string {
	if exchange == "" {
		return op
	}
	return op + " " + exchange
}
