package amqp_test

import (
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

func TestDialAndNegotiate(t *testing.T) {
	conn := dialBroker(t)
	require.True(t, conn.IsAlive())
	require.NoError(t, conn.Err())
	require.Equal(t, uint32(131072), conn.FrameMax(), "RabbitMQ's frame_max")
	require.Equal(t, uint16(2047), conn.ChannelMax(), "RabbitMQ's channel_max")
	require.Equal(t, 60*time.Second, conn.Heartbeat(), "RabbitMQ proposes 60 s and the client accepts it by default")
	require.Equal(t, "RabbitMQ", conn.ServerProperties()["product"])
}

func TestDialWrongPassword(t *testing.T) {
	needBroker(t)
	start := time.Now()
	_, err := amqp.Dial(testCtx(t), "amqp://guest:wrong-secret@127.0.0.1:5672/")
	require.Error(t, err)
	require.ErrorIs(t, err, amqp.ErrAccessRefused, "403 ACCESS_REFUSED from the server")
	var amqpErr *amqp.Error
	require.ErrorAs(t, err, &amqpErr)
	require.True(t, amqpErr.Server)
	require.Contains(t, amqpErr.Reason, "ACCESS_REFUSED")
	require.NotContains(t, err.Error(), "wrong-secret", "errors never contain the password")
	require.Less(t, time.Since(start), 10*time.Second)
}

func TestDialUnknownVhost(t *testing.T) {
	needBroker(t)
	_, err := amqp.Dial(testCtx(t), "amqp://guest:guest@127.0.0.1:5672/no-such-vhost")
	require.ErrorIs(t, err, amqp.ErrNotAllowed, "530 NOT_ALLOWED")
	var amqpErr *amqp.Error
	require.ErrorAs(t, err, &amqpErr)
	require.True(t, amqpErr.Connection)
	require.Contains(t, amqpErr.Reason, "no-such-vhost")
}

func TestDialClusterAddressesInOrder(t *testing.T) {
	needBroker(t)
	// The first address refuses connections; the second is the broker.
	closed := reservedClosedPort(t)
	cfg, err := amqp.ParseURL("amqp://guest:guest@" + closed + ",127.0.0.1:5672/")
	require.NoError(t, err)
	conn, err := amqp.DialConfig(testCtx(t), cfg)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:5672", conn.Addr())
	require.NoError(t, conn.Close(testCtx(t)))

	// When every address fails, the error names each one.
	other := reservedClosedPort(t)
	cfg, err = amqp.ParseURL("amqp://guest:guest@" + closed + "," + other + "/")
	require.NoError(t, err)
	_, err = amqp.DialConfig(testCtx(t), cfg)
	var dialErr *amqp.DialError
	require.ErrorAs(t, err, &dialErr)
	require.Len(t, dialErr.Failures, 2)
	require.Contains(t, err.Error(), closed)
	require.Contains(t, err.Error(), other)
}

func TestCloseIsGracefulAndIdempotent(t *testing.T) {
	needBroker(t)
	conn, err := amqp.Dial(testCtx(t), brokerURL())
	require.NoError(t, err)
	ch := openChannel(t, conn)
	require.NoError(t, conn.Close(testCtx(t)))
	require.NoError(t, conn.Close(testCtx(t)), "second Close")
	<-conn.Done()
	require.ErrorIs(t, conn.Err(), amqp.ErrClosed)
	require.False(t, conn.IsAlive())
	<-ch.Done()
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Exclusive: true})
	require.ErrorIs(t, err, amqp.ErrClosed)
}
