package amqp_test

import (
	"context"
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// WaitConfirms returns once every publish made before it has its outcome,
// and reports each failure once: those known before the call too, in the
// order they became known.
func TestWaitConfirmsIsABarrierReportingEachFailureOnce(t *testing.T) {
	ctx := t.Context()
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)

	require.ErrorIs(t, ch.WaitConfirms(ctx), amqp.ErrNoConfirmMode)

	confirmSelectFake(t, ch, sc)
	confs := make([]*amqp.Confirmation, 4)
	for i := range confs {
		var err error
		confs[i], err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q"})
		require.NoError(t, err)
		amqptest.ExpectPublish(t, sc)
	}
	// Publish 2 fails before anyone waits for it.
	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.BasicNack{DeliveryTag: 2}))
	<-confs[1].Done()

	waited := make(chan error, 1)
	go func() { waited <- ch.WaitConfirms(ctx) }()
	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.BasicAck{DeliveryTag: 1}))
	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.BasicNack{DeliveryTag: 4}))
	select {
	case err := <-waited:
		t.Fatalf("WaitConfirms returned before publish 3 was confirmed: %v", err)
	default:
	}
	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.BasicAck{DeliveryTag: 3}))
	err := <-waited
	for i, c := range confs {
		select {
		case <-c.Done():
		default:
			t.Fatalf("publish %d unresolved when WaitConfirms returned", i+1)
		}
	}
	var ce *amqp.ConfirmsError
	require.ErrorAs(t, err, &ce)
	requireSameConfirmations(t, ce.Failed, confs[1], confs[3])
	require.Zero(t, ce.Omitted)
	require.ErrorIs(t, err, amqp.ErrNacked)
	require.Contains(t, err.Error(), "2 publishes failed; the first, 2:")

	require.NoError(t, ch.WaitConfirms(ctx), "each failure is reported once")

	// A WaitConfirms whose ctx ends reports nothing: the next one does.
	late, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "q"})
	require.NoError(t, err)
	amqptest.ExpectPublish(t, sc)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	require.ErrorIs(t, ch.WaitConfirms(cctx), context.Canceled)
	require.NoError(t, sc.Send(ctx, ch.ID(), &amqp.BasicNack{DeliveryTag: 5}))
	<-late.Done()
	err = ch.WaitConfirms(cctx) // nothing left to wait for: an ended ctx does not matter
	require.ErrorAs(t, err, &ce)
	requireSameConfirmations(t, ce.Failed, late)
}

// Publishes that the channel's end leaves unconfirmed are failures too.
func TestWaitConfirmsReportsPublishesLostWithTheChannel(t *testing.T) {
	ctx := t.Context()
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	confirmSelectFake(t, ch, sc)
	conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "q"})
	require.NoError(t, err)
	amqptest.ExpectPublish(t, sc)
	waited := make(chan error, 1)
	go func() { waited <- ch.WaitConfirms(ctx) }()
	require.NoError(t, sc.CloseConnection(ctx, amqp.CodeConnectionForced, "CONNECTION_FORCED - broker shutdown", nil))
	err = <-waited
	var ce *amqp.ConfirmsError
	require.ErrorAs(t, err, &ce)
	requireSameConfirmations(t, ce.Failed, conf)
	require.ErrorIs(t, err, amqp.ErrConnectionForced)
}

// requireSameConfirmations checks that got holds exactly want, by identity.
func requireSameConfirmations(t *testing.T, got []*amqp.Confirmation, want ...*amqp.Confirmation) {
	t.Helper()
	require.Len(t, got, len(want))
	for i := range want {
		require.Same(t, want[i], got[i], "failure %d: tag %d, want tag %d", i, got[i].DeliveryTag(), want[i].DeliveryTag())
	}
}
