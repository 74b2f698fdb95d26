package amqp_test

import (
	"context"
	"net"
	"sync"
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
	// The socket takes no writes during the measurement, so that only the
	// client's work counts, not the fake server's reading of the acks; they
	// wait in the write queue (settling never waits for room).
	var held heldWrites
	svc, sc, id := fakeServiceWith(t, amqp.Config{}, held.wrap, func(context.Context, *amqp.Delivery) error {
		if _, open := <-gate; open {
			handled <- struct{}{}
		}
		return nil
	}, amqp.ServeOptions{})

	const runs = 200
	// Every delivery is read (and allocated) before the measurement.
	require.NoError(t, sc.Deliver(ctx, id, "c", allocTries*(runs+1)+1, amqp.Properties{}, []byte("m")))
	gate <- struct{}{}
	<-handled // the first delivery warms up
	held.hold()
	allocs := leastAllocsPerRun(runs, func() {
		gate <- struct{}{}
		<-handled
	})
	held.release()
	require.Zero(t, allocs)

	// The sink answers the shutdown's basic.cancel.
	sunk := make(chan struct{})
	sinkCtx, stopSink := context.WithCancel(ctx)
	go func() { defer close(sunk); _, _ = sc.Sink(sinkCtx) }()
	close(gate)
	require.NoError(t, svc.Shutdown(ctx))
	require.NoError(t, svc.Err())
	stopSink()
	<-sunk
}

// heldWrites wraps the client's socket so that a test can hold its writes
// back for a while.
type heldWrites struct {
	mu sync.RWMutex // write-locked while writes are held
}

func (h *heldWrites) hold() { h.mu.Lock() }

func (h *heldWrites) release() { h.mu.Unlock() }

func (h *heldWrites) wrap(c net.Conn) net.Conn { return &heldConn{Conn: c, h: h} }

type heldConn struct {
	net.Conn
	h *heldWrites
}

func (c *heldConn) Write(b []byte) (int, error) {
	c.h.mu.RLock()
	defer c.h.mu.RUnlock()
	return c.Conn.Write(b)
}

// fakeService starts Serve on consumer tag "c" against a fake server, playing
// its part (opt.Prefetch is set to -1: no basic.qos to answer).
func fakeService(t *testing.T, h amqp.Handler, opt amqp.ServeOptions) (*amqp.Service, *amqptest.Conn, uint16) {
	t.Helper()
	return fakeServiceWith(t, amqp.Config{}, nil, h, opt)
}

// fakeServiceWith is fakeService with a Config and, if wrap is set, the
// client's socket wrapped by it.
func fakeServiceWith(t *testing.T, cfg amqp.Config, wrap func(net.Conn) net.Conn, h amqp.Handler, opt amqp.ServeOptions) (*amqp.Service, *amqptest.Conn, uint16) {
	t.Helper()
	conn, sc := fakeConnVia(t, amqptest.Options{}, cfg, wrap)
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

// When the consumer ends with its channel while every worker is inside a
// handler, the handlers' ctx ends at once: no idle worker is there to
// notice, and a handler waiting on its ctx would otherwise wait for ever.
func TestServeHandlersLearnOfTheChannelsEndWhileAllAreBusy(t *testing.T) {
	ctx := t.Context()
	inside := make(chan struct{})
	returned := make(chan error, 1)
	svc, sc, id := fakeService(t, func(hctx context.Context, _ *amqp.Delivery) error {
		close(inside)
		<-hctx.Done()
		returned <- hctx.Err()
		return hctx.Err()
	}, amqp.ServeOptions{Workers: 1})
	require.NoError(t, sc.Deliver(ctx, id, "c", 1, amqp.Properties{}, []byte("m")))
	<-inside
	require.NoError(t, sc.CloseChannel(ctx, id, amqp.CodePreconditionFailed, "PRECONDITION_FAILED - gone", nil))
	select {
	case err := <-returned:
		require.ErrorIs(t, err, context.Canceled)
	case <-ctx.Done():
		t.Fatal("the handler's ctx did not end with the channel")
	}
	<-svc.Done()
	require.ErrorIs(t, svc.Err(), amqp.ErrPreconditionFailed)
}
