package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Regression test from a review of connection recovery: it failed because of
// the bug its comment describes, which is fixed.

// BUG 9 (topology_recovery.go restoreTopology: defer tmp.Close(context.WithoutCancel(ctx))):
// the topology is restored on a temporary channel that restore closes with
// a context that never ends. If the new link dies after that channel.close
// went out and before its close-ok, the close waits for a reply that
// cannot come: the call is failed only when the recovery retires the link,
// and the recovery is the goroutine stuck in the deferred Close. The
// recovery never goes on (and Close of the connection cannot end it: the
// stuck Close ignores the recovery's ctx).
func TestRecoveryGoesOnWhenTheLinkDiesDuringTopologyChannelClose(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if _, ok := cmd.Method.(*amqp.ChannelClose); ok && idx == 1 {
			c.Drop() // the node dies as the topology's channel is closed
			return true, nil
		}
		return false, nil
	})
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: "x", Type: "direct"}))

	b.conn(t, 0).Drop()
	if !eventually(5*time.Second, func() bool { return events.count(amqp.RecoverySucceeded) == 1 }) {
		t.Fatalf("the recovery is stuck closing the topology channel of a dead link (connections made: %d, recovering: %t); events:\n%s",
			b.senderCount(), conn.Recovering(), events)
	}
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: "y", Type: "direct"}))
}
