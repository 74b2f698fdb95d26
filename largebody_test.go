package amqp_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

// tcpFakeConn is fakeConn over loopback TCP, where large bodies take the
// vectored write path (net.Pipe does not gather writes).
func tcpFakeConn(t *testing.T, opts amqptest.Options) (*amqp.Connection, *amqptest.Conn) {
	t.Helper()
	srv := amqptest.NewServer(t, opts)
	cfg, err := amqp.ParseURL(srv.URL())
	require.NoError(t, err)
	return dialFake(t, srv, cfg)
}

// Large bodies written from the caller's slice arrive whole, never
// interleaved with other messages on their channel, and the caller may
// overwrite the body as soon as Publish returns.
func TestLargeBodiesArriveWholeAndContiguous(t *testing.T) {
	conn, sc := tcpFakeConn(t, amqptest.Options{FrameMax: amqp.MinFrameSize})
	chans := []*amqp.Channel{openFakeChannel(t, conn, sc), openFakeChannel(t, conn, sc)}
	const perPublisher = 6
	sizes := []int{16, 64 << 10, 300 << 10, 1 << 20}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(sizes)*perPublisher)
	for c, ch := range chans {
		for p, size := range sizes {
			wg.Go(func() {
				body := make([]byte, size)
				for i := range perPublisher {
					fill := byte(c*64 + p*8 + i)
					for j := range body {
						body[j] = fill
					}
					key := fmt.Sprintf("%d/%d/%d", c, size, fill)
					_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: key, Body: body})
					// The body is free once Publish returns: what the
					// server reads must not see this.
					clear(body)
					errs <- err
				}
			})
		}
	}
	for range 2 * len(sizes) * perPublisher {
		pub := amqptest.ExpectPublish(t, sc)
		var c, size int
		var fill byte
		_, err := fmt.Sscanf(pub.Method.RoutingKey, "%d/%d/%d", &c, &size, &fill)
		require.NoError(t, err)
		require.Equal(t, chans[c].ID(), pub.Channel)
		require.Len(t, pub.Body, size)
		require.True(t, bytes.Equal(pub.Body, bytes.Repeat([]byte{fill}, size)), "body of %s was changed", pub.Method.RoutingKey)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// A large publish whose ctx ends while it waits behind a write the peer
// does not take still returns, and the message is sent intact from a copy
// although the caller reuses the body.
func TestLargeBodyPublishHonoursCtxWhileQueued(t *testing.T) {
	conn, sc := tcpFakeConn(t, amqptest.Options{})
	ch := openFakeChannel(t, conn, sc)
	// Far more than the socket buffers hold: the writer stays busy with it
	// until the server reads.
	first := bytes.Repeat([]byte{1}, 64<<20)
	firstDone := make(chan error, 1)
	go func() {
		_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "first", Body: first})
		firstDone <- err
	}()
	second := bytes.Repeat([]byte{2}, 1<<20)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: "second", Body: second})
	require.NoError(t, err, "the message was queued before ctx was looked at")
	clear(second)

	for _, want := range []struct {
		key  string
		fill byte
		size int
	}{{"first", 1, len(first)}, {"second", 2, len(second)}} {
		pub := amqptest.ExpectPublish(t, sc)
		if pub.Method.RoutingKey != want.key {
			// The second publish may have been queued first.
			want.key, want.fill, want.size = pub.Method.RoutingKey, 3-want.fill, len(first)+len(second)-want.size
		}
		require.Equal(t, want.key, pub.Method.RoutingKey)
		require.True(t, bytes.Equal(pub.Body, bytes.Repeat([]byte{want.fill}, want.size)), "body of %s", want.key)
	}
	require.NoError(t, <-firstDone)
}
