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
	gate, handled := make(chan struct{}), make(chan struct{})
	svc, sc, id := fakeService(t, func(context.Context, *amqp.Delivery) error {
		if _, open := <-gate; open {
			handled <- struct{}{}
		}
		return nil
	}, amqp.ServeOptions{})

	const runs = 200
	// Every delivery is read (and allocated) before the measurement. The
	// server reads nothing during it, since its decoding would count too:
	// the acks wait in the write queue (settling never waits for room).
	require.NoError(t, sc.Deliver(ctx, id, "c", runs+2, amqp.Properties{}, []byte("m")))
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

// fakeService starts Serve on consumer tag "c" against a fake server, playing
// its part (opt.Prefetch is set to -1: no basic.qos to answer).
func fakeService(t *testing.T, h amqp.Handler, opt amqp.ServeOptions) (*amqp.Service, *amqptest.Conn, uint16) {
	t.Helper()
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	opt.Prefetch = -1
	started := make(chan *amqp.Service, 1)
	go func() {
		svc, err := ch.Serve(t.Context(), amqp.BasicConsume{Queue: "q", ConsumerTag: "c"}, h, opt)
		require.NoError(t, err)
		started <- svc
	}()
	amqptest.Expect[*amqp.BasicConsume](t, sc)
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicConsumeOk{ConsumerTag: "c"}))
	return <-started, sc, ch.ID()
}

// A delivery whose content header cannot be decoded never reaches the
// handler: it is rejected without requeue (it would come back the same)
// and reported with its ContentError; the service goes on.
func TestServeRejectsMalformedContentWithoutTheHandler(t *testing.T) {
	ctx := t.Context()
	bodies := make(chan string, 2)
	reported := make(chan error, 2)
	svc, sc, id := fakeService(t, func(_ context.Context, d *amqp.Delivery) error {
		bodies <- string(d.Body)
		return nil
	}, amqp.ServeOptions{OnError: func(_ *amqp.Delivery, err error) { reported <- err }})
	bad := poisonedHeaders["unknown type tag in a header table"].props
	require.NoError(t, sc.WriteRaw(ctx, rawContent(t, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1}, bad, []byte("poison"))))
	require.NoError(t, sc.SendContent(ctx, id, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 2}, amqp.Properties{}, []byte("good")))

	_, rej := amqptest.Expect[*amqp.BasicReject](t, sc)
	require.Equal(t, amqp.BasicReject{DeliveryTag: 1, Requeue: false}, *rej)
	require.ErrorIs(t, <-reported, amqp.ErrMalformedContent)
	_, ack := amqptest.Expect[*amqp.BasicAck](t, sc)
	require.Equal(t, uint64(2), ack.DeliveryTag)
	require.Equal(t, "good", <-bodies)
	require.Empty(t, bodies, "the handler saw only the good one")

	sunk := make(chan struct{})
	sinkCtx, stopSink := context.WithCancel(ctx)
	go func() { defer close(sunk); _, _ = sc.Sink(sinkCtx) }() // answers the shutdown's basic.cancel
	require.NoError(t, svc.Shutdown(ctx))
	stopSink()
	<-sunk
}
