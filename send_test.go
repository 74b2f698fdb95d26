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

func TestUnexpectedReplyIsConnectionError(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	errc := make(chan error, 1)
	go func() {
		_, err := ch.QueueDeclare(t.Context(), amqp.QueueDeclare{Queue: "x"})
		errc <- err
	}()
	id, _ := amqptest.Expect[*amqp.QueueDeclare](t, sc)
	require.NoError(t, sc.Send(t.Context(), id, &amqp.ExchangeDeclareOk{}))
	err := <-errc
	require.ErrorIs(t, err, amqp.ErrUnexpectedFrame)
	_, cl := amqptest.Expect[*amqp.ConnectionClose](t, sc)
	require.Equal(t, amqp.CodeUnexpectedFrame, cl.ReplyCode, "the client tells the server why it closes")
	<-conn.Done()
}

func TestFieldErrorsSendNothing(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	ch := openFakeChannel(t, conn, sc)
	_, err := ch.Publish(t.Context(), amqp.Publishing{RoutingKey: strings.Repeat("k", 300)})
	require.ErrorIs(t, err, amqp.ErrShortstrTooLong)
	_, err = ch.Publish(t.Context(), amqp.Publishing{Properties: amqp.Properties{Headers: amqp.Table{"x": make(chan int)}}})
	require.ErrorIs(t, err, amqp.ErrUnsupportedType)
	big := amqp.Table{"big": strings.Repeat("v", 200000)}
	_, err = ch.Publish(t.Context(), amqp.Publishing{Properties: amqp.Properties{Headers: big}})
	require.ErrorIs(t, err, amqp.ErrFrameTooLarge, "a header frame over frame_max")
	_, err = ch.Publish(t.Context(), amqp.Publishing{RoutingKey: "ok", Body: []byte("fine")})
	require.NoError(t, err)
	p := amqptest.ExpectPublish(t, sc)
	require.Equal(t, "ok", p.Method.RoutingKey, "only the good publish reached the wire")
	require.NoError(t, conn.Err())
}

// Bug: a synchronous call writes its own request in flushDirect; on a stalled
// socket it blocks in Write and its ctx is not honoured. Connection.Close too.
func TestCallAndCloseHonourCtxOnAStalledSocket(t *testing.T) {
	conn, sc, sconn := stallDial(t, amqptest.Options{})
	ch := openFakeChannel(t, conn, sc)
	sconn.mu.Lock()
	sconn.stalled = true
	sconn.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "x"})
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("declare returned %v", err)
	case <-time.After(2 * time.Second):
		t.Error("QueueDeclare with a 200ms ctx still blocked after 2s (in flushDirect's Write)")
	}
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		closed <- conn.Close(ctx)
	}()
	select {
	case err := <-closed:
		t.Logf("Close returned %v", err)
	case <-time.After(2 * time.Second):
		t.Error("Close with a 200ms ctx still blocked after 2s")
	}
	sconn.Close()
}
