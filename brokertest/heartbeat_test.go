package brokertest_test

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// heartbeat is the interval the heartbeat tests ask for. RabbitMQ proposes
// 60 s; the client negotiates the smaller value.
const heartbeat = 2 * time.Second

// TestHeartbeats checks both directions of heartbeating against the real
// server. The subtests idle, so they run in parallel.
func TestHeartbeats(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)

	// A peer that stops answering without closing the socket (a dead host, a
	// partition) is detected by read silence: two intervals.
	t.Run("DeadPeerDetected", func(t *testing.T) {
		t.Parallel()
		proxy := startProxy(t, node.Addr())
		conn := dial(t, amqp.Config{Addrs: []string{proxy.Listen}, Heartbeat: heartbeat, ConnectionName: uniqueName(t)})
		require.Equal(t, heartbeat, conn.Heartbeat(), "min(2 s, the server's 60 s)")
		require.True(t, conn.IsAlive())

		blackhole(t, proxy, "upstream", "downstream")
		elapsed := within(t, conn.Done(), 2*heartbeat+5*time.Second, "conn.Done after the peer went silent")
		t.Logf("dead peer detected %v after the network went silent: %v", elapsed, conn.Err())
		require.ErrorIs(t, conn.Err(), amqp.ErrHeartbeatTimeout)
		// The client gives up two intervals after the last frame it read,
		// which here came just before the silence began (the connection is
		// fresh), give or take the heartbeat timer's granularity.
		require.GreaterOrEqual(t, elapsed, heartbeat, "not before the peer was silent long enough")
		require.Less(t, elapsed, 2*heartbeat+2*time.Second)
		require.False(t, conn.IsAlive())
		require.True(t, amqp.Recoverable(conn.Err()))
		_, err := conn.Channel(ctxFor(t, 5*time.Second))
		require.ErrorIs(t, err, amqp.ErrClosed)
		require.ErrorIs(t, err, amqp.ErrHeartbeatTimeout)
	})

	// An idle connection stays up: the client sends heartbeats, so the
	// server (which drops a client silent for two to three intervals) keeps
	// it, and the server's heartbeats keep the client's detector quiet.
	t.Run("IdleConnectionStaysAlive", func(t *testing.T) {
		t.Parallel()
		proxy := startProxy(t, node.Addr())
		name := uniqueName(t)
		conn := dial(t, amqp.Config{Addrs: []string{proxy.Listen}, Heartbeat: heartbeat, ConnectionName: name})
		require.Equal(t, heartbeat, conn.Heartbeat())

		select {
		case <-conn.Done():
			t.Fatalf("idle connection ended: %v", conn.Err())
		case <-time.After(4 * heartbeat):
		}
		require.NoError(t, conn.Err())
		require.True(t, conn.IsAlive())
		_, err := node.ConnectionPID(name)
		require.NoError(t, err, "the server still has the connection")
		roundTrip(t, conn, "still alive")
	})

	// The control for the test above: the same idle connection, but with
	// the client's heartbeat frames dropped on the way out. The server
	// closes it, so IdleConnectionStaysAlive would fail if the client sent
	// no heartbeats.
	t.Run("SilentClientIsDropped", func(t *testing.T) {
		t.Parallel()
		var d net.Dialer
		conn := dial(t, amqp.Config{
			Addrs:          []string{node.Addr()},
			Heartbeat:      heartbeat,
			ConnectionName: uniqueName(t),
			Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := d.DialContext(ctx, network, addr)
				return dropHeartbeats{c}, err
			},
		})
		elapsed := within(t, conn.Done(), 4*heartbeat+5*time.Second, "the server dropping a client that sends no heartbeats")
		t.Logf("server dropped the silent client after %v: %v", elapsed, conn.Err())
		require.ErrorIs(t, conn.Err(), amqp.ErrConnectionLost)
	})
}

// heartbeatFrame is an AMQP heartbeat frame: type 8, channel 0, size 0, end.
var heartbeatFrame = []byte{8, 0, 0, 0, 0, 0, 0, 0xCE}

// dropHeartbeats is a net.Conn that swallows writes made only of heartbeat frames.
type dropHeartbeats struct{ net.Conn }

func (c dropHeartbeats) Write(p []byte) (int, error) {
	if len(p) > 0 && len(p)%len(heartbeatFrame) == 0 &&
		bytes.Equal(p, bytes.Repeat(heartbeatFrame, len(p)/len(heartbeatFrame))) {
		return len(p), nil
	}
	return c.Conn.Write(p)
}
