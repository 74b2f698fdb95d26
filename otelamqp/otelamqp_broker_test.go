package otelamqp_test

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/otelamqp"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Tests against the real broker at AMQP_URL: the spans and metrics that a
// publish, a delivery and a synchronous call produce.

func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

// needBroker skips (or under CI fails) a test when no broker answers.
func needBroker(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: -short")
	}
	u, err := url.Parse(brokerURL())
	require.NoError(t, err)
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5672")
	}
	c, err := net.DialTimeout("tcp", host, 3*time.Second)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no RabbitMQ broker at %s: %v", host, err)
		}
		t.Skipf("no RabbitMQ broker at %s: %v", host, err)
	}
	c.Close()
}

// telemetry is an instrumented setup: spans go to rec, metrics to reader.
type telemetry struct {
	tracer *otelamqp.Tracer
	rec    *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
}

func newTelemetry(t *testing.T, sampler sdktrace.Sampler) *telemetry {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sampler))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tr, err := otelamqp.NewTracer(otelamqp.WithTracerProvider(tp), otelamqp.WithMeterProvider(mp),
		otelamqp.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})))
	require.NoError(t, err)
	return &telemetry{tracer: tr, rec: rec, reader: reader, tp: tp}
}

// dial connects to the broker with the tracer; the connection closes at the end of the test.
func (tl *telemetry) dial(t *testing.T) *amqp.Connection {
	t.Helper()
	needBroker(t)
	cfg, err := amqp.ParseURL(brokerURL())
	require.NoError(t, err)
	cfg.Tracer = tl.tracer
	conn, err := amqp.DialConfig(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn.Close(ctx)
	})
	return conn
}

// waitSpans waits until a span named name has ended n times and returns those spans.
func (tl *telemetry) waitSpans(t *testing.T, name string, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	for {
		var got []sdktrace.ReadOnlySpan
		for _, s := range tl.rec.Ended() {
			if s.Name() == name {
				got = append(got, s)
			}
		}
		if len(got) >= n {
			return got
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("waited for %d %q spans, have %d", n, name, len(got))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func attrsOf(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func uniqueName(prefix string) string { return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano()) }

func TestPublishAndProcessSpansFollowTheConventions(t *testing.T) {
	ctx := t.Context()
	tl := newTelemetry(t, sdktrace.AlwaysSample())
	conn := tl.dial(t)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	ex := uniqueName("otel-ex")
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: ex, Type: "direct", AutoDelete: true}))
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	require.NoError(t, err)
	require.NoError(t, ch.QueueBind(ctx, amqp.QueueBind{Queue: q.Queue, Exchange: ex, RoutingKey: "rk"}))

	// The application's own span is the producer span's parent.
	member, err := baggage.NewMember("tenant", "acme")
	require.NoError(t, err)
	bag, err := baggage.New(member)
	require.NoError(t, err)
	appCtx, appSpan := tl.tp.Tracer("app").Start(baggage.ContextWithBaggage(ctx, bag), "handle request")
	conf, err := ch.Publish(appCtx, amqp.Publishing{Exchange: ex, RoutingKey: "rk", Body: []byte("hello"),
		Properties: amqp.Properties{MessageID: "m-1", CorrelationID: "conv-9", Headers: amqp.Table{"app": "x"}}})
	require.NoError(t, err)
	require.NoError(t, conf.Wait(ctx))
	appSpan.End()

	pub := tl.waitSpans(t, "publish "+ex, 1)[0]
	require.Equal(t, trace.SpanKindProducer, pub.SpanKind())
	require.Equal(t, appSpan.SpanContext().SpanID(), pub.Parent().SpanID())
	a := attrsOf(pub)
	require.Equal(t, "rabbitmq", a["messaging.system"].AsString())
	require.Equal(t, "publish", a["messaging.operation.name"].AsString())
	require.Equal(t, "send", a["messaging.operation.type"].AsString())
	require.Equal(t, ex, a["messaging.destination.name"].AsString())
	require.Equal(t, "rk", a["messaging.rabbitmq.destination.routing_key"].AsString())
	require.Equal(t, "m-1", a["messaging.message.id"].AsString())
	require.Equal(t, "conv-9", a["messaging.message.conversation_id"].AsString())
	require.EqualValues(t, 5, a["messaging.message.body.size"].AsInt64())
	u, err := url.Parse(brokerURL())
	require.NoError(t, err)
	wantPort := u.Port()
	if wantPort == "" {
		wantPort = "5672"
	}
	require.Equal(t, u.Hostname(), a["server.address"].AsString())
	require.Equal(t, wantPort, fmt.Sprint(a["server.port"].AsInt64()))
	require.Equal(t, "acked", a["amqp.publish.outcome"].AsString(), "ended at the confirm")

	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue})
	require.NoError(t, err)
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "x", d.Headers["app"], "the application's headers are kept")
	require.Equal(t, fmt.Sprintf("00-%s-%s-01", pub.SpanContext().TraceID(), pub.SpanContext().SpanID()), d.Headers["traceparent"])

	require.Equal(t, "tenant=acme", d.Headers["baggage"])
	require.Equal(t, "acme", baggage.FromContext(d.TraceContext(ctx)).Member("tenant").Value(), "baggage comes back out")

	// Work done for the message hangs under its process span.
	_, work := tl.tp.Tracer("app").Start(d.TraceContext(ctx), "work")
	work.End()
	require.NoError(t, d.Ack(amqp.AckOptions{}))

	proc := tl.waitSpans(t, "process "+ex, 1)[0]
	require.Equal(t, trace.SpanKindConsumer, proc.SpanKind())
	require.Equal(t, pub.SpanContext().TraceID(), proc.SpanContext().TraceID())
	require.Equal(t, pub.SpanContext().SpanID(), proc.Parent().SpanID(), "the producer span is the parent")
	require.True(t, proc.Parent().IsRemote())
	require.Len(t, proc.Links(), 1)
	require.Equal(t, pub.SpanContext().SpanID(), proc.Links()[0].SpanContext.SpanID(), "and a link")
	a = attrsOf(proc)
	require.Equal(t, "process", a["messaging.operation.name"].AsString())
	require.Equal(t, "process", a["messaging.operation.type"].AsString())
	require.Equal(t, ex, a["messaging.destination.name"].AsString())
	require.EqualValues(t, d.DeliveryTag, a["messaging.rabbitmq.message.delivery_tag"].AsInt64())
	require.Equal(t, cons.Tag(), a["messaging.consumer.group.name"].AsString())
	require.Equal(t, "acked", a["amqp.delivery.outcome"].AsString())
	require.Equal(t, proc.SpanContext().SpanID(), tl.waitSpans(t, "work", 1)[0].Parent().SpanID())

	// Synchronous calls are client spans.
	bind := tl.waitSpans(t, "queue.bind", 1)[0]
	require.Equal(t, trace.SpanKindClient, bind.SpanKind())
	require.Equal(t, q.Queue, attrsOf(bind)["messaging.destination.name"].AsString())
	connect := tl.waitSpans(t, "connect", 1)[0]
	require.Equal(t, trace.SpanKindClient, connect.SpanKind())
}

