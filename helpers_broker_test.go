package amqp_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// Helpers for the tests that need a real broker (the *_broker_test.go files).
// Integration tests talk to the broker at AMQP_URL (default: the local
// RabbitMQ). When none answers they fail under CI=true and skip elsewhere.

func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/"
}

var brokerCheck = sync.OnceValue(func() error {
	u, err := url.Parse(brokerURL())
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5672")
	}
	conn, err := net.DialTimeout("tcp", host, 3*time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
})

// needBroker skips (or under CI fails) a test when no broker answers.
func needBroker(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: -short")
	}
	if err := brokerCheck(); err != nil {
		msg := fmt.Sprintf("no RabbitMQ broker at %s (%v): start one with scripts/ensure-rabbitmq.sh or set AMQP_URL", brokerURL(), err)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
}

// dialBroker connects to the test broker and closes the connection when the test ends.
func dialBroker(t testing.TB) *amqp.Connection {
	t.Helper()
	needBroker(t)
	return dialURL(t, brokerURL())
}

func dialURL(t testing.TB, u string) *amqp.Connection {
	t.Helper()
	ctx := testCtx(t)
	conn, err := amqp.Dial(ctx, u)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, conn.Close(ctx))
	})
	return conn
}

func openChannel(t testing.TB, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel(testCtx(t))
	require.NoError(t, err)
	return ch
}

// tempQueue declares a server-named exclusive queue, deleted with its connection.
func tempQueue(t testing.TB, ch *amqp.Channel, args amqp.Table) string {
	t.Helper()
	ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Exclusive: true, Arguments: args})
	require.NoError(t, err)
	return ok.Queue
}

// uniqueName returns a name unlikely to clash with another test or run.
func uniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d", prefix, time.Now().UnixNano())
}

// publishN publishes n messages with bodies "0".."n-1" and waits for their
// confirmations, so they are in the queue when it returns.
func publishN(t *testing.T, ch *amqp.Channel, q string, n int) {
	t.Helper()
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	for i := range n {
		conf, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte(fmt.Sprint(i))})
		require.NoError(t, err)
		require.NoError(t, conf.Wait(testCtx(t)))
	}
}

// readyEventually waits until queue q has want ready messages.
func readyEventually(t *testing.T, ch *amqp.Channel, q string, want uint32) {
	t.Helper()
	var got uint32
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if got = readyCount(t, ch, q); got == want {
			return
		}
	}
	t.Fatalf("ready messages in %s: want %d, still %d after 5 s", q, want, got)
}

// countWithin counts the deliveries c yields within d (a bounded wait for
// deliveries that must not come).
func countWithin(c *amqp.Consumer, d time.Duration) int {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	n := 0
	for {
		if _, err := c.Next(ctx); err != nil {
			return n
		}
		n++
	}
}

// getN fetches n messages with manual acknowledgement.
func getN(t *testing.T, ch *amqp.Channel, q string, n int) []*amqp.Delivery {
	t.Helper()
	var ds []*amqp.Delivery
	for range n {
		d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
		require.NoError(t, err)
		ds = append(ds, d)
	}
	return ds
}

// confirmRouted publishes msg as mandatory on a channel in confirm mode and
// reports whether the server routed it (acked) rather than returning it.
// Once it returns, a routed message is in its queues.
func confirmRouted(t *testing.T, ch *amqp.Channel, msg amqp.Publishing) bool {
	t.Helper()
	msg.Mandatory = true
	conf, err := ch.Publish(testCtx(t), msg)
	require.NoError(t, err)
	require.True(t, conf.Requested(), "the channel must be in confirm mode")
	err = conf.Wait(testCtx(t))
	if errors.Is(err, amqp.ErrReturned) {
		return false
	}
	require.NoError(t, err)
	return true
}

// readyCount returns how many messages of queue q are ready (passive declare).
func readyCount(t *testing.T, ch *amqp.Channel, q string) uint32 {
	t.Helper()
	ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	require.NoError(t, err)
	return ok.MessageCount
}

// tempExchange declares an auto-delete exchange with a unique name and
// deletes it when the test ends.
func tempExchange(t *testing.T, ch *amqp.Channel, kind string) string {
	t.Helper()
	name := uniqueName("x-" + kind)
	require.NoError(t, ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: name, Type: kind, AutoDelete: true}))
	t.Cleanup(func() { _ = ch.ExchangeDelete(context.Background(), amqp.ExchangeDelete{Exchange: name}) })
	return name
}

// getEventually polls basic.get until a message arrives (publishes are asynchronous).
func getEventually(t *testing.T, ch *amqp.Channel, q string) *amqp.Delivery {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q, NoAck: true})
		if errors.Is(err, amqp.ErrEmpty) {
			continue
		}
		require.NoError(t, err)
		return d
	}
	t.Fatalf("no message in %s", q)
	return nil
}
