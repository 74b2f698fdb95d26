package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// Against the broker: a barrier after a batch in which a full queue nacks
// some publishes and one is returned unroutable lists exactly those.
func TestWaitConfirmsListsExactlyTheNackedAndReturnedPublishes(t *testing.T) {
	ctx := testCtx(t)
	ch := openChannel(t, dialBroker(t))
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	q := tempQueue(t, ch, amqp.Table{"x-max-length": int32(2), "x-overflow": "reject-publish"})

	var confs []*amqp.Confirmation
	for range 4 { // the queue takes two; the broker nacks the rest
		c, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q, Body: []byte("m")})
		require.NoError(t, err)
		confs = append(confs, c)
	}
	returned, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: uniqueName("nowhere"), Mandatory: true})
	require.NoError(t, err)

	err = ch.WaitConfirms(ctx)
	var ce *amqp.ConfirmsError
	require.ErrorAs(t, err, &ce)
	// (The broker may confirm out of publish order: compare as sets.)
	failed := map[*amqp.Confirmation]bool{}
	for _, c := range ce.Failed {
		failed[c] = true
	}
	require.Equal(t, map[*amqp.Confirmation]bool{confs[2]: true, confs[3]: true, returned: true}, failed)
	require.ErrorIs(t, err, amqp.ErrNacked)
	require.ErrorIs(t, err, amqp.ErrNoRoute)
	require.True(t, confs[0].Acked())
	require.True(t, confs[1].Acked())
	require.Zero(t, ch.Unconfirmed())

	// All good from here on.
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: uniqueName("nowhere")})
	require.NoError(t, err)
	require.NoError(t, ch.WaitConfirms(ctx))
}
