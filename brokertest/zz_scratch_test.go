package brokertest_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/brokertest"
	"github.com/stretchr/testify/require"
)

func TestScratchQuorum(t *testing.T) {
	c := brokertest.StartCluster(t, brokertest.ClusterOptions{Size: 3})
	ctx := ctxFor(t, 3*time.Minute)
	q := uniqueName(t)
	conn0 := dial(t, amqp.Config{Addrs: []string{c.Node(0).Addr()}})
	ch0 := openChannel(t, conn0)
	_, err := ch0.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Durable: true, Arguments: amqp.Table{"x-queue-type": "quorum"}})
	require.NoError(t, err)
	require.NoError(t, ch0.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	for i := 0; i < 10; i++ {
		conf, err := ch0.Publish(ctx, amqp.Publishing{RoutingKey: q, Body: []byte("x")})
		require.NoError(t, err)
		require.NoError(t, conf.Wait(ctx))
	}
	out, err := c.Node(1).Ctl("eval", "rabbit_quorum_queue:status(<<\"/\">>, <<\""+q+"\">>).")
	t.Logf("status before: %s %v", out, err)
	require.NoError(t, c.Node(0).Kill())
	conn1 := dial(t, amqp.Config{Addrs: []string{c.Node(1).Addr()}})
	ch1 := openChannel(t, conn1)
	require.NoError(t, ch1.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	for i := 0; i < 4; i++ {
		conf, err := ch1.Publish(ctx, amqp.Publishing{RoutingKey: q, Body: []byte("y")})
		require.NoError(t, err)
		t.Logf("%v publish %d: %v", time.Now().Format("15:04:05.000"), i, conf.Wait(ctx))
		time.Sleep(500 * time.Millisecond)
	}
	for i := 0; i < 3; i++ {
		chN := openChannel(t, conn1)
		require.NoError(t, chN.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
		conf, err := chN.Publish(ctx, amqp.Publishing{RoutingKey: q, Body: []byte("z")})
		require.NoError(t, err)
		t.Logf("%v new channel publish %d: %v", time.Now().Format("15:04:05.000"), i, conf.Wait(ctx))
		conf, err = ch1.Publish(ctx, amqp.Publishing{RoutingKey: q, Body: []byte("z")})
		require.NoError(t, err)
		t.Logf("%v old channel publish %d: %v", time.Now().Format("15:04:05.000"), i, conf.Wait(ctx))
		conn2 := dial(t, amqp.Config{Addrs: []string{c.Node(2).Addr()}})
		ch2 := openChannel(t, conn2)
		require.NoError(t, ch2.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
		conf, err = ch2.Publish(ctx, amqp.Publishing{RoutingKey: q, Body: []byte("z")})
		require.NoError(t, err)
		t.Logf("%v node 2 publish %d: %v", time.Now().Format("15:04:05.000"), i, conf.Wait(ctx))
	}
	out, err = c.Node(1).Ctl("eval", "rabbit_quorum_queue:status(<<\"/\">>, <<\""+q+"\">>).")
	t.Logf("status after: %s %v", out, err)
	r, err := ch1.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Passive: true})
	t.Logf("passive: %+v %v", r, err)
	out, err = c.Node(1).Ctl("eval", "rabbit_amqqueue:lookup(rabbit_misc:r(<<\"/\">>, queue, <<\""+q+"\">>)).")
	t.Logf("record: %s %v", out, err)
	for _, n := range c.Nodes()[1:] {
		data, _ := os.ReadFile(n.LogFile())
		lines := strings.Split(string(data), "\n")
		for _, l := range lines {
			if strings.Contains(l, "07:") && !strings.Contains(l, "boot step") {
				t.Log(n.Name(), l)
			}
		}
	}
}
