package amqp_test

import (
	"bytes"
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

func TestLargeBodySplitIntoFrames(t *testing.T) {
	needBroker(t)
	cfg, err := amqp.ParseURL(brokerURL())
	require.NoError(t, err)
	cfg.FrameMax = 4096
	conn, err := amqp.DialConfig(testCtx(t), cfg)
	require.NoError(t, err)
	defer conn.Close(testCtx(t))
	require.Equal(t, uint32(4096), conn.FrameMax())
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	q := tempQueue(t, ch, nil)
	body := make([]byte, 16<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	conf, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: body})
	require.NoError(t, err)
	require.NoError(t, conf.Wait(testCtx(t)))
	d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q, NoAck: true})
	require.NoError(t, err)
	require.True(t, bytes.Equal(body, d.Body), "16 MiB arrived intact through 4 KiB frames")
}
