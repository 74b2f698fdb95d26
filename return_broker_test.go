package amqp_test

import (
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

func TestMandatoryReturnWithConfirms(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	returns := make(chan amqp.Return, 1)
	ch.OnReturn(func(r amqp.Return) { returns <- r })
	q := tempQueue(t, ch, nil)

	routed, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Mandatory: true, Body: []byte("routed")})
	require.NoError(t, err)
	lost, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: uniqueName("nowhere"), Mandatory: true,
		Properties: amqp.Properties{MessageID: "m-1"}, Body: []byte("unroutable")})
	require.NoError(t, err)

	require.NoError(t, routed.Wait(testCtx(t)))
	err = lost.Wait(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrReturned)
	require.ErrorIs(t, err, amqp.ErrNoRoute, "312 NO_ROUTE")
	var re *amqp.ReturnedError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "unroutable", string(re.Return.Body))
	require.Equal(t, "m-1", re.Return.MessageID)
	require.NotNil(t, lost.Returned())
	r := <-returns
	require.Equal(t, amqp.CodeNoRoute, r.ReplyCode)
	require.Equal(t, "unroutable", string(r.Body))
}

func TestReturnWithoutConfirms(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	returns := make(chan amqp.Return, 1)
	ch.OnReturn(func(r amqp.Return) { returns <- r })
	conf, err := ch.Publish(testCtx(t), amqp.Publishing{Exchange: "amq.direct", RoutingKey: uniqueName("nowhere"), Mandatory: true, Body: []byte("back")})
	require.NoError(t, err)
	require.False(t, conf.Requested())
	require.NoError(t, conf.Wait(testCtx(t)), "outside confirm mode a confirmation is resolved at once")
	select {
	case r := <-returns:
		require.Equal(t, "amq.direct", r.Exchange)
		require.Equal(t, "back", string(r.Body))
	case <-time.After(5 * time.Second):
		t.Fatal("no basic.return")
	}
}

func TestUnroutableMandatoryPublishesAllReportReturned(t *testing.T) {
	conn := dialBroker(t)
	ch, err := conn.Channel(t.Context())
	require.NoError(t, err)
	require.NoError(t, ch.ConfirmSelect(t.Context(), amqp.ConfirmSelect{}))
	var confs []*amqp.Confirmation
	for range 200 {
		c, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "no-such-queue-review", Mandatory: true})
		require.NoError(t, err)
		confs = append(confs, c)
	}
	returned := 0
	for _, c := range confs {
		if err := c.Wait(t.Context()); err != nil {
			returned++
		}
	}
	t.Logf("%d of 200 unroutable mandatory publishes reported returned", returned)
	require.Equal(t, 200, returned)
}

func TestMixedRoutedAndReturnedPublishesReportTheirOutcome(t *testing.T) {
	conn := dialBroker(t)
	ch, err := conn.Channel(t.Context())
	require.NoError(t, err)
	q, err := ch.QueueDeclare(t.Context(), amqp.QueueDeclare{Queue: "", Exclusive: true, AutoDelete: true})
	require.NoError(t, err)
	require.NoError(t, ch.ConfirmSelect(t.Context(), amqp.ConfirmSelect{}))
	type pub struct {
		c      *amqp.Confirmation
		routed bool
	}
	var pubs []pub
	for i := range 2000 {
		routed := i%3 == 0
		key := "no-such-queue-review"
		if routed {
			key = q.Queue
		}
		c, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: key, Mandatory: true, Body: make([]byte, 100)})
		require.NoError(t, err)
		pubs = append(pubs, pub{c, routed})
	}
	wrong := 0
	for _, p := range pubs {
		err := p.c.Wait(t.Context())
		if (err == nil) != p.routed {
			wrong++
		}
	}
	t.Logf("%d of %d confirmations report the wrong outcome", wrong, len(pubs))
	require.Zero(t, wrong)
}
