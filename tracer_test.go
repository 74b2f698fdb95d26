package amqp_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Fake-server tests of the tracer hooks: which hook runs, with what, in
// which order.

func TestConfigTracerMustImplementAHook(t *testing.T) {
	_, err := amqp.DialConfig(t.Context(), amqp.Config{Tracer: struct{}{}, Addrs: []string{reservedClosedPort(t)}})
	require.ErrorContains(t, err, "Config.Tracer implements none of the tracer interfaces")
}

func TestTracerConnectHooksBracketTheDial(t *testing.T) {
	rec := newRecordingTracer()
	fakeConn(t, amqptest.Options{}, amqp.Config{Tracer: rec})
	require.Equal(t, []string{
		"connect start [localhost:5672] /",
		"connect end of 1: conn true err false addr \"localhost:5672\"",
	}, rec.waitFor(t, 2))

	rec.reset()
	addr := reservedClosedPort(t)
	_, err := amqp.DialConfig(t.Context(), amqp.Config{Tracer: rec, Addrs: []string{addr}})
	require.Error(t, err)
	require.Equal(t, []string{
		"connect start [" + addr + "] /",
		"connect end of 1: conn false err true addr \"\"",
	}, rec.waitFor(t, 2))
}

func TestTracerPublishHooksEndWithTheConfirmation(t *testing.T) {
	ctx := t.Context()
	rec := newRecordingTracer()
	rec.header = true
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{Tracer: rec})
	ch := openFakeChannel(t, conn, sc)
	confirmSelectFake(t, ch, sc)
	rec.reset()

	caller := amqp.Table{"k": "v"}
	var confs []*amqp.Confirmation
	for _, rk := range []string{"acked", "nacked", "returned", "lost"} {
		conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: rk, Mandatory: rk == "returned", Properties: amqp.Properties{Headers: caller}})
		require.NoError(t, err)
		confs = append(confs, conf)
		pub := amqptest.ExpectPublish(t, sc)
		require.Equal(t, amqp.Table{"k": "v", "x-trace": "t1"}, pub.Properties.Headers, "the start hook's header is sent")
	}
	require.Equal(t, amqp.Table{"k": "v"}, caller, "the caller's table is left alone")
	require.Len(t, rec.waitFor(t, 4), 4, "no end before the server's answer")

	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.BasicAck{DeliveryTag: 1}))
	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.BasicNack{DeliveryTag: 2}))
	require.NoError(t, sc.SendContent(ctx, ch.ID(), &amqp.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "returned"}, amqp.Properties{}, nil))
	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.BasicAck{DeliveryTag: 3}))
	require.ErrorIs(t, confs[2].Wait(ctx), amqp.ErrReturned)

	closed := make(chan error, 1)
	go func() { closed <- sc.CloseChannel(ctx, ch.ID(), 406, "PRECONDITION_FAILED", nil) }()
	require.ErrorIs(t, confs[3].Wait(ctx), amqp.ErrPreconditionFailed)
	require.NoError(t, <-closed)
	amqptest.Expect[*amqp.ChannelOpen](t, sc) // the reopen, unanswered: not traced (no caller waits)
	require.Equal(t, []string{
		`publish start ch1 "" "acked"`,
		`publish start ch1 "" "nacked"`,
		`publish start ch1 "" "returned"`,
		`publish start ch1 "" "lost"`,
		`publish end of 1: acked "acked" tag 1 err false`,
		`publish end of 2: nacked "nacked" tag 2 err true`,
		`return 312 "returned"`,
		`publish end of 3: returned "returned" tag 3 err true`,
		`channel error ch1 406`,
		`publish end of 4: lost "lost" tag 4 err true`,
	}, rec.waitFor(t, 10))
}

func TestTracerPublishHooksOutsideConfirmMode(t *testing.T) {
	ctx := t.Context()
	rec := newRecordingTracer()
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{Tracer: rec})
	ch := openFakeChannel(t, conn, sc)
	rec.reset()
	_, err := ch.Publish(ctx, amqp.Publishing{Exchange: "x", RoutingKey: "sent"})
	require.NoError(t, err)
	amqptest.ExpectPublish(t, sc)
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "refused", Immediate: true})
	require.ErrorIs(t, err, amqp.ErrImmediateUnsupported)
	require.Equal(t, []string{
		`publish start ch1 "x" "sent"`,
		`publish end of 1: sent "sent" tag 0 err false`,
		`publish start ch1 "" "refused"`,
		`publish end of 3: failed "refused" tag 0 err true`,
	}, rec.waitFor(t, 4))
}

