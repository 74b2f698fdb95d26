package brokertest_test

import (
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/brokertest"
	"github.com/stretchr/testify/require"
)

// TestCluster forms a two-node cluster and checks that it is one: a queue
// declared through one node is seen through the other, and a message
// published through the second node reaches the queue on the first.
func TestCluster(t *testing.T) {
	checkLeaks(t)
	c := brokertest.StartCluster(t, brokertest.ClusterOptions{Size: 2})
	first, second := c.Node(0), c.Node(1)
	require.NotEqual(t, first.Addr(), second.Addr())

	running, err := c.RunningNodes()
	require.NoError(t, err)
	require.ElementsMatch(t, []string{first.Name(), second.Name()}, running)

	ctx := ctxFor(t, 30*time.Second)
	conn1 := dial(t, amqp.Config{Addrs: []string{first.Addr()}})
	conn2 := dial(t, amqp.Config{Addrs: []string{second.Addr()}})
	ch1, ch2 := openChannel(t, conn1), openChannel(t, conn2)

	q, err := ch1.QueueDeclare(ctx, amqp.QueueDeclare{Queue: uniqueName(t), AutoDelete: true})
	require.NoError(t, err)
	_, err = ch2.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q.Queue, Passive: true})
	require.NoError(t, err, "the queue declared on the first node is seen through the second")

	require.NoError(t, ch2.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	conf, err := ch2.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Mandatory: true, Body: []byte("across")})
	require.NoError(t, err)
	require.NoError(t, conf.Wait(ctx), "routed through the second node to the queue on the first")
	d, err := ch1.Get(ctx, amqp.BasicGet{Queue: q.Queue, NoAck: true})
	require.NoError(t, err)
	require.Equal(t, "across", string(d.Body))

	// The URL names both nodes; a client reaches the first that answers.
	conn, err := amqp.Dial(ctx, c.URL())
	require.NoError(t, err)
	require.Equal(t, first.Addr(), conn.Addr())
	require.NoError(t, conn.Close(ctx))
}
