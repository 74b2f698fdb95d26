package amqp_test

import (
	"context"
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

// testCtx is a context bounded well inside the suite's time budget.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
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

// reservedClosedPort returns a loopback address where nothing listens.
func reservedClosedPort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}
