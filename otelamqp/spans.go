package otelamqp

import (
	"context"
	"maps"
	"time"

	"github.com/amqp-go/amqp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Span state carried from a start hook to its end hook in the context.
type (
	publishKey  struct{}
	deliveryKey struct{}
	callKey     struct{}
)

type started struct {
	at      time.Time
	metrics attribute.Set // the low-cardinality attributes for the metrics
}

func startedFrom(ctx context.Context, key any) *started {
	s, _ := ctx.Value(key).(*started)
	return s
}

// messageAttrs are the attributes of a message's span.
func messageAttrs(op string, opType attribute.KeyValue, exchange, routingKey string, p *amqp.Properties, bodySize int) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		systemAttr,
		semconv.MessagingOperationName(op),
		opType,
		semconv.MessagingDestinationName(exchange),
		semconv.MessagingMessageBodySize(bodySize),
	}
	if routingKey != "" {
		attrs = append(attrs, semconv.MessagingRabbitMQDestinationRoutingKey(routingKey))
	}
	if p.MessageID != "" {
		attrs = append(attrs, semconv.MessagingMessageID(p.MessageID))
	}
	if p.CorrelationID != "" {
		attrs = append(attrs, semconv.MessagingMessageConversationID(p.CorrelationID))
	}
	return attrs
}

// metricAttrs are the low-cardinality attributes of an operation's metrics.
func metricAttrs(op, exchange string, server []attribute.KeyValue) attribute.Set {
	attrs := append([]attribute.KeyValue{systemAttr, semconv.MessagingOperationName(op), semconv.MessagingDestinationName(exchange)}, server...)
	return attribute.NewSet(attrs...)
}

// withErrorType returns set with error.type added.
func withErrorType(set attribute.Set, errType string) attribute.Set {
	attrs := append(set.ToSlice(), semconv.ErrorTypeKey.String(errType))
	return attribute.NewSet(attrs...)
}

// TracePublishStart starts the producer span and injects its context into
// the message's headers (a copy of them) when the span is recording.
func (t *Tracer) TracePublishStart(ctx context.Context, ch *amqp.Channel, data amqp.TracePublishStartData) context.Context {
	msg := data.Msg
	common := t.attrsFor("publish", msg.Exchange, ch)
	attrs := append(messageAttrs("publish", semconv.MessagingOperationTypeSend, msg.Exchange, msg.RoutingKey, &msg.Properties, len(msg.Body)), common.server...)
	ctx, span := t.tracer.Start(ctx, spanName("publish", msg.Exchange),
		trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
	if span.IsRecording() {
		h := make(amqp.Table, len(msg.Headers)+3)
		maps.Copy(h, msg.Headers)
		t.propagator.Inject(ctx, HeadersCarrier(h))
		msg.Headers = h
	}
	return context.WithValue(ctx, publishKey{}, &started{at: time.Now(), metrics: common.metrics})
}

// TracePublishEnd ends the producer span with the publish's outcome.
func (t *Tracer) TracePublishEnd(ctx context.Context, ch *amqp.Channel, data amqp.TracePublishEndData) {
	span := trace.SpanFromContext(ctx)
	st := startedFrom(ctx, publishKey{})
	elapsed := time.Since(st.at).Seconds()
	span.SetAttributes(attribute.String("amqp.publish.outcome", data.Outcome.String()))
	set := st.metrics
	if data.Err != nil {
		errType := errorType(data.Err)
		span.SetAttributes(semconv.ErrorTypeKey.String(errType))
		span.SetStatus(codes.Error, data.Err.Error())
		set = withErrorType(set, errType)
	}
	span.End()

	bg := context.Background()                        // the span has ended: metrics need no parent
	t.m.sent.Add(bg, 1, metric.WithAttributeSet(set)) // with error.type when it failed or was lost
	t.m.opDuration.Record(bg, elapsed, metric.WithAttributeSet(set))
	if data.DeliveryTag != 0 {
		outcome := metric.WithAttributeSet(attribute.NewSet(append(st.metrics.ToSlice(), attribute.String("amqp.outcome", data.Outcome.String()))...))
		t.m.confirmed.Add(bg, 1, outcome)
		if data.Outcome != amqp.PublishLost {
			t.m.confirmDuration.Record(bg, elapsed, metric.WithAttributeSet(st.metrics))
		}
	}
}

// TraceDeliveryStart starts the consumer span of a delivery, with the trace
// context extracted from its headers as parent and link.
func (t *Tracer) TraceDeliveryStart(ctx context.Context, ch *amqp.Channel, data amqp.TraceDeliveryStartData) context.Context {
	d := data.Delivery
	common := t.attrsFor("process", d.Exchange, ch)
	attrs := append(messageAttrs("process", semconv.MessagingOperationTypeProcess, d.Exchange, d.RoutingKey, &d.Properties, len(d.Body)), common.server...)
	attrs = append(attrs, semconv.MessagingRabbitMQMessageDeliveryTag(int(d.DeliveryTag)))
	if d.ConsumerTag != "" {
		attrs = append(attrs, semconv.MessagingConsumerGroupName(d.ConsumerTag))
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...)}
	parent := ctx
	if len(d.Headers) > 0 {
		extracted := t.propagator.Extract(ctx, HeadersCarrier(d.Headers))
		if sc := trace.SpanContextFromContext(extracted); sc.IsValid() && sc.IsRemote() {
			// The message's creation context: the parent of its processing,
			// and a link, as the messaging conventions recommend for spans
			// that process a single message.
			parent = extracted
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
		} else {
			parent = extracted // baggage, if any
		}
	}
	ctx, _ = t.tracer.Start(parent, spanName("process", d.Exchange), opts...)
	set := common.metrics
	t.m.consumed.Add(context.Background(), 1, metric.WithAttributeSet(set))
	return context.WithValue(ctx, deliveryKey{}, &started{at: time.Now(), metrics: set})
}

