package bench

import (
	"context"
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/otelamqp"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// BenchmarkTracerOverhead: what the tracer hooks cost on the publish and
// consume paths of BenchmarkPublishSink and BenchmarkConsumeSource (16-byte
// messages to and from a fake server in a child process; consume-ack acks
// each delivery, which a traced delivery's trace ends with): no tracer, a
// tracer whose hooks do nothing, and otelamqp with the OpenTelemetry SDK
// recording every span (always sampled, no exporter) and its metrics.
func BenchmarkTracerOverhead(b *testing.B) {
	const size = 16
	for _, tc := range tracerCases() {
		b.Run("publish/"+tc.name, func(b *testing.B) {
			ctx := benchCtx(b)
			_, ch := dialOursWith(b, ctx, fakeURL(fakeServer(b, "sink")), tc.tracer(b))
			msg := amqp.Publishing{RoutingKey: "bench", Body: body(size)}
			m := start(b)
			for range b.N {
				if _, err := ch.Publish(ctx, msg); err != nil {
					b.Fatal(err)
				}
			}
			syncOurs(b, ctx, ch, "bench")
			m.stop()
		})
	}
	for _, ack := range []bool{false, true} {
		for _, tc := range tracerCases() {
			name := "consume/" + tc.name
			if ack {
				name = "consume-ack/" + tc.name
			}
			b.Run(name, func(b *testing.B) {
				ctx := benchCtx(b)
				_, ch := dialOursWith(b, ctx, fakeURL(fakeServer(b, "source")), tc.tracer(b))
				m := start(b)
				c, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "bench", ConsumerTag: sourceTag(b.N, size), NoAck: !ack})
				if err != nil {
					b.Fatal(err)
				}
				for range b.N {
					d, err := c.Next(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if len(d.Body) != size {
						b.Fatalf("body of %d bytes", len(d.Body))
					}
					if ack {
						if err := d.Ack(amqp.AckOptions{}); err != nil {
							b.Fatal(err)
						}
					}
				}
				m.stop()
			})
		}
	}
}

type tracerCase struct {
	name   string
	tracer func(b *testing.B) any
}

func tracerCases() []tracerCase {
	return []tracerCase{
		{"none", func(*testing.B) any { return nil }},
		{"noop", func(*testing.B) any { return noopTracer{} }},
		{"otelamqp", func(b *testing.B) any {
			tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			b.Cleanup(func() { tp.Shutdown(context.Background()); mp.Shutdown(context.Background()) })
			t, err := otelamqp.NewTracer(otelamqp.WithTracerProvider(tp), otelamqp.WithMeterProvider(mp),
				otelamqp.WithPropagators(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})))
			if err != nil {
				b.Fatal(err)
			}
			return t
		}},
	}
}

// noopTracer implements the publish and delivery hooks and does nothing:
// the cost of the hooks themselves.
type noopTracer struct{}

func (noopTracer) TracePublishStart(ctx context.Context, _ *amqp.Channel, _ amqp.TracePublishStartData) context.Context {
	return ctx
}
func (noopTracer) TracePublishEnd(context.Context, *amqp.Channel, amqp.TracePublishEndData) {}
func (noopTracer) TraceDeliveryStart(ctx context.Context, _ *amqp.Channel, _ amqp.TraceDeliveryStartData) context.Context {
	return ctx
}
func (noopTracer) TraceDeliveryEnd(context.Context, *amqp.Channel, amqp.TraceDeliveryEndData) {}
