package brokertest_test

import (
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
	"github.com/stretchr/testify/require"
)

// TestRawSessionOverTLS opens an amqpraw session over TLS, with the
// handshake done, against the node's TLS listener.
func TestRawSessionOverTLS(t *testing.T) {
	checkLeaks(t)
	node := shared.Get(t)
	ctx := ctxFor(t, 30*time.Second)
	s, err := amqpraw.Dial(ctx, node.TLSAddr(), amqpraw.Options{TLS: node.ClientTLSConfig()})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Handshake(ctx, amqpraw.Handshake{}))
	require.NoError(t, s.OpenChannel(ctx, 1))
	_, err = amqpraw.Call[*amqp.ChannelCloseOk](ctx, s, 1, &amqp.ChannelClose{ReplyCode: amqp.CodeSuccess})
	require.NoError(t, err)
}