func TestNoTraceHeaderWhenTheSpanIsNotRecording(t *testing.T) {
	ctx := t.Context()
	tl := newTelemetry(t, sdktrace.NeverSample())
	conn := tl.dial(t)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	require.NoError(t, err)
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("x")})
	require.NoError(t, err)
	d, err := ch.Get(ctx, amqp.BasicGet{Queue: q.Queue, NoAck: true})
	require.NoError(t, err)
	require.Empty(t, d.Headers)
	require.Empty(t, tl.rec.Ended())
}

func TestFailedCallAndOutcomesAreErrors(t *testing.T) {
	ctx := t.Context()
	tl := newTelemetry(t, sdktrace.AlwaysSample())
	conn := tl.dial(t)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: uniqueName("otel-missing"), Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound)
	decl := tl.waitSpans(t, "queue.declare", 1)[0]
	require.Equal(t, codes.Error, decl.Status().Code)
	require.Equal(t, "NOT_FOUND", attrsOf(decl)["error.type"].AsString())
	require.Eventually(t, func() bool { // counted on the callback goroutine
		m := tl.metricsOf(t)
		return m["amqp.client.channel.errors"] != nil &&
			sumWhere[int64](t, m["amqp.client.channel.errors"], attribute.String("error.type", "NOT_FOUND")) == 1
	}, 30*time.Second, 5*time.Millisecond)

	// A mandatory message with no route is returned: its span says so.
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: uniqueName("otel-nowhere"), Mandatory: true})
	require.NoError(t, err)
	require.ErrorIs(t, conf.Wait(ctx), amqp.ErrReturned)
	pub := tl.waitSpans(t, "publish", 1)[0]
	require.Equal(t, codes.Error, pub.Status().Code)
	require.Equal(t, "returned", attrsOf(pub)["error.type"].AsString())
	require.Equal(t, "returned", attrsOf(pub)["amqp.publish.outcome"].AsString())
}

