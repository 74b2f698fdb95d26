package amqp_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestChannelCloseCompletesWhileTheReaderIsPaused(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	consumeFake(t, ch, sc, "c", true, 2)
	require.NoError(t, sc.Deliver(t.Context(), ch.ID(), "c", 10, amqp.Properties{}, []byte("m")))
	time.Sleep(50 * time.Millisecond)
	go func() {
		id, _ := amqptest.Expect[*amqp.ChannelClose](t, sc)
		_ = sc.Send(context.Background(), id, &amqp.ChannelCloseOk{})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	require.NoError(t, ch.Close(ctx))
}

// Regression test from a review of connection recovery: it failed because of
// the bug its comment describes, which is fixed.

// BUG 4 (channel.go Channel.Close, the chRecovering branch): Close on a
// channel that is being reattached ("nothing to tell a server that has not
// seen the channel yet") ends it locally and frees its number, but the
// recovery may already have sent channel.open (and qos, basic.consume...)
// on the new link: the server keeps the channel open, with its consumers
// (holding prefetched messages unacknowledged for the life of the
// connection). The freed number is then handed out again and the next
// Channel sends channel.open on a channel the server has open, which
// RabbitMQ answers by closing the whole connection (504 CHANNEL_ERROR
// "second 'channel.open' seen").
func TestChannelCloseDuringReattachClosesTheServersChannel(t *testing.T) {
	release := make(chan struct{})
	openSeen := make(chan struct{})
	var once sync.Once
	b := newRecordingBroker(t, amqptest.Options{}, func(ctx context.Context, idx int, c *amqptest.Conn, cmd *amqptest.Command) (bool, error) {
		if _, ok := cmd.Method.(*amqp.ChannelOpen); ok && idx == 1 {
			once.Do(func() {
				close(openSeen)
				select { // a slow open-ok
				case <-release:
				case <-ctx.Done():
				}
			})
		}
		return false, nil
	})
	ctx := t.Context()
	cfg := recoveringConfig(b, amqp.RecoveryConfig{})
	cfg.ChannelMax = 1
	conn, err := amqp.DialConfig(ctx, cfg)
	require.NoError(t, err)
	closeConn(t, conn)
	events := watchRecovery(conn)
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	_, err = ch.Consume(ctx, amqp.BasicConsume{Queue: "q", ConsumerTag: "c1"})
	require.NoError(t, err)

	b.conn(t, 0).Drop()
	<-openSeen // the recovery has reopened channel 1 on the new connection
	closed := make(chan error, 1)
	go func() {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		closed <- ch.Close(cctx)
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	require.NoError(t, <-closed)
	require.True(t, eventually(5*time.Second, func() bool { return events.count(amqp.RecoverySucceeded) == 1 }), "events:\n%s", events)

	ch2, err := conn.Channel(ctx)
	require.NoError(t, err)
	require.Equal(t, uint16(1), ch2.ID())
	require.True(t, eventually(2*time.Second, func() bool {
		n := 0
		for _, m := range b.methodsOf(1) {
			if m == "1 channel.open" {
				n++
			}
		}
		return n == 2
	}))
	// The server must have been told that the first channel 1 is closed
	// before it sees channel 1 opened again.
	var opens, closes int
	for _, m := range b.methodsOf(1) {
		switch m {
		case "1 channel.open":
			opens++
			require.Equal(t, opens-1, closes, "channel.open on a channel the server still has open; server saw %v", b.methodsOf(1))
		case "1 channel.close":
			closes++
		}
	}
}
