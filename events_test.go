package amqp_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestCloseFromAListenerDoesNotDeadlock(t *testing.T) {
	srv := amqptest.NewServer(t, amqptest.Options{})
	conn, err := amqp.DialConfig(t.Context(), amqp.Config{Dial: srv.Dial})
	require.NoError(t, err)
	sc, err := srv.Accept(t.Context())
	require.NoError(t, err)
	go func() {
		amqptest.Expect[*amqp.ConnectionClose](t, sc)
		_ = sc.Send(context.Background(), 0, &amqp.ConnectionCloseOk{})
		sc.Drop()
	}()
	res := make(chan error, 1)
	conn.OnBlocked(func(amqp.Blocking) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		res <- conn.Close(ctx)
	})
	require.NoError(t, sc.Send(t.Context(), 0, &amqp.ConnectionBlocked{Reason: "x"}))
	require.NoError(t, <-res, "Close from a listener waits for the listener's own goroutine")
}
