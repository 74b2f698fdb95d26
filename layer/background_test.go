package layer_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/amqp-go/amqp/layer"
	"github.com/stretchr/testify/require"
)

// A consumer that a mode runs for the life of its connection (asgi_rabbitmq's
// dead letters here) and that the server cancels, because its queue was
// deleted, makes the layer dial again and set it all up, rather than leave
// it deaf on a connection that stays up. Fake server: the shared broker's
// dead-letters queue is not the test's to delete.
func TestBackgroundConsumerCancelledByTheServerRedials(t *testing.T) {
	ctx := ctxFor(t, 60*time.Second)
	var mu sync.Mutex
	var subscriptions int
	srv := amqptest.NewServer(t, amqptest.Options{Handler: func(ctx context.Context, c *amqptest.Conn, cmd *amqptest.Command) error {
		if m, ok := cmd.Method.(*amqp.BasicConsume); ok && m.Queue == "dead-letters" {
			mu.Lock()
			subscriptions++
			first := subscriptions == 1
			mu.Unlock()
			if err := c.Send(ctx, cmd.Channel, &amqp.BasicConsumeOk{ConsumerTag: "dl"}); err != nil || !first {
				return err
			}
			return c.Send(ctx, cmd.Channel, &amqp.BasicCancel{ConsumerTag: "dl"}) // as when the queue is deleted
		}
		return amqptest.AutoReply(ctx, c, cmd)
	}})
	l, err := layer.New(ctx, layer.Config{URL: srv.URL(), Mode: layer.AsgiRabbitMQ})
	require.NoError(t, err)
	t.Cleanup(func() { l.Close(context.Background()) })
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return subscriptions
	}
	for count() < 2 {
		_, _, _, _ = l.TryReceive(ctx, "x") // a call: it dials when the connection is gone
		select {
		case <-ctx.Done():
			t.Fatalf("the dead letters were not consumed again (%d subscriptions)", count())
		case <-time.After(10 * time.Millisecond):
		}
	}
}
