package amqp_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// Frame-level tests of recovery after a protocol error: this client closed
// the connection because the server sent something it could not parse.

// badFrameEnd is a heartbeat frame whose frame-end octet is wrong: the
// stream cannot be trusted past it.
var badFrameEnd = []byte{8, 0, 0, 0, 0, 0, 0, 0xAB}

// poisonAfterConsume answers basic.consume and then breaks the framing, on
// the connections for which poison(idx) holds.
func poisonAfterConsume(poison func(idx int) bool) interceptFunc {
	return func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		m, ok := cmd.Method.(*amqp.BasicConsume)
		if !ok || !poison(idx) {
			return false, nil
		}
		if err := c.Send(ctx, cmd.Channel, &amqp.BasicConsumeOk{ConsumerTag: m.ConsumerTag}); err != nil {
			return true, err
		}
		return true, c.WriteRaw(ctx, badFrameEnd)
	}
}

func TestRecoveryAfterProtocolError(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, poisonAfterConsume(func(idx int) bool { return idx == 0 }))
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"})
	require.NoError(t, err)

	started := events.wait(t, amqp.RecoveryStarted)
	require.ErrorIs(t, started.Err, amqp.ErrMalformedFrame, "the event names the cause")
	require.ErrorContains(t, started.Err, "sent connection.close 502")
	events.wait(t, amqp.RecoverySucceeded)
	require.True(t, conn.IsAlive())

	second := b.conn(t, 1)
	require.NoError(t, second.Deliver(ctx, 1, "c", 1, amqp.Properties{}, []byte("after")))
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "after", string(d.Body), "the same consumer goes on after the recovery")
}

func TestRecoveryGivesUpOnARepeatedProtocolError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		repeats int
		losses  int // connections the protocol error ends before the connection does
	}{
		{"default", 0, 1 + amqp.DefaultProtocolErrorRepeats},
		{"one", 1, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newRecordingBroker(t, amqptest.Options{}, poisonAfterConsume(func(int) bool { return true }))
			ctx := t.Context()
			conn, err := amqp.DialConfig(ctx, recoveringConfig(b, amqp.RecoveryConfig{ProtocolErrorRepeats: tc.repeats}))
			require.NoError(t, err)
			events := watchRecovery(conn)
			ch, err := conn.Channel(ctx)
			require.NoError(t, err)
			_, err = ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"})
			require.NoError(t, err)

			failed := events.wait(t, amqp.RecoveryFailed)
			require.ErrorIs(t, failed.Err, amqp.ErrMalformedFrame)
			require.ErrorContains(t, failed.Err, "same protocol error")
			select {
			case <-conn.Done():
			case <-ctx.Done():
				t.Fatal("the connection did not end")
			}
			require.ErrorIs(t, conn.Err(), amqp.ErrMalformedFrame, "the connection ends with the error itself")
			require.Equal(t, tc.losses, b.senderCount(), "connections dialled")
		})
	}
}

// A protocol error that does not repeat at once, or another loss between
// two of them, does not count towards the limit.
func TestRecoveryProtocolErrorStreakResets(t *testing.T) {
	// Connections 0 and 1 poison, 2 is dropped by hand, 3 and 4 poison, 5 is healthy.
	b := newRecordingBroker(t, amqptest.Options{}, poisonAfterConsume(func(idx int) bool { return idx != 2 && idx < 5 }))
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{ProtocolErrorRepeats: 2})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c"})
	require.NoError(t, err)

	// Connection 2 is healthy: drop it by hand once it is restored.
	third := b.conn(t, 2)
	for b.senderCount() < 3 || len(b.methodsOf(2)) < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("no third connection")
		case <-time.After(time.Millisecond):
		}
	}
	third.Drop()
	// Connections 3 and 4 poison again; the streak started afresh, so the
	// limit of 2 repeats is not reached (3 would be), and 5 is healthy.
	for b.senderCount() < 6 {
		select {
		case <-ctx.Done():
			t.Fatalf("recovery stopped early: %v", events)
		case <-time.After(time.Millisecond):
		}
	}
	sixth := b.conn(t, 5)
	for len(b.methodsOf(5)) < 2 {
		select {
		case <-ctx.Done():
			t.Fatal("the sixth connection was not restored")
		case <-time.After(time.Millisecond):
		}
	}
	require.NoError(t, sixth.Deliver(ctx, 1, "c", 1, amqp.Properties{}, []byte("at last")))
	d, err := cons.Next(ctx)
	require.NoError(t, err)
	require.Equal(t, "at last", string(d.Body))
	// The delivery can come while the restore still finishes.
	require.Eventually(t, conn.IsAlive, waitBudget(t), time.Millisecond)
	require.Zero(t, events.count(amqp.RecoveryFailed), "%v", events)
}

// A node that accepts the TCP connection and then says nothing, as one
// behind a partition can, holds a reconnection attempt back by
// AttemptTimeout, not by ConnectionTimeout.
func TestRecoveryAttemptTimeoutBoundsASilentNode(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, nil)
	ctx := t.Context()
	cfg := recoveringConfig(b, amqp.RecoveryConfig{AttemptTimeout: 2 * time.Second})
	cfg.ConnectionTimeout = time.Hour // a test deadline away: only AttemptTimeout can end the silent try
	cfg.Addrs = []string{"good:5672", "silent:5672"}
	silent := make(chan net.Conn, 8)
	t.Cleanup(func() {
		close(silent)
		for c := range silent {
			c.Close()
		}
	})
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == "silent:5672" {
			client, server := net.Pipe()
			silent <- server // never read or written: the handshake hangs
			return client, nil
		}
		return b.srv.Dial(ctx, network, addr)
	}
	conn, err := amqp.DialConfig(ctx, cfg)
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)

	b.conn(t, 0).Drop() // recovery tries the next address first: the silent one
	ok := events.wait(t, amqp.RecoverySucceeded)
	require.Equal(t, "good:5672", ok.Addr)
	require.Equal(t, 1, ok.Attempt, "the silent node did not cost the attempt")
	require.Len(t, silent, 1, "the silent node was tried first")
}

// A call in flight when the client closes the connection over a protocol
// error fails with an error that Recoverable calls temporary: the
// connection is being recovered, and the same call succeeds on it.
func TestCallLostToAProtocolErrorIsRecoverable(t *testing.T) {
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if _, ok := cmd.Method.(*amqp.QueueDeclare); ok && idx == 0 {
			return true, c.WriteRaw(ctx, badFrameEnd) // instead of declare-ok
		}
		return false, nil
	})
	ctx := t.Context()
	conn, events := dialRecovering(t, b, amqp.RecoveryConfig{})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "q"})
	require.ErrorIs(t, err, amqp.ErrClosed)
	require.ErrorIs(t, err, amqp.ErrMalformedFrame)
	require.True(t, amqp.Recoverable(err), "%v", err)
	events.wait(t, amqp.RecoverySucceeded)
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "q"})
	require.NoError(t, err, "the retry succeeds on the recovered connection")
}
