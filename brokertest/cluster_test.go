package brokertest_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/brokertest"
	"github.com/stretchr/testify/require"
)

// TestCluster forms a two-node cluster and checks that it is one: a queue
// declared through one node is seen through the other, and a message
// published through the second node reaches the queue on the first. The
// first node's AMQP port is free-chosen, the second's asked for.
func TestCluster(t *testing.T) {
	checkLeaks(t)
	port := unusedFixedPort(t)
	c := brokertest.StartCluster(t, brokertest.ClusterOptions{Size: 2, Ports: []int{0, port}})
	first, second := c.Node(0), c.Node(1)
	require.NotEqual(t, first.Addr(), second.Addr())
	require.Equal(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), second.Addr())

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

// TestClusterPorts checks that asked-for AMQP ports are refused, before any
// node boots, when they cannot be used.
func TestClusterPorts(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		name string
		opts brokertest.ClusterOptions
		want string
	}{
		{"TooMany", brokertest.ClusterOptions{Size: 1, Ports: []int{16001, 16002}}, "2 ports for a cluster of 1 nodes"},
		{"Twice", brokertest.ClusterOptions{Ports: []int{16001, 16001}}, "name port 16001 twice"},
		{"NodePort", brokertest.ClusterOptions{Node: brokertest.NodeOptions{Port: 16001}}, "set ClusterOptions.Ports"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := brokertest.NewCluster(tc.opts)
			require.Nil(t, c)
			require.ErrorContains(t, err, tc.want)
		})
	}

	// The rules of NodeOptions.Port, checked by Start before it boots.
	if err := brokertest.Installed(""); err != nil {
		t.Skip(err.Error())
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port
	for _, tc := range []struct {
		name string
		port int
		want string
	}{
		{"Listening", busyPort, fmt.Sprintf("AMQP port %d is not free: something already listens on 127.0.0.1:%d", busyPort, busyPort)},
		{"SystemNode", 5672, "AMQP port 5672 is reserved"},
		{"Epmd", 4369, "AMQP port 4369 is reserved"},
		{"Dist", 25672, "AMQP port 25672 is reserved"},
		{"OutOfRange", 70000, "AMQP port 70000 is not a TCP port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			c, err := brokertest.NewCluster(brokertest.ClusterOptions{Size: 1, Ports: []int{tc.port}})
			require.Nil(t, c)
			require.ErrorContains(t, err, tc.want)
			require.Less(t, time.Since(start), 5*time.Second, "refused before booting")
		})
	}
}

// unusedFixedPort returns a port that nothing listens on, below the
// kernel's ephemeral range, so that brokertest never picks it for another
// port of the node.
func unusedFixedPort(t *testing.T) int {
	t.Helper()
	base := 16000 + rand.IntN(900)
	for p := base; p < base+100; p++ {
		if c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), time.Second); err == nil {
			c.Close()
			continue
		}
		if l, err := net.Listen("tcp", ":"+strconv.Itoa(p)); err == nil {
			l.Close()
			return p
		}
	}
	t.Fatalf("no free port in %d-%d", base, base+99)
	return 0
}
