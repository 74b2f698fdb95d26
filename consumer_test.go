package amqp_test

import (
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// A connection the server closes is an end from elsewhere: a range over
// Deliveries yields it, although it matches ErrClosed like the
// application's own Close.
func TestDeliveriesYieldTheServersConnectionClose(t *testing.T) {
	cons, sc, _ := fakeConsumer(t, amqp.ConsumerOptions{})
	require.NoError(t, sc.CloseConnection(t.Context(), amqp.CodeConnectionForced, "CONNECTION_FORCED - broker shutdown", nil))
	var errs []error
	for _, err := range cons.Deliveries(t.Context()) {
		errs = append(errs, err)
	}
	require.Len(t, errs, 1)
	require.ErrorIs(t, errs[0], amqp.ErrClosed)
	require.ErrorIs(t, errs[0], amqp.ErrConnectionForced)
	require.False(t, amqp.EndedByApplication(errs[0]))
}
