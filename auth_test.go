package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
	"github.com/stretchr/testify/require"
)

func TestUpdateSecret(t *testing.T) {
	conn, sc := fakeConn(t, amqptest.Options{}, amqp.Config{})
	errc := make(chan error, 1)
	go func() { errc <- conn.UpdateSecret(t.Context(), "new-token", "refresh") }()
	_, m := amqptest.Expect[*amqp.ConnectionUpdateSecret](t, sc)
	require.Equal(t, "new-token", m.NewSecret)
	require.Equal(t, "refresh", m.Reason)
	require.NoError(t, sc.Send(t.Context(), 0, &amqp.ConnectionUpdateSecretOk{}))
	require.NoError(t, <-errc)
}
