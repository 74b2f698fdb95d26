package brokertest_test

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/brokertest"
	"github.com/stretchr/testify/require"
)

// TestOwnNode starts nodes of its own (the subtests in parallel, since each
// boot mostly waits) to take them down under a client.
func TestOwnNode(t *testing.T) {
	checkLeaks(t)

	// SIGKILL: the client's socket is reset with no connection.close.
	t.Run("KilledNodeLosesConnection", func(t *testing.T) {
		t.Parallel()
		// An extra configuration line, seen by the client: the server
		// proposes this heartbeat, which the client accepts by default.
		node := brokertest.StartNode(t, brokertest.NodeOptions{Config: []string{"heartbeat = 7"}})
		conn := dial(t, amqp.Config{Addrs: []string{node.Addr()}})
		require.Equal(t, 7*time.Second, conn.Heartbeat(), "heartbeat = 7 in rabbitmq.conf")
		roundTrip(t, conn, "before the kill")

		require.NoError(t, node.Kill())
		elapsed := within(t, conn.Done(), 10*time.Second, "conn.Done after the node was killed")
		t.Logf("connection ended %v after the kill: %v", elapsed, conn.Err())
		require.ErrorIs(t, conn.Err(), amqp.ErrConnectionLost)
		require.True(t, amqp.Recoverable(conn.Err()))
		require.False(t, conn.IsAlive())

		_, err := amqp.Dial(ctxFor(t, 10*time.Second), node.URL())
		require.ErrorIs(t, err, syscall.ECONNREFUSED, "nothing listens after the kill")
		require.NoError(t, node.Kill(), "killing a dead node is a no-op")
	})

	// A node that cannot boot fails Start quickly, with the reason, and
	// leaves nothing behind.
	t.Run("BadConfigFailsFast", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		node, err := brokertest.Start(brokertest.NodeOptions{Config: []string{"no_such_setting = 1"}})
		elapsed := time.Since(start)
		t.Logf("failed after %v: %v", elapsed, err)
		require.Nil(t, node)
		require.ErrorContains(t, err, "crashed while booting")
		require.ErrorContains(t, err, "failed_to_prepare_configuration")
		require.Less(t, elapsed, 60*time.Second, "not the whole two-minute start timeout")
		leftovers, _ := filepath.Glob(filepath.Join(os.TempDir(), "brokertest-*", "rabbitmq.conf"))
		for _, f := range leftovers {
			conf, _ := os.ReadFile(f)
			require.NotContains(t, string(conf), "no_such_setting", "the failed node's directory is removed")
		}
	})

	// A graceful stop: the server closes every connection with 320, and
	// each client must report that, not the reset that follows it (the
	// server closes the socket right after connection.close, so the
	// client's close-ok write may fail).
	t.Run("StoppedNodeClosesConnections", func(t *testing.T) {
		t.Parallel()
		node := brokertest.StartNode(t, brokertest.NodeOptions{})
		conns := make([]*amqp.Connection, 20)
		for i := range conns {
			conns[i] = dial(t, amqp.Config{Addrs: []string{node.Addr()}})
		}
		roundTrip(t, conns[0], "before the stop")

		start := time.Now()
		require.NoError(t, node.Stop())
		t.Logf("node stopped in %v", time.Since(start))
		lost := 0
		for i, conn := range conns {
			within(t, conn.Done(), 5*time.Second, "conn.Done after the node stopped")
			var amqpErr *amqp.Error
			if !errors.As(conn.Err(), &amqpErr) {
				lost++
				t.Errorf("connection %d ended with %v, not the server's connection.close", i, conn.Err())
				continue
			}
			require.Equal(t, amqp.CodeConnectionForced, amqpErr.Code)
			require.True(t, amqpErr.Server)
			require.Contains(t, amqpErr.Reason, "shutdown")
			require.True(t, amqp.Recoverable(conn.Err()))
		}
		t.Logf("%d of %d connections lost the server's close reason", lost, len(conns))

		_, err := os.Stat(node.Dir())
		require.ErrorIs(t, err, os.ErrNotExist, "Stop removes the node's directory")
		require.NoError(t, node.Stop(), "Stop is idempotent")
	})
}
