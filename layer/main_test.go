package layer_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/layer"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestMain fails the run if a goroutine outlives the tests: a layer's
// connection and everything Receive starts must end with Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Integration tests talk to the broker at AMQP_URL (default: the local
// RabbitMQ). When none answers they fail under CI=true and skip elsewhere.
func brokerURL() string {
	if u := os.Getenv("AMQP_URL"); u != "" {
		return u
	}
	return "amqp://guest:guest@127.0.0.1:5672/%2F"
}

var brokerCheck = sync.OnceValue(func() error {
	u, err := url.Parse(strings.Split(brokerURL(), ",")[0])
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

// ctxFor returns a context that ends after d or when the test ends.
func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// namespace returns a namespace no other test or run uses, so that tests
// never see each other's channels and groups.
func namespace(t testing.TB) string {
	name := strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())
	if len(name) > 18 {
		name = name[len(name)-18:]
	}
	return fmt.Sprintf("t%d-%s", time.Now().UnixNano()%1e9, strings.Trim(name, "-."))
}

// newLayer connects a layer to the test broker (cfg.URL defaults to it) and
// closes it when the test ends.
func newLayer(t testing.TB, cfg layer.Config) *layer.Layer {
	t.Helper()
	if cfg.URL == "" {
		needBroker(t)
		cfg.URL = brokerURL()
	}
	l, err := layer.New(ctxFor(t, 30*time.Second), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, l.Close(ctx))
	})
	return l
}

// rawChannel opens a plain client channel on the broker at url (the test
// broker when empty), to look at and tamper with what layers make there.
func rawChannel(t testing.TB, url string) *amqp.Channel {
	t.Helper()
	if url == "" {
		needBroker(t)
		url = brokerURL()
	}
	ctx := ctxFor(t, 30*time.Second)
	conn, err := amqp.Dial(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(t, conn.Close(ctx))
	})
	ch, err := conn.Channel(ctx)
	require.NoError(t, err)
	return ch
}

// exchangeExists and queueExists declare passively: 404 means no. (The 404
// closes the channel; the client reopens it.)
func exchangeExists(t testing.TB, ch *amqp.Channel, name string) bool {
	t.Helper()
	err := ch.ExchangeDeclare(ctxFor(t, 10*time.Second), amqp.ExchangeDeclare{Exchange: name, Passive: true})
	if errors.Is(err, amqp.ErrNotFound) {
		return false
	}
	require.NoError(t, err)
	return true
}

func queueExists(t testing.TB, ch *amqp.Channel, name string) bool {
	t.Helper()
	_, err := ch.QueueDeclare(ctxFor(t, 10*time.Second), amqp.QueueDeclare{Queue: name, Passive: true})
	if errors.Is(err, amqp.ErrNotFound) {
		return false
	}
	require.NoError(t, err)
	return true
}

// groupExchange and memberName are the broker names the layer gives a group
// and a membership (its exchange and its queue) in namespace ns.
func groupExchange(ns, group string) string { return ns + ":group:" + group }

func memberName(ns, group, channel string) string { return ns + ":member:" + group + ":" + channel }
