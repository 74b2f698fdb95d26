package amqp_test

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestChannelNumbersAreReused(t *testing.T) {
	conn := dialBroker(t)
	ch1 := openChannel(t, conn)
	id := ch1.ID()
	require.NoError(t, ch1.Close(testCtx(t)))
	require.NoError(t, ch1.Close(testCtx(t)), "idempotent")
	seen := map[uint16]bool{}
	for range int(conn.ChannelMax()) + 1 {
		ch := openChannel(t, conn)
		seen[ch.ID()] = true
		require.NoError(t, ch.Close(testCtx(t)))
		if seen[id] {
			return
		}
	}
	t.Fatalf("channel number %d was never reused", id)
}
