package otelamqp_test

import (
	"context"
	"log"
	"net/http"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/otelamqp"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Spans printed to stdout: a publish, and the processing of the message it
// sends, in one trace.
func Example_stdout() {
	ctx := context.Background()
	exporter, err := stdouttrace.New(stdouttrace.WithPrettyPrint())
	if err != nil {
		log.Fatal(err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exporter))
	defer tp.Shutdown(ctx)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))

	tracer, err := otelamqp.NewTracer() // the global providers and propagator
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := amqp.ParseURL("amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	cfg.Tracer = tracer
	conn, err := amqp.DialConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("hello")}); err != nil {
		log.Fatal(err)
	}
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue})
	if err != nil {
		log.Fatal(err)
	}
	d, err := cons.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// Work for the message goes under its "process" span.
	_, span := tp.Tracer("example").Start(d.TraceContext(ctx), "handle hello")
	span.End()
	if err := d.Ack(amqp.AckOptions{}); err != nil {
		log.Fatal(err)
	}
}

// Metrics served to Prometheus at :9464/metrics.
func Example_prometheus() {
	ctx := context.Background()
	exporter, err := prometheus.New() // registers with the default Prometheus registry
	if err != nil {
		log.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer mp.Shutdown(ctx)
	go func() { log.Println(http.ListenAndServe(":9464", promhttp.Handler())) }()

	tracer, err := otelamqp.NewTracer(otelamqp.WithMeterProvider(mp))
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := amqp.ParseURL("amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	cfg.Tracer = tracer
	conn, err := amqp.DialConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	// ... publish and consume: messaging_client_sent_messages_total,
	// amqp_client_confirm_duration_seconds and the rest appear at /metrics.
}