func TestTracerDeliveryHooksFollowEachSettlement(t *testing.T) {
	ctx := t.Context()
	rec := newRecordingTracer()
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{Tracer: rec})
	ch := openFakeChannel(t, conn, sc)
	cons := consumeOnFake(t, ch, sc, amqp.ConsumerOptions{Recycle: true})
	rec.reset()

	require.NoError(t, sc.Deliver(ctx, ch.ID(), "c", 7, amqp.Properties{}, []byte("m")))
	var ds []*amqp.Delivery
	for range 7 {
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		ds = append(ds, d)
	}
	require.Equal(t, 1, startOf(ds[0].TraceContext(ctx)), "the start hook's context, until settled")

	require.NoError(t, ds[0].Ack(amqp.AckOptions{}))
	require.Nil(t, startOf(ds[0].TraceContext(ctx)), "settled: the caller's context")
	require.NoError(t, ds[1].Nack(amqp.NackOptions{Requeue: true}))
	require.NoError(t, ds[2].Reject(amqp.RejectOptions{}))
	ds[3].Release()
	require.NoError(t, ds[5].Ack(amqp.AckOptions{Multiple: true})) // settles 5 and 6 (4 was released: also settled)
	events := rec.waitFor(t, 13)
	require.Equal(t, []string{
		"delivery end of 1: tag 1 acked multiple false requeue false",
		"delivery end of 2: tag 2 nacked multiple false requeue true",
		"delivery end of 3: tag 3 rejected multiple false requeue false",
		"delivery end of 4: tag 4 released multiple false requeue false",
		"delivery end of 5: tag 5 acked multiple true requeue false",
		"delivery end of 6: tag 6 acked multiple true requeue false",
	}, events[7:])
	for i := range 7 {
		require.Equal(t, fmt.Sprintf("delivery start ch1 tag %d", i+1), events[i])
	}

	// A channel error voids tag 7: its trace ends as lost.
	rec.reset()
	closed := make(chan error, 1)
	go func() { closed <- sc.CloseChannel(ctx, ch.ID(), 406, "PRECONDITION_FAILED", nil) }()
	require.Equal(t, []string{"channel error ch1 406", "delivery end of 7: tag 7 lost multiple false requeue false"}, rec.waitFor(t, 2))
	require.NoError(t, <-closed)
	require.ErrorIs(t, ds[6].Ack(amqp.AckOptions{}), amqp.ErrStaleDelivery)
	time.Sleep(10 * time.Millisecond)
	require.Len(t, rec.waitFor(t, 2), 2, "a stale ack ends nothing more")
}

func TestTracerCallHooksAndConnectionEvents(t *testing.T) {
	ctx := t.Context()
	rec := newRecordingTracer()
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{Tracer: rec})
	ch := openFakeChannel(t, conn, sc)
	rec.reset()

	errc := make(chan error, 1)
	go func() {
		_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "jobs"})
		errc <- err
	}()
	amqptest.Expect[*amqp.QueueDeclare](t, sc)
	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.QueueDeclareOk{Queue: "jobs"}))
	require.NoError(t, <-errc)

	require.NoError(t, sc.Send(ctx, 0, &amqp.ConnectionBlocked{Reason: "low on memory"}))
	require.NoError(t, sc.Send(ctx, 0, &amqp.ConnectionUnblocked{}))
	require.Equal(t, []string{
		"call start queue.declare",
		"call end of 1: queue.declare reply queue.declare-ok err false",
		`blocked true "low on memory"`,
		`blocked false ""`,
	}, rec.waitFor(t, 4))
}

// A delivery that a multiple ack of a later one (by another consumer of
// the channel) settled while it waited in its buffer gets a trace that
// ends at once, rather than one nothing would ever end.
func TestTracerDeliverySettledEarlierByAMultipleAck(t *testing.T) {
	ctx := t.Context()
	rec := newRecordingTracer()
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{Tracer: rec})
	ch := openFakeChannel(t, conn, sc)
	consumeAs := func(tag string) *amqp.Consumer {
		got := make(chan *amqp.Consumer, 1)
		go func() {
			c, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: tag})
			require.NoError(t, err)
			got <- c
		}()
		amqptest.Expect[*amqp.BasicConsume](t, sc)
		require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.BasicConsumeOk{ConsumerTag: tag}))
		return <-got
	}
	first, second := consumeAs("first"), consumeAs("second")
	rec.reset()
	require.NoError(t, sc.SendContent(ctx, ch.ID(), &amqp.BasicDeliver{ConsumerTag: "second", DeliveryTag: 1}, amqp.Properties{}, []byte("1")))
	require.NoError(t, sc.SendContent(ctx, ch.ID(), &amqp.BasicDeliver{ConsumerTag: "first", DeliveryTag: 2}, amqp.Properties{}, []byte("2")))
	d2, err := first.Next(ctx)
	require.NoError(t, err)
	require.NoError(t, d2.Ack(amqp.AckOptions{Multiple: true})) // settles tag 1, still in second's buffer
	d1, err := second.Next(ctx)
	require.NoError(t, err)
	require.ErrorIs(t, d1.Ack(amqp.AckOptions{}), amqp.ErrAlreadySettled)
	require.Equal(t, []string{
		"delivery start ch1 tag 2",
		"delivery end of 1: tag 2 acked multiple true requeue false",
		"delivery start ch1 tag 1",
		"delivery end of 3: tag 1 settled-earlier multiple true requeue false",
	}, rec.waitFor(t, 4))
	require.Nil(t, startOf(d1.TraceContext(ctx)), "nothing left open")
}
