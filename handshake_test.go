package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestHandshakeClientProperties(t *testing.T) {
	_, sc := fakeConn(t, amqptest.Options{}, amqp.Config{ConnectionName: "orders-service"})
	props := sc.StartOk().ClientProperties
	require.Equal(t, "orders-service", props["connection_name"])
	caps, ok := props["capabilities"].(amqp.Table)
	require.True(t, ok)
	for _, c := range []string{"publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
		"connection.blocked", "authentication_failure_close", "per_consumer_qos", "direct_reply_to"} {
		require.Equal(t, true, caps[c], c)
	}
	require.Equal(t, "PLAIN", sc.StartOk().Mechanism)
	require.Equal(t, "\x00guest\x00guest", sc.StartOk().Response)
}

func TestTuneNegotiation(t *testing.T) {
	for _, tc := range []struct {
		name                         string
		serverHB                     uint16
		clientHB                     time.Duration
		serverFrame, clientFrame     uint32
		wantHB                       time.Duration
		wantFrame                    uint32
		serverChannels, clientChanel uint16
		wantChannels                 uint16
	}{
		{"server's values", 60, 0, 131072, 0, 60 * time.Second, 131072, 2047, 0, 2047},
		{"smaller wins", 60, 10 * time.Second, 131072, 8192, 10 * time.Second, 8192, 2047, 100, 100},
		{"server smaller", 5, 30 * time.Second, 8192, 131072, 5 * time.Second, 8192, 64, 2047, 64},
		{"server off means client's", 0, 7 * time.Second, 131072, 0, 7 * time.Second, 131072, 2047, 0, 2047},
		{"client disables", 60, -1, 131072, 0, 0, 131072, 2047, 0, 2047},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn, sc := fakeConn(t, amqptest.Options{Heartbeat: tc.serverHB, FrameMax: tc.serverFrame, ChannelMax: tc.serverChannels},
				amqp.Config{Heartbeat: tc.clientHB, FrameMax: tc.clientFrame, ChannelMax: tc.clientChanel})
			require.Equal(t, tc.wantHB, conn.Heartbeat())
			require.Equal(t, tc.wantFrame, conn.FrameMax())
			require.Equal(t, tc.wantChannels, conn.ChannelMax())
			require.Equal(t, uint16(tc.wantHB/time.Second), sc.TuneOk().Heartbeat)
			require.Equal(t, tc.wantFrame, sc.TuneOk().FrameMax)
		})
	}
}

func TestHandshakeFailures(t *testing.T) {
	t.Run("refused login", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{CheckAuth: func(string, string) error { return errors.New("bad credentials") }})
		_, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial, Username: "u", Password: "hunter2"})
		require.ErrorIs(t, err, amqp.ErrAccessRefused)
		require.NotContains(t, err.Error(), "hunter2")
	})
	t.Run("unknown vhost", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{CheckVhost: func(v string) error { return fmt.Errorf("vhost %s not found", v) }})
		_, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial, Vhost: "nope"})
		require.ErrorIs(t, err, amqp.ErrNotAllowed)
		require.Contains(t, err.Error(), "vhost nope not found")
	})
	t.Run("protocol header mismatch", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{ManualHandshake: true})
		errc := make(chan error, 1)
		go func() {
			_, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
			errc <- err
		}()
		sc, err := srv.Accept(t.Context())
		require.NoError(t, err)
		_, err = sc.ReadProtocolHeader(t.Context())
		require.NoError(t, err)
		require.NoError(t, sc.WriteRaw(t.Context(), []byte("AMQP\x01\x01\x00\x0a")))
		sc.Drop()
		err = <-errc
		require.ErrorIs(t, err, amqp.ErrProtocolVersion)
		var pe *amqp.ProtocolVersionError
		require.ErrorAs(t, err, &pe)
		require.Equal(t, "AMQP\x01\x01\x00\x0a", string(pe.Header[:]))
	})
	t.Run("silent server bounded by ctx", func(t *testing.T) {
		srv := amqptest.NewServer(t, amqptest.Options{ManualHandshake: true})
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := amqp.DialConfig(ctx, amqp.Config{Dial: srv.Dial})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(start), 5*time.Second)
	})
}
