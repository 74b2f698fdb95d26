package layer_test

import (
	"context"
	"testing"
	"time"

	"github.com/amqp-go/amqp/layer"
	"github.com/stretchr/testify/require"
)

// Cross-talk with the real channels_rabbitmq (CJWorkbench): a Go layer in
// ChannelsRabbitMQ mode and Python peers on the same vhost, each case in
// both directions. Subtest names are the matrix: case/direction.
func TestChannelsRabbitMQInterop(t *testing.T) {
	t.Parallel()
	needBroker(t)
	id := runID(t)
	py := startPeer(t, "channels_rabbitmq", map[string]any{})
	pySmall := startPeer(t, "channels_rabbitmq", map[string]any{"local_capacity": 1, "remote_capacity": 2, "expiry": 1})
	gol := newLayer(t, layer.Config{Mode: layer.ChannelsRabbitMQ})
	goExpiring := newLayer(t, layer.Config{Mode: layer.ChannelsRabbitMQ, LocalCapacity: 1, LocalExpiry: 300 * time.Millisecond})
	goSmall := newLayer(t, layer.Config{Mode: layer.ChannelsRabbitMQ, LocalCapacity: 1, Capacity: 2, Expiry: time.Second})
	ctx := ctxFor(t, 2*time.Minute)
	const wait = 10 * time.Second

	t.Run("send-receive/go-to-python", func(t *testing.T) {
		ch := py.in(t).ok(map[string]any{"op": "new_channel"})["channel"].(string)
		require.NoError(t, gol.Send(ctx, ch, goMessage("go->py")))
		got, m, e := py.in(t).receive(ch, wait)
		require.Empty(t, e)
		require.Equal(t, ch, got)
		require.Equal(t, pyMessage("go->py"), m)
	})
	t.Run("send-receive/python-to-go", func(t *testing.T) {
		ch, err := gol.NewChannel(ctx, "")
		require.NoError(t, err)
		py.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("py->go")})
		got, m, err := receiveWithin(t, gol, wait, ch)
		require.NoError(t, err)
		require.Equal(t, ch, got)
		require.Equal(t, goMessage("py->go"), m)
	})
	t.Run("new-channel/names", func(t *testing.T) {
		goCh, err := gol.NewChannel(ctx, "ignored")
		require.NoError(t, err)
		pyCh := py.in(t).ok(map[string]any{"op": "new_channel"})["channel"].(string)
		require.Regexp(t, `^channels_[a-zA-Z]{12}![a-zA-Z]{12}$`, goCh)
		require.Regexp(t, `^channels_[a-zA-Z]{12}![a-zA-Z]{12}$`, pyCh)
		// The Python side refuses to receive on a Go channel, as on any
		// other process's; the Go side refuses the same.
		_, _, e := py.in(t).receive(goCh, 0)
		require.Contains(t, e, "AssertionError")
		_, _, err = receiveWithin(t, gol, time.Second, pyCh)
		require.ErrorIs(t, err, layer.ErrInvalidName)
	})
	t.Run("normal-channel/both-refuse", func(t *testing.T) {
		r := py.in(t).do(map[string]any{"op": "send", "channel": id + ".normal", "message": pyMessage("x")})
		require.Contains(t, r["error"], "RuntimeError")
		err := gol.Send(ctx, id+".normal", goMessage("x"))
		require.ErrorIs(t, err, layer.ErrUnsupported)
	})

	g := id + ".g"
	var goCh, pyCh string
	t.Run("group-send/go-to-both", func(t *testing.T) {
		var err error
		goCh, err = gol.NewChannel(ctx, "")
		require.NoError(t, err)
		pyCh = py.in(t).ok(map[string]any{"op": "new_channel"})["channel"].(string)
		require.NoError(t, gol.GroupAdd(ctx, g, goCh))
		py.in(t).ok(map[string]any{"op": "group_add", "group": g, "channel": pyCh})
		require.NoError(t, gol.SendGroup(ctx, g, goMessage("from go to all")))
		bothReceive(t, gol, goCh, py, pyCh, "from go to all")
	})
	t.Run("group-send/python-to-both", func(t *testing.T) {
		py.in(t).ok(map[string]any{"op": "group_send", "group": g, "message": pyMessage("from python to all")})
		bothReceive(t, gol, goCh, py, pyCh, "from python to all")
		require.NoError(t, gol.GroupDiscard(ctx, g, goCh))
		py.in(t).ok(map[string]any{"op": "group_send", "group": g, "message": pyMessage("after discard")})
		_, _, e := py.in(t).receive(pyCh, wait)
		require.Empty(t, e)
		_, _, err := receiveWithin(t, gol, time.Second, goCh)
		require.ErrorIs(t, err, context.DeadlineExceeded, "Go discarded its member")
	})

	// local_capacity 1 + remote_capacity 2: the receiver holds one message
	// in memory and its queue two more; the 4th send is refused by the
	// broker (reject-publish), and the sender sees ChannelFull.
	t.Run("channel-full/go-sees-python-full", func(t *testing.T) {
		ch := pySmall.in(t).ok(map[string]any{"op": "new_channel"})["channel"].(string)
		var err error
		sent := 0
		for sent < 8 {
			if err = gol.Send(ctx, ch, goMessage("fill")); err != nil {
				break
			}
			sent++
		}
		require.ErrorIs(t, err, layer.ErrChannelFull)
		require.Equal(t, 3, sent)
		_, m, e := pySmall.in(t).receive(ch, wait)
		require.Empty(t, e)
		require.Equal(t, pyMessage("fill"), m)
		drainPeer(t, pySmall, ch) // what is left would hold the prefetch of 1 forever
	})
	t.Run("channel-full/python-sees-go-full", func(t *testing.T) {
		ch, err := goSmall.NewChannel(ctx, "")
		require.NoError(t, err)
		sent := 0
		var r map[string]any
		for sent < 8 {
			if r = py.in(t).do(map[string]any{"op": "send", "channel": ch, "message": pyMessage("fill")}); r["ok"] != true {
				break
			}
			sent++
		}
		require.Equal(t, "ChannelFull", r["error"], "%v", r)
		require.Equal(t, 3, sent)
		_, m, err := receiveWithin(t, goSmall, wait, ch)
		require.NoError(t, err)
		require.Equal(t, goMessage("fill"), m)
		drainLayer(t, goSmall, ch)
	})
	// Expiry is the queue's x-message-ttl: a message waiting in RabbitMQ
	// behind a full local buffer expires there.
	t.Run("expiry/go-to-python", func(t *testing.T) {
		ch := pySmall.in(t).ok(map[string]any{"op": "new_channel"})["channel"].(string)
		require.NoError(t, gol.Send(ctx, ch, goMessage("held")))
		require.NoError(t, gol.Send(ctx, ch, goMessage("expires")))
		time.Sleep(1500 * time.Millisecond)
		_, m, e := pySmall.in(t).receive(ch, wait)
		require.Empty(t, e)
		require.Equal(t, pyMessage("held"), m)
		_, _, e = pySmall.in(t).receive(ch, 500*time.Millisecond)
		require.Equal(t, "Timeout", e, "the second message expired in RabbitMQ")
	})
	t.Run("expiry/python-to-go", func(t *testing.T) {
		ch, err := goSmall.NewChannel(ctx, "")
		require.NoError(t, err)
		py.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("held")})
		py.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("expires")})
		time.Sleep(1500 * time.Millisecond)
		_, m, err := receiveWithin(t, goSmall, wait, ch)
		require.NoError(t, err)
		require.Equal(t, goMessage("held"), m)
		_, _, err = receiveWithin(t, goSmall, 500*time.Millisecond, ch)
		require.ErrorIs(t, err, context.DeadlineExceeded, "the second message expired in RabbitMQ")
	})

	// local_expiry: a message held in memory unread is dropped after it,
	// and the prefetch it held is free again.
	t.Run("local-expiry/python-to-go", func(t *testing.T) {
		ch, err := goExpiring.NewChannel(ctx, "")
		require.NoError(t, err)
		py.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("dropped")})
		time.Sleep(time.Second)
		py.in(t).ok(map[string]any{"op": "send", "channel": ch, "message": pyMessage("kept")})
		_, m, err := receiveWithin(t, goExpiring, wait, ch)
		require.NoError(t, err)
		require.Equal(t, goMessage("kept"), m)
	})
}

// drainPeer receives on a peer's channel until nothing is left.
func drainPeer(t *testing.T, p *peer, ch string) {
	for {
		if _, _, e := p.in(t).receive(ch, 300*time.Millisecond); e != "" {
			return
		}
	}
}

func drainLayer(t *testing.T, l *layer.Layer, ch string) {
	for {
		if _, _, err := receiveWithin(t, l, 300*time.Millisecond, ch); err != nil {
			return
		}
	}
}
