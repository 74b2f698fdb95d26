package brokertest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/Shopify/toxiproxy/v2"
	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/brokertest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// shared is the node most tests use: plain AMQP and AMQPS with EXTERNAL
// auth. Tests that change its state (a memory alarm) undo it before they end.
var shared = &brokertest.SharedNode{Options: brokertest.NodeOptions{Name: "brokertest-shared", TLS: true}}

func TestMain(m *testing.M) {
	// goleak checks, after every test has run and the shared node is
	// stopped, that no goroutine outlived its test.
	goleak.VerifyTestMain(suite{m}, toxiproxyStuckPipe)
}

// toxiproxyStuckPipe ignores a goroutine of toxiproxy's own that v2.12.0
// can leave behind: NoopToxic.Pipe sends a chunk to its output without
// watching for an interrupt, so when the proxy stops while a chunk is in
// flight (the faults here do that on purpose) nothing reads the output and
// the goroutine blocks for ever. It belongs to the test proxy, not to the
// client; every goroutine of the client is still checked.
var toxiproxyStuckPipe = goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe")

// suite runs the tests, then stops the shared node.
type suite struct{ m *testing.M }

func (s suite) Run() int {
	code := s.m.Run()
	if err := shared.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// checkLeaks fails t if goroutines started during it are still running once
// it and its cleanups (closing connections, stopping proxies) are done.
// Call it first in a test, before anything registers a cleanup; not in a
// parallel subtest, whose siblings' goroutines it would see.
func checkLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore, toxiproxyStuckPipe) })
}

// ctxFor returns a context that ends after d or when the test ends.
func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// uniqueName returns a name no other test or run uses, to find a
// connection on the server or name a queue.
func uniqueName(t testing.TB) string {
	return fmt.Sprintf("brokertest-%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
}

// dial connects with cfg and closes the connection when the test ends.
func dial(t testing.TB, cfg amqp.Config) *amqp.Connection {
	t.Helper()
	conn, err := amqp.DialConfig(ctxFor(t, 30*time.Second), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		// Close returns nil for a connection that already ended.
		require.NoError(t, conn.Close(ctxFor(t, 10*time.Second)))
	})
	return conn
}

func openChannel(t testing.TB, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel(ctxFor(t, 10*time.Second))
	require.NoError(t, err)
	return ch
}

// roundTrip declares a server-named queue, publishes body to it with a
// publisher confirmation and gets it back: proof that the connection works.
func roundTrip(t testing.TB, conn *amqp.Connection, body string) {
	t.Helper()
	ctx := ctxFor(t, 10*time.Second)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}))
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true, AutoDelete: true})
	require.NoError(t, err)
	conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte(body)})
	require.NoError(t, err)
	require.NoError(t, conf.Wait(ctx), "publisher confirmation")
	d, err := ch.Get(ctx, amqp.BasicGet{Queue: q.Queue, NoAck: true})
	require.NoError(t, err)
	require.Equal(t, body, string(d.Body))
	require.NoError(t, ch.Close(ctx))
}

// startProxy runs an in-process toxiproxy from a free loopback port to
// upstream and stops it when the test ends. p.Listen is its address.
func startProxy(t testing.TB, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "amqp", "127.0.0.1:0", upstream)
	require.NoError(t, p.Start())
	t.Cleanup(p.Stop)
	return p
}

// blackhole makes the proxy swallow everything in the given directions
// ("upstream": client to server; "downstream": server to client) while
// keeping both sockets open, as a dead peer or a partitioned network does.
func blackhole(t testing.TB, p *toxiproxy.Proxy, streams ...string) {
	t.Helper()
	for _, s := range streams {
		js := fmt.Sprintf(`{"name":"blackhole_%s","type":"timeout","stream":%q,"toxicity":1,"attributes":{"timeout":0}}`, s, s)
		_, err := p.Toxics.AddToxicJson(strings.NewReader(js))
		require.NoError(t, err)
	}
}

// within waits for ch to be closed, failing t after d.
func within(t testing.TB, ch <-chan struct{}, d time.Duration, what string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-ch:
		return time.Since(start)
	case <-time.After(d):
		t.Fatalf("%s: not within %v", what, d)
		return 0
	}
}
