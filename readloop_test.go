package amqp_test

import (
	"runtime"
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestServerClosesConnection(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	confirmSelectFake(t, ch, sc)
	conf, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "q"})
	require.NoError(t, err)
	amqptest.ExpectPublish(t, sc)
	require.NoError(t, sc.CloseConnection(t.Context(), amqp.CodeConnectionForced, "CONNECTION_FORCED - broker shutdown", nil))
	<-conn.Done()
	err = conn.Err()
	require.ErrorIs(t, err, amqp.ErrConnectionForced)
	var e *amqp.Error
	require.ErrorAs(t, err, &e)
	require.True(t, e.Server)
	require.True(t, e.Connection)
	require.True(t, amqp.Recoverable(err))
	werr := conf.Wait(t.Context())
	require.ErrorIs(t, werr, amqp.ErrConnectionForced, "an outstanding confirmation resolves with the error")
	require.ErrorIs(t, werr, amqp.ErrClosed)
	_, err = ch.QueueDeclare(t.Context(), amqp.QueueDeclare{})
	require.ErrorIs(t, err, amqp.ErrClosed)
}

func TestHostileFrames(t *testing.T) {
	for name, tc := range map[string]struct {
		raw  []byte
		want error
	}{
		"oversized frame": {append([]byte{3, 0, 1, 0x40, 0, 0, 0}, make([]byte, 16)...), amqp.ErrFrameTooLarge},
		"bad frame end":   {[]byte{8, 0, 0, 0, 0, 0, 0, 0xAB}, amqp.ErrMalformedFrame},
		"unknown method":  {[]byte{1, 0, 0, 0, 0, 0, 4, 0, 99, 0, 1, 0xCE}, amqp.ErrUnknownMethod},
	} {
		t.Run(name, func(t *testing.T) {
			conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
			require.NoError(t, sc.WriteRaw(t.Context(), tc.raw))
			<-conn.Done()
			require.ErrorIs(t, conn.Err(), tc.want)
		})
	}
	t.Run("body larger than MaxBodySize", func(t *testing.T) {
		conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{MaxBodySize: 1024})
		ch := openFakeChannel(t, conn, sc)
		// The client may close the pipe once it has read the header, before
		// the body is written: the write's error is not what is tested.
		_ = sc.SendContent(t.Context(), ch.ID(), &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1},
			amqp.Properties{}, make([]byte, 4096))
		<-conn.Done()
		require.ErrorIs(t, conn.Err(), amqp.ErrBodyTooLarge)
	})
}

// TestHostileLimitsAllocateNothingLarge checks that a frame or a body that
// claims to be huge ends the connection with a typed error before anything
// of its size is allocated. (With recovery on, such a protocol error is
// recovered: recovery_protocol_test.go.)
func TestHostileLimitsAllocateNothingLarge(t *testing.T) {
	const claimed = 1 << 30
	header := func(ch uint16) []byte {
		b, err := amqp.AppendMethodFrame(nil, ch, &amqp.BasicDeliver{ConsumerTag: "c", DeliveryTag: 1})
		require.NoError(t, err)
		b, err = amqp.AppendHeaderFrame(b, ch, 60, claimed, &amqp.Properties{})
		require.NoError(t, err)
		return b
	}
	for name, tc := range map[string]struct {
		raw  func(ch uint16) []byte
		want error
	}{
		"frame claiming 1 GiB": {func(uint16) []byte { return []byte{3, 0, 1, 0x40, 0, 0, 0} }, amqp.ErrFrameTooLarge},
		"body claiming 1 GiB":  {header, amqp.ErrBodyTooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
			ch := openFakeChannel(t, conn, sc)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			require.NoError(t, sc.WriteRaw(t.Context(), tc.raw(ch.ID())))
			<-conn.Done()
			runtime.ReadMemStats(&after)
			require.ErrorIs(t, conn.Err(), tc.want)
			require.Less(t, after.TotalAlloc-before.TotalAlloc, uint64(16<<20), "nothing near the claimed size is allocated")
		})
	}
}
