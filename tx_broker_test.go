package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// txQueue declares a queue that outlives the channels of one connection
// (exclusive to it), with one confirmed message in it when withMessage.
func txQueue(t *testing.T, conn *amqp.Connection, withMessage bool) (admin *amqp.Channel, q string) {
	t.Helper()
	admin = openChannel(t, conn)
	q = tempQueue(t, admin, nil)
	if withMessage {
		publishN(t, admin, q, 1)
	}
	return admin, q
}

func TestTxCommitPublishes(t *testing.T) {
	conn := dialBroker(t)
	admin, q := txQueue(t, conn, false)
	ch := openChannel(t, conn)
	require.NoError(t, ch.TxSelect(testCtx(t)))

	for _, body := range []string{"a", "b"} {
		_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte(body)})
		require.NoError(t, err)
	}
	// Checked on the publishing channel, so the check comes after the publishes.
	require.Zero(t, readyCount(t, ch, q), "held until commit")
	require.NoError(t, ch.TxCommit(testCtx(t)))
	require.Equal(t, uint32(2), readyCount(t, admin, q), "commit-ok means they are enqueued")
}

func TestTxRollbackDiscardsPublishes(t *testing.T) {
	conn := dialBroker(t)
	admin, q := txQueue(t, conn, false)
	ch := openChannel(t, conn)
	require.NoError(t, ch.TxSelect(testCtx(t)))

	_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("discarded")})
	require.NoError(t, err)
	require.NoError(t, ch.TxRollback(testCtx(t)))
	require.Zero(t, readyCount(t, admin, q))

	// Still in transaction mode: the next transaction commits normally.
	_, err = ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("kept")})
	require.NoError(t, err)
	require.NoError(t, ch.TxCommit(testCtx(t)))
	d, err := admin.Get(testCtx(t), amqp.BasicGet{Queue: q, NoAck: true})
	require.NoError(t, err)
	require.Equal(t, "kept", string(d.Body))
	_, err = admin.Get(testCtx(t), amqp.BasicGet{Queue: q, NoAck: true})
	require.ErrorIs(t, err, amqp.ErrEmpty)
}

// An acknowledgement in a transaction takes effect on commit: until then
// the message is still unacknowledged, so closing the channel requeues it.
func TestTxAcksTakeEffectOnCommit(t *testing.T) {
	conn := dialBroker(t)
	admin, q := txQueue(t, conn, true)

	ackAndClose := func(commit bool) {
		ch := openChannel(t, conn)
		require.NoError(t, ch.TxSelect(testCtx(t)))
		d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
		require.NoError(t, err)
		require.NoError(t, d.Ack(amqp.AckOptions{}))
		if commit {
			require.NoError(t, ch.TxCommit(testCtx(t)))
		}
		require.NoError(t, ch.Close(testCtx(t)))
	}

	ackAndClose(false)
	readyEventually(t, admin, q, 1) // the uncommitted ack was discarded with the channel
	ackAndClose(true)
	require.Zero(t, readyCount(t, admin, q), "the committed ack stuck")
	_, err := admin.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.ErrorIs(t, err, amqp.ErrEmpty)
}

// tx.rollback discards the transaction's acknowledgements: the server
// considers the messages unacknowledged again, so the application may
// acknowledge them again (RabbitMQ puts their tags back in the unacked set).
func TestTxRollbackRestoresAcks(t *testing.T) {
	conn := dialBroker(t)
	admin, q := txQueue(t, conn, false)
	publishN(t, admin, q, 2)
	ch := openChannel(t, conn)
	require.NoError(t, ch.TxSelect(testCtx(t)))
	ds := getN(t, ch, q, 2)
	for _, d := range ds {
		require.NoError(t, d.Ack(amqp.AckOptions{}))
	}
	require.NoError(t, ch.TxRollback(testCtx(t)))

	for _, d := range ds {
		require.NoError(t, d.Ack(amqp.AckOptions{}), "the rolled-back ack of tag %d can be made again", d.DeliveryTag)
	}
	require.NoError(t, ch.TxCommit(testCtx(t)))
	require.NoError(t, ch.Close(testCtx(t)))
	require.Zero(t, readyCount(t, admin, q), "acked for good: not requeued on close")
}

// A rollback restores only the acknowledgements of its own transaction: a
// delivery acknowledged in an earlier, committed transaction stays settled
// even when a later multiple ack spanned its tag.
func TestTxRollbackKeepsCommittedAcks(t *testing.T) {
	conn := dialBroker(t)
	admin, q := txQueue(t, conn, false)
	publishN(t, admin, q, 3)
	ch := openChannel(t, conn)
	require.NoError(t, ch.TxSelect(testCtx(t)))
	ds := getN(t, ch, q, 3) // tags 1, 2, 3

	require.NoError(t, ds[1].Ack(amqp.AckOptions{}))
	require.NoError(t, ch.TxCommit(testCtx(t))) // 2 is acked for good
	require.NoError(t, ds[2].Ack(amqp.AckOptions{Multiple: true}))
	require.NoError(t, ch.TxRollback(testCtx(t))) // 1 and 3 are unacked again; 2 is not

	require.NoError(t, ds[0].Ack(amqp.AckOptions{}), "1 was unacked again by the rollback")
	require.NoError(t, ds[2].Ack(amqp.AckOptions{}), "3 was unacked again by the rollback")
	err := ds[1].Ack(amqp.AckOptions{})
	// Sent right behind the ack: a 406 caused by the ack fails it.
	_, perr := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	require.NoError(t, perr, "the channel stays open")
	require.ErrorIs(t, err, amqp.ErrAlreadySettled, "2 was committed before the rolled-back transaction")
	require.NoError(t, ch.TxCommit(testCtx(t)))
	require.NoError(t, ch.Close(testCtx(t)))
	require.Zero(t, readyCount(t, admin, q), "all three acked for good")
}

// A channel error ends the transaction: the reopened channel is not
// transactional, so a commit is refused.
func TestTxEndsWithChannelError(t *testing.T) {
	conn := dialBroker(t)
	admin, q := txQueue(t, conn, false)
	ch := openChannel(t, conn)
	require.NoError(t, ch.TxSelect(testCtx(t)))
	_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("lost")})
	require.NoError(t, err)
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: uniqueName("missing"), Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound)

	err = ch.TxCommit(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrPreconditionFailed, "406: channel is not transactional")
	require.Zero(t, readyCount(t, admin, q), "the uncommitted publish was lost with the channel")
}
