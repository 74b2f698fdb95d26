package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestChannelMaxExhausted(t *testing.T) {
	srv := amqptest.NewServer(t, amqptest.Options{ChannelMax: 3, Handler: amqptest.AutoReply})
	conn, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
	require.NoError(t, err)
	defer conn.Close(t.Context())
	require.Equal(t, uint16(3), conn.ChannelMax())
	var chans []*amqp.Channel
	for range 3 {
		ch, err := conn.Channel(t.Context())
		require.NoError(t, err)
		require.LessOrEqual(t, ch.ID(), uint16(3))
		chans = append(chans, ch)
	}
	_, err = conn.Channel(t.Context())
	require.ErrorIs(t, err, amqp.ErrNoFreeChannel)
	require.NoError(t, chans[1].Close(t.Context()))
	ch, err := conn.Channel(t.Context())
	require.NoError(t, err, "a closed channel's number is free again")
	require.Equal(t, chans[1].ID(), ch.ID())
}
