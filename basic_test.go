package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestGetReturnsMalformedContentWithItsMessage(t *testing.T) {
	ctx := t.Context()
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	type result struct {
		d   *amqp.Delivery
		err error
	}
	res := make(chan result, 1)
	go func() {
		d, err := ch.Get(ctx, amqp.BasicGet{Queue: "q"})
		res <- result{d, err}
	}()
	amqptest.Expect[*amqp.BasicGet](t, sc)
	bad := poisonedHeaders["unknown type tag in a header table"].props
	require.NoError(t, sc.WriteRaw(ctx, rawContent(t, ch.ID(), &amqp.BasicGetOk{DeliveryTag: 7, MessageCount: 3}, bad, []byte("poison"))))
	r := <-res
	require.ErrorIs(t, r.err, amqp.ErrMalformedContent)
	var ce *amqp.ContentError
	require.ErrorAs(t, r.err, &ce)
	require.Equal(t, "basic.get-ok", ce.Method)
	require.NotNil(t, r.d)
	require.Equal(t, "poison", string(r.d.Body))
	require.Equal(t, uint32(3), r.d.MessageCount)
	require.NoError(t, r.d.Nack(amqp.NackOptions{}))
	_, nack := amqptest.Expect[*amqp.BasicNack](t, sc)
	require.Equal(t, uint64(7), nack.DeliveryTag)
	require.NoError(t, conn.Err())
}