// metricsOf collects the metrics and returns them by name.
func (tl *telemetry) metricsOf(t *testing.T) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, tl.reader.Collect(t.Context(), &rm))
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
		}
	}
	return out
}

// hasAll reports whether set holds every attribute of want.
func hasAll(set attribute.Set, want []attribute.KeyValue) bool {
	return !slices.ContainsFunc(want, func(kv attribute.KeyValue) bool {
		v, ok := set.Value(kv.Key)
		return !ok || v != kv.Value
	})
}

// sumWhere adds up the points of a counter whose attributes include all of want.
func sumWhere[N int64 | float64](t *testing.T, agg metricdata.Aggregation, want ...attribute.KeyValue) N {
	t.Helper()
	sum, ok := agg.(metricdata.Sum[N])
	require.True(t, ok, "a %T, not a sum", agg)
	var total N
	for _, p := range sum.DataPoints {
		if hasAll(p.Attributes, want) {
			total += p.Value
		}
	}
	return total
}

// histogramCount counts the measurements of a histogram whose attributes include all of want.
func histogramCount(t *testing.T, agg metricdata.Aggregation, want ...attribute.KeyValue) uint64 {
	t.Helper()
	h, ok := agg.(metricdata.Histogram[float64])
	require.True(t, ok, "a %T, not a histogram", agg)
	var n uint64
	for _, p := range h.DataPoints {
		if hasAll(p.Attributes, want) {
			n += p.Count
		}
	}
	return n
}

func TestMetricsCountMessagesSettlementsAndConfirms(t *testing.T) {
	ctx := t.Context()
	tl := newTelemetry(t, sdktrace.AlwaysSample())
	conn := tl.dial(t)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	require.NoError(t, err)
	for range 5 {
		conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("m")})
		require.NoError(t, err)
		require.NoError(t, conf.Wait(ctx))
	}
	conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: uniqueName("otel-nowhere"), Mandatory: true})
	require.NoError(t, err)
	require.ErrorIs(t, conf.Wait(ctx), amqp.ErrReturned)

	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue})
	require.NoError(t, err)
	var ds []*amqp.Delivery
	for range 5 {
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		ds = append(ds, d)
	}
	require.NoError(t, ds[0].Ack(amqp.AckOptions{}))
	require.NoError(t, ds[1].Nack(amqp.NackOptions{}))
	require.NoError(t, ds[2].Reject(amqp.RejectOptions{}))
	require.NoError(t, ds[4].Ack(amqp.AckOptions{Multiple: true})) // 4 and 5
	tl.waitSpans(t, "process", 5)
	tl.waitSpans(t, "publish", 6)

	m := tl.metricsOf(t)
	publish := attribute.String("messaging.operation.name", "publish")
	require.EqualValues(t, 6, sumWhere[int64](t, m["messaging.client.sent.messages"], publish))
	require.EqualValues(t, 1, sumWhere[int64](t, m["messaging.client.sent.messages"], attribute.String("error.type", "returned")))
	require.EqualValues(t, 5, sumWhere[int64](t, m["messaging.client.consumed.messages"]))
	outcome := func(o string) attribute.KeyValue { return attribute.String("amqp.outcome", o) }
	require.EqualValues(t, 3, sumWhere[int64](t, m["amqp.client.settled.messages"], outcome("acked")))
	require.EqualValues(t, 1, sumWhere[int64](t, m["amqp.client.settled.messages"], outcome("nacked")))
	require.EqualValues(t, 1, sumWhere[int64](t, m["amqp.client.settled.messages"], outcome("rejected")))
	require.EqualValues(t, 5, sumWhere[int64](t, m["amqp.client.confirmed.messages"], outcome("acked")))
	require.EqualValues(t, 1, sumWhere[int64](t, m["amqp.client.confirmed.messages"], outcome("returned")))
	require.EqualValues(t, 1, sumWhere[int64](t, m["amqp.client.returned.messages"]))
	require.EqualValues(t, 6, histogramCount(t, m["amqp.client.confirm.duration"]))
	require.EqualValues(t, 5, histogramCount(t, m["messaging.process.duration"]))
	require.EqualValues(t, 6, histogramCount(t, m["messaging.client.operation.duration"], publish))
	require.EqualValues(t, 1, histogramCount(t, m["messaging.client.operation.duration"], attribute.String("messaging.operation.name", "queue.declare")))
}
