package amqp_test

import (
	"context"
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Serving a delivery (taking it, running the handler, acking it) allocates
// nothing: the consume path stays as cheap with Serve as without.
func TestServeAllocatesNothingPerDelivery(t *testing.T) {
	ctx := t.Context()
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	gate, handled := make(chan struct{}), make(chan struct{})
	started := make(chan *amqp.Service, 1)
	go func() {
		svc, err := ch.Serve(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"}, func(context.Context, *amqp.Delivery) error {
			if _, open := <-gate; open {
				handled <- struct{}{}
			}
			return nil
		}, amqp.ServeOptions{Prefetch: -1}) // no basic.qos for the fake server to answer
		require.NoError(t, err)
		started <- svc
	}()
	amqptest.Expect[*amqp.BasicConsume](t, sc)
	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.BasicConsumeOk{ConsumerTag: "c"}))
	svc := <-started

	const runs = 200
	// Every delivery is read (and allocated) before the measurement. The
	// server reads nothing during it, since its decoding would count too:
	// the acks wait in the write queue (settling never waits for room).
	require.NoError(t, sc.Deliver(ctx, ch.ID(), "c", runs+2, amqp.Properties{}, []byte("m")))
	gate <- struct{}{}
	<-handled // the first delivery warms up
	allocs := testing.AllocsPerRun(runs, func() {
		gate <- struct{}{}
		<-handled
	})
	require.Zero(t, allocs)
	sunk := make(chan struct{})
	sinkCtx, stopSink := context.WithCancel(ctx)
	go func() { defer close(sunk); _, _ = sc.Sink(sinkCtx) }()

	// The sink answers the shutdown's basic.cancel.
	close(gate)
	require.NoError(t, svc.Shutdown(ctx))
	require.NoError(t, svc.Err())
	stopSink()
	<-sunk
}
