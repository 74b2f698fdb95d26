package layer_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqp-go/amqp/brokertest"
	"github.com/amqp-go/amqp/layer"
	"github.com/stretchr/testify/require"
)

// TestCluster runs layers on a two-node RabbitMQ cluster of its own: layer
// A connects to the first node and layer B to the second, and whatever one
// sends the other receives. Without rabbitmq-server installed the test
// skips (it fails under CI=true). The nodes listen for AMQP on ports 5673
// and 5674, as the issue this test resolves describes, or on free ports
// brokertest picks if something already listens there.
func TestCluster(t *testing.T) {
	ports := []int{5673, 5674}
	for i, p := range ports {
		if err := checkPortFree(p); err != nil {
			t.Logf("AMQP port %d is taken (%v): node %d gets a free port instead", p, err, i+1)
			ports[i] = 0
		}
	}
	c := brokertest.StartCluster(t, brokertest.ClusterOptions{
		Size:  2,
		Node:  brokertest.NodeOptions{Name: "layer-cluster"},
		Ports: ports,
	})
	node1, node2 := c.Node(0), c.Node(1)
	t.Logf("cluster nodes listen for AMQP on %s and %s", node1.Addr(), node2.Addr())
	ctx := ctxFor(t, 60*time.Second)
	ns := namespace(t)
	// "/%2F" is the default vhost, percent-encoded as in asgi_rabbitmq's URLs.
	url1 := "amqp://guest:guest@" + node1.Addr() + "/%2F?heartbeat=10&connection_name=" + ns + "-A"
	url2 := "amqp://guest:guest@" + node2.Addr() + "/%2F?heartbeat=10"
	cfg := func(url string) layer.Config {
		return layer.Config{URL: url, Namespace: ns, Capacity: 10, GroupExpiry: time.Minute}
	}
	a := newLayer(t, cfg(url1))
	b := newLayer(t, cfg(url2))

	t.Run("SendOnOneNodeReceiveOnTheOther", func(t *testing.T) {
		require.NoError(t, a.Send(ctx, "http.request", layer.Message{"path": "/one"}))
		ch, m, err := b.Receive(ctx, "http.request")
		require.NoError(t, err)
		require.Equal(t, "http.request", ch)
		require.Equal(t, "/one", m["path"])

		// The reader waits on node 2 before the message is sent on node 1.
		reply, err := b.NewChannel(ctx, "http.response")
		require.NoError(t, err)
		got := make(chan layer.Message, 1)
		go func() {
			_, m, err := b.Receive(ctx, reply)
			if err != nil {
				t.Error(err)
			}
			got <- m
		}()
		time.Sleep(200 * time.Millisecond)
		require.NoError(t, a.Send(ctx, reply, layer.Message{"status": 200}))
		require.Equal(t, int64(200), (<-got)["status"])

		// And the other way.
		require.NoError(t, b.Send(ctx, "back", layer.Message{"n": 2}))
		_, m, ok, err := a.TryReceive(ctx, "back")
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, int64(2), m["n"])
	})

	t.Run("GroupsAcrossNodes", func(t *testing.T) {
		x, err := a.NewChannel(ctx, "ws")
		require.NoError(t, err)
		y, err := b.NewChannel(ctx, "ws")
		require.NoError(t, err)
		require.NoError(t, a.GroupAdd(ctx, "room", x))
		require.NoError(t, b.GroupAdd(ctx, "room", y))
		for _, from := range []*layer.Layer{a, b} {
			require.NoError(t, from.SendGroup(ctx, "room", layer.Message{"text": "hi"}))
			_, m, err := a.Receive(ctx, x)
			require.NoError(t, err)
			require.Equal(t, "hi", m["text"])
			_, m, err = b.Receive(ctx, y)
			require.NoError(t, err)
			require.Equal(t, "hi", m["text"])
		}
		require.NoError(t, b.GroupDiscard(ctx, "room", x), "a membership made on node 1, discarded on node 2")
		require.NoError(t, a.SendGroup(ctx, "room", layer.Message{"text": "after"}))
		_, m, err := b.Receive(ctx, y)
		require.NoError(t, err)
		require.Equal(t, "after", m["text"])
		_, _, ok, err := a.TryReceive(ctx, x)
		require.NoError(t, err)
		require.False(t, ok)
		require.NoError(t, b.GroupDiscard(ctx, "room", y))
	})

	// Group expiry is kept by the broker: added through node 1, it lapses
	// for a sender on node 2.
	t.Run("GroupExpiryAcrossNodes", func(t *testing.T) {
		short := func(url string) layer.Config {
			return layer.Config{URL: url, Namespace: ns + "-x", GroupExpiry: time.Second}
		}
		a, b := newLayer(t, short(url1)), newLayer(t, short(url2))
		require.NoError(t, a.GroupAdd(ctx, "lapsing", "member"))
		added := time.Now()
		require.NoError(t, b.SendGroup(ctx, "lapsing", layer.Message{"n": 1}))
		_, m, err := a.Receive(ctx, "member")
		require.NoError(t, err)
		require.Equal(t, int64(1), m["n"])
		time.Sleep(time.Until(added.Add(1500 * time.Millisecond)))
		require.NoError(t, b.SendGroup(ctx, "lapsing", layer.Message{"n": 2}))
		rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, _, err = a.Receive(rctx, "member")
		require.ErrorIs(t, err, context.DeadlineExceeded, "no longer a member")
		// Seen from node 2, the membership made on node 1 is gone
		// entirely: queue, exchange, and the group's exchange with it.
		raw := rawChannel(t, url2)
		name := memberName(ns+"-x", "lapsing", "member")
		require.False(t, queueExists(t, raw, name))
		require.False(t, exchangeExists(t, raw, name))
		require.False(t, exchangeExists(t, raw, groupExchange(ns+"-x", "lapsing")))
	})

	// Capacity is the queue's, enforced by the broker for senders on both nodes.
	t.Run("ChannelFullAcrossNodes", func(t *testing.T) {
		var ok, full atomic.Int64
		var wg sync.WaitGroup
		for s := range 6 {
			wg.Go(func() {
				for range 10 {
					err := []*layer.Layer{a, b}[s%2].Send(ctx, "busy", layer.Message{"s": s})
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, layer.ErrChannelFull):
						full.Add(1)
					default:
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		require.Equal(t, int64(10), ok.Load())
		require.Equal(t, int64(50), full.Load())
	})

	// A layer whose connection is closed by the broker connects again on
	// its next call.
	t.Run("Reconnect", func(t *testing.T) {
		require.NoError(t, node1.CloseConnection(ns+"-A", "test"))
		var failures int
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := a.Send(ctx, "after-reconnect", layer.Message{"n": 3})
			if err == nil {
				break
			}
			failures++
			t.Logf("send after the forced close: %v", err)
			require.True(t, time.Now().Before(deadline), "no reconnection")
			time.Sleep(50 * time.Millisecond)
		}
		require.LessOrEqual(t, failures, 1, "at most the call racing with the close fails")
		_, m, err := b.Receive(ctx, "after-reconnect")
		require.NoError(t, err)
		require.Equal(t, int64(3), m["n"])
	})

	// channels_rabbitmq mode, as channels_rabbitmq does on reconnecting:
	// the same queue (so the channels handed out stay valid) and every
	// group binding again.
	t.Run("ChannelsRabbitMQReconnects", func(t *testing.T) {
		cr := newLayer(t, layer.Config{Mode: layer.ChannelsRabbitMQ,
			URL: "amqp://guest:guest@" + node1.Addr() + "/%2F?connection_name=" + ns + "-CR"})
		other := newLayer(t, layer.Config{Mode: layer.ChannelsRabbitMQ, URL: url2})
		inbox, err := cr.NewChannel(ctx, "")
		require.NoError(t, err)
		require.NoError(t, cr.GroupAdd(ctx, "room", inbox))
		require.NoError(t, other.SendGroup(ctx, "room", layer.Message{"n": 1}))
		_, m, err := cr.Receive(ctx, inbox)
		require.NoError(t, err)
		require.Equal(t, int64(1), m["n"])

		require.NoError(t, node1.CloseConnection(ns+"-CR", "test"))
		// Messages sent while the layer is away are lost with its queue, as
		// in Python: send until one arrives.
		ok := eventually(ctx, 100*time.Millisecond, func() bool {
			if err := other.SendGroup(ctx, "room", layer.Message{"n": 2}); err != nil {
				return false
			}
			_, m, err := receiveWithin(t, cr, 300*time.Millisecond, inbox)
			return err == nil && m["n"] == int64(2)
		})
		require.True(t, ok, "the group binding is back after the reconnect")
		require.NoError(t, other.Send(ctx, inbox, layer.Message{"n": 3}))
		_, m, err = cr.Receive(ctx, inbox)
		require.NoError(t, err)
		require.Equal(t, int64(3), m["n"], "the channel name handed out before still reaches the layer")
	})

	// A layer given both nodes fails over to the second when the first dies.
	t.Run("Failover", func(t *testing.T) {
		both := "amqp://guest:guest@" + node1.Addr() + "," + node2.Addr() + "/%2F"
		f := newLayer(t, cfg(both))
		require.NoError(t, f.Send(ctx, "before-kill", layer.Message{}), "connected to node 1")
		require.NoError(t, node1.Kill())
		start := time.Now()
		var failures int
		for {
			err := f.Send(ctx, "after-kill", layer.Message{"n": 4})
			if err == nil {
				break
			}
			failures++
			t.Logf("send after the kill: %v", err)
			require.Less(t, time.Since(start), 20*time.Second, "no failover")
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("sent through node 2 %v after node 1 was killed (%d failed attempts)", time.Since(start), failures)
		_, m, err := b.Receive(ctx, "after-kill")
		require.NoError(t, err)
		require.Equal(t, int64(4), m["n"])
	})
}

// checkPortFree returns an error saying so if something listens on TCP port p,
// on 127.0.0.1 or on any interface: brokertest would refuse the port.
func checkPortFree(p int) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		return errors.New("something listens on " + addr)
	}
	l, err := net.Listen("tcp", ":"+strconv.Itoa(p))
	if err != nil {
		return err
	}
	return l.Close()
}
