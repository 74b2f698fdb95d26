package amqp_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Regression test from a review of connection recovery: it failed because of
// the bug its comment describes, which is fixed.

// BUG 5 (tx.go checkTxLostLocked, doc of ErrTransactionLost): after a
// recovery lost a transaction's work, work done on the new link before the
// next TxCommit stays in the server's open transaction when that commit
// fails with ErrTransactionLost (nothing is sent, no tx.rollback). The
// documentation promises "the next transaction starts empty"; in fact the
// next successful TxCommit commits that work too, so an application that
// redoes its transaction after ErrTransactionLost publishes its message twice.
func TestTransactionLostDiscardsWorkDoneAfterRecovery(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.TxSelect(ctx))

	// The application's transaction: publish, then commit.
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("A")})
	require.NoError(t, err)
	require.True(t, eventually(5*time.Second, func() bool { return len(b.methodsOf(0)) >= 3 }))
	b.conn(t, 0).Drop()
	require.True(t, eventually(5*time.Second, func() bool { return events.count(amqp.RecoverySucceeded) == 1 }))

	// The same transaction goes on after the recovery: another publish, then the commit.
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("B")})
	require.NoError(t, err)
	require.ErrorIs(t, ch.TxCommit(ctx), amqp.ErrTransactionLost)

	// "The next transaction starts empty": the application redoes its transaction.
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("A")})
	require.NoError(t, err)
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("B")})
	require.NoError(t, err)
	require.NoError(t, ch.TxCommit(ctx))

	// What the server committed: the publishes since the last commit or rollback.
	var open, committed []string
	for _, m := range b.methodsOf(1) {
		switch {
		case strings.Contains(m, "basic.publish"):
			open = append(open, m)
		case strings.HasSuffix(m, "tx.rollback"):
			open = nil
		case strings.HasSuffix(m, "tx.commit"):
			committed = append(committed, open...)
			open = nil
		}
	}
	require.Equal(t, []string{"1 basic.publish q A", "1 basic.publish q B"}, committed,
		"the commit after ErrTransactionLost also committed the lost transaction's post-recovery work; server saw %v", b.methodsOf(1))
}

// TestRecoveryLosesTransaction checks that tx mode is re-applied and that a
// transaction with uncommitted work at the drop cannot be committed as if
// nothing had happened.
func TestRecoveryLosesTransaction(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.TxSelect(ctx))
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("uncommitted")})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(b.methods(b.conn(t, 0))) >= 3 }, 5*time.Second, time.Millisecond)
	b.conn(t, 0).Drop()
	events.wait(t, amqp.RecoverySucceeded)
	require.Equal(t, []string{"1 channel.open", "1 tx.select"}, b.methods(b.conn(t, 1)))
	require.ErrorIs(t, ch.TxCommit(ctx), amqp.ErrTransactionLost)
	require.Eventually(t, func() bool { return len(b.methods(b.conn(t, 1))) == 3 }, 5*time.Second, time.Millisecond)
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("again")})
	require.NoError(t, err)
	require.NoError(t, ch.TxCommit(ctx))
	// The commit that reported the loss rolled back, so "again" is the
	// whole of the transaction that commits.
	require.Equal(t, []string{"1 channel.open", "1 tx.select", "1 tx.rollback", "1 basic.publish q again", "1 tx.commit"}, b.methods(b.conn(t, 1)))
}

// TestChannelErrorEndsTransactionBookkeeping checks that a transaction
// ended by a channel error leaves nothing behind that a later recovery
// would report as a lost transaction.
func TestChannelErrorEndsTransactionBookkeeping(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, _ int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if m, ok := cmd.Method.(*amqp.QueueDeclare); ok && m.Passive {
			return true, c.CloseChannel(ctx, cmd.Channel, amqp.CodeNotFound, "NOT_FOUND - no queue", m)
		}
		return false, nil
	})
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.NoError(t, ch.TxSelect(ctx))
	_, err = ch.Publish(ctx, amqp.Publishing{RoutingKey: "q", Body: []byte("in tx")})
	require.NoError(t, err)
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "missing", Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound) // the channel error that ends the transaction
	require.NoError(t, ch.TxSelect(ctx))      // a new, empty transaction on the reopened channel

	b.conn(t, 0).Drop()
	events.wait(t, amqp.RecoverySucceeded)
	require.NoError(t, ch.TxCommit(ctx), "the empty transaction commits")
}
