package layer_test

import (
	"testing"
	"time"

	"github.com/amqp-go/amqp/layer"
	"github.com/stretchr/testify/require"
)

// What a mode lacks fails at the call with a clear error, and sends nothing.
func TestModesRefuseAtTheCall(t *testing.T) {
	t.Parallel()
	ctx := ctxFor(t, 30*time.Second)

	asgi := newLayer(t, layer.Config{Mode: layer.AsgiRabbitMQ})
	require.Equal(t, layer.AsgiRabbitMQ, asgi.Mode())
	require.ErrorIs(t, asgi.Flush(ctx), layer.ErrUnsupported)
	_, _, err := asgi.Receive(ctx, "a!b")
	require.ErrorIs(t, err, layer.ErrInvalidName, "receive takes a ! channel by its prefix")
	require.ErrorIs(t, asgi.Send(ctx, "a?", layer.Message{}), layer.ErrInvalidName, "a ? name must not end in ?")
	_, err = asgi.NewChannel(ctx, "a!b")
	require.ErrorIs(t, err, layer.ErrInvalidName)

	channels := newLayer(t, layer.Config{Mode: layer.ChannelsRabbitMQ})
	require.ErrorIs(t, channels.Flush(ctx), layer.ErrUnsupported)
	require.ErrorIs(t, channels.Send(ctx, "http.request", layer.Message{}), layer.ErrUnsupported, "no normal channels")
	_, _, err = channels.Receive(ctx, "channels_abcdefghijkl!x")
	require.ErrorIs(t, err, layer.ErrInvalidName, "another process's channel")
	require.ErrorIs(t, channels.GroupAdd(ctx, "g", "channels_abcdefghijkl!x"), layer.ErrInvalidName, "another process's channel")
	own, err := channels.NewChannel(ctx, "")
	require.NoError(t, err)
	require.Error(t, channels.Send(ctx, own, layer.Message{"__asgi_channel__": "x"}), "a reserved key")
	_, _, ok, err := channels.TryReceive(ctx, own)
	require.NoError(t, err)
	require.False(t, ok, "nothing was sent")
}