// TraceDeliveryEnd ends the consumer span with how the delivery was settled.
func (t *Tracer) TraceDeliveryEnd(ctx context.Context, ch *amqp.Channel, data amqp.TraceDeliveryEndData) {
	span := trace.SpanFromContext(ctx)
	st := startedFrom(ctx, deliveryKey{})
	span.AddEvent(data.Outcome.String(), trace.WithAttributes(
		attribute.Bool("amqp.requeue", data.Requeue), attribute.Bool("amqp.multiple", data.Multiple)))
	span.SetAttributes(attribute.String("amqp.delivery.outcome", data.Outcome.String()))
	set := st.metrics
	if data.Outcome == amqp.DeliveryLost {
		span.SetAttributes(semconv.ErrorTypeKey.String("lost"))
		span.SetStatus(codes.Error, "the delivery's tag became void before it was settled; the server requeued it")
		set = withErrorType(set, "lost")
	}
	span.End()
	bg := context.Background()
	t.m.processDuration.Record(bg, time.Since(st.at).Seconds(), metric.WithAttributeSet(set))
	t.m.settled.Add(bg, 1, metric.WithAttributeSet(attribute.NewSet(append(st.metrics.ToSlice(), attribute.String("amqp.outcome", data.Outcome.String()))...)))
}

// TraceCallStart starts a client span for a synchronous method.
func (t *Tracer) TraceCallStart(ctx context.Context, ch *amqp.Channel, data amqp.TraceCallStartData) context.Context {
	name := data.Method.MethodName()
	server := t.attrsFor(name, "", ch).server
	attrs := append([]attribute.KeyValue{systemAttr, semconv.MessagingOperationName(name)}, server...)
	if dest, ok := destinationOf(data.Method); ok {
		attrs = append(attrs, semconv.MessagingDestinationName(dest))
	}
	ctx, _ = t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	set := attribute.NewSet(append([]attribute.KeyValue{systemAttr, semconv.MessagingOperationName(name)}, server...)...)
	return context.WithValue(ctx, callKey{}, &started{at: time.Now(), metrics: set})
}

// TraceCallEnd ends a synchronous method's span.
func (t *Tracer) TraceCallEnd(ctx context.Context, ch *amqp.Channel, data amqp.TraceCallEndData) {
	span := trace.SpanFromContext(ctx)
	st := startedFrom(ctx, callKey{})
	set := st.metrics
	if data.Err != nil {
		errType := errorType(data.Err)
		span.SetAttributes(semconv.ErrorTypeKey.String(errType))
		span.SetStatus(codes.Error, data.Err.Error())
		set = withErrorType(set, errType)
	}
	span.End()
	t.m.opDuration.Record(context.Background(), time.Since(st.at).Seconds(), metric.WithAttributeSet(set))
}

// destinationOf names the queue or exchange a method is about.
func destinationOf(m amqp.Method) (string, bool) {
	switch m := m.(type) {
	case *amqp.QueueDeclare:
		return m.Queue, true
	case *amqp.QueueBind:
		return m.Queue, true
	case *amqp.QueueUnbind:
		return m.Queue, true
	case *amqp.QueuePurge:
		return m.Queue, true
	case *amqp.QueueDelete:
		return m.Queue, true
	case *amqp.BasicConsume:
		return m.Queue, true
	case *amqp.BasicGet:
		return m.Queue, true
	case *amqp.ExchangeDeclare:
		return m.Exchange, true
	case *amqp.ExchangeDelete:
		return m.Exchange, true
	case *amqp.ExchangeBind:
		return m.Destination, true
	case *amqp.ExchangeUnbind:
		return m.Destination, true
	}
	return "", false
}

// TraceConnectStart starts the client span of a dial.
func (t *Tracer) TraceConnectStart(ctx context.Context, data amqp.TraceConnectStartData) context.Context {
	attrs := []attribute.KeyValue{systemAttr, semconv.MessagingOperationName("connect")}
	if len(data.Addrs) > 0 {
		attrs = append(attrs, serverAttrs(data.Addrs[0])...)
	}
	ctx, _ = t.tracer.Start(ctx, "connect", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return ctx
}

// TraceConnectEnd ends the dial's span, naming the node connected to.
func (t *Tracer) TraceConnectEnd(ctx context.Context, data amqp.TraceConnectEndData) {
	span := trace.SpanFromContext(ctx)
	if data.Addr != "" {
		span.SetAttributes(serverAttrs(data.Addr)...)
	}
	if data.Err != nil {
		span.SetAttributes(semconv.ErrorTypeKey.String(errorType(data.Err)))
		span.SetStatus(codes.Error, data.Err.Error())
	}
	span.End()
}
