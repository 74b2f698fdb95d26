package amqp

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

// A consumer whose reader stays one delivery behind must not grow its buffer
// with every delivery.
func TestConsumerBufferStaysBounded(t *testing.T) {
	c := &Consumer{ch: &Channel{}, limit: DefaultBufferLimit, ready: make(chan struct{}, 1), done: make(chan struct{})}
	ctx := context.Background()
	c.push(&Delivery{})
	for range 100_000 {
		c.push(&Delivery{})
		_, err := c.Next(ctx)
		require.NoError(t, err)
	}
	require.Equal(t, 1, len(c.queue)-c.head)
	require.Less(t, cap(c.queue), 64, "the buffer holds one delivery but has grown to %d slots", cap(c.queue))
}
