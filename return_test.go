package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestReturnCarriesMalformedContent(t *testing.T) {
	ctx := t.Context()
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	returns := make(chan amqp.Return, 2)
	ch.OnReturn(func(r amqp.Return) { returns <- r })
	bad := poisonedHeaders["unknown type tag in a header table"].props
	require.NoError(t, sc.WriteRaw(ctx, rawContent(t, ch.ID(), &amqp.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nowhere"}, bad, []byte("poison"))))
	require.NoError(t, sc.SendContent(ctx, ch.ID(), &amqp.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "good"}, amqp.Properties{}, []byte("good")))
	r := <-returns
	require.ErrorIs(t, r.Err, amqp.ErrMalformedContent)
	require.Equal(t, "nowhere", r.RoutingKey)
	require.Equal(t, "poison", string(r.Body))
	r = <-returns
	require.NoError(t, r.Err)
	require.Equal(t, "good", r.RoutingKey)
	require.NoError(t, conn.Err())
}

// Bug: two returns before one multiple ack: the first returned publish is
// reported as acked, the return is lost.
func TestReturnsBeforeAMultipleAckStayReturned(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	confirmSelectFake(t, ch, sc)
	c1, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "nope1", Mandatory: true})
	require.NoError(t, err)
	c2, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "nope2", Mandatory: true})
	require.NoError(t, err)
	amqptest.ExpectPublish(t, sc)
	amqptest.ExpectPublish(t, sc)
	require.NoError(t, sc.SendContent(t.Context(), ch.ID(), &amqp.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nope1"}, amqp.Properties{}, nil))
	require.NoError(t, sc.SendContent(t.Context(), ch.ID(), &amqp.BasicReturn{ReplyCode: 312, ReplyText: "NO_ROUTE", RoutingKey: "nope2"}, amqp.Properties{}, nil))
	require.NoError(t, sc.Send(t.Context(), ch.ID(), &amqp.BasicAck{DeliveryTag: 2, Multiple: true}))
	require.ErrorIs(t, c2.Wait(t.Context()), amqp.ErrReturned)
	require.ErrorIs(t, c1.Wait(t.Context()), amqp.ErrReturned, "publish 1 was returned but reported acked")
}
