package otelamqp_test

import (
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Fake-server tests of the metrics of connection events the shared broker
// cannot be made to produce: blocking and recovery.

func TestMetricsOfBlockingAndRecovery(t *testing.T) {
	ctx := t.Context()
	tl := newTelemetry(t, sdktrace.AlwaysSample())
	srv := amqptest.NewServer(t, amqptest.Options{Handler: amqptest.AutoReply})
	conn, err := amqp.DialConfig(ctx, amqp.Config{Dial: srv.Dial, Tracer: tl.tracer,
		Recovery: &amqp.RecoveryConfig{MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}})
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(ctx) })
	recovered := make(chan struct{}, 1)
	conn.OnRecovery(func(ev amqp.RecoveryEvent) {
		if ev.Kind == amqp.RecoverySucceeded {
			recovered <- struct{}{}
		}
	})
	sc, err := srv.Accept(ctx)
	require.NoError(t, err)

	unblocked := make(chan struct{}, 1)
	conn.OnBlocked(func(b amqp.Blocking) {
		if !b.Active {
			unblocked <- struct{}{}
		}
	})
	require.NoError(t, sc.Send(ctx, 0, &amqp.ConnectionBlocked{Reason: "low on memory"}))
	time.Sleep(30 * time.Millisecond)
	require.NoError(t, sc.Send(ctx, 0, &amqp.ConnectionUnblocked{}))
	<-unblocked // listeners run after the tracer's hook, on the same queue

	sc.Drop()
	<-recovered

	m := tl.metricsOf(t)
	require.Positive(t, sumWhere[float64](t, m["amqp.client.blocked.duration"]), "the time between the hooks, on the callback goroutine")
	event := func(e string) attribute.KeyValue { return attribute.String("amqp.recovery.event", e) }
	require.EqualValues(t, 1, sumWhere[int64](t, m["amqp.client.recoveries"], event("started")))
	require.EqualValues(t, 1, sumWhere[int64](t, m["amqp.client.recoveries"], event("succeeded")))
}
