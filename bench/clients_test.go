package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	amqp091 "github.com/rabbitmq/amqp091-go"
)

// Client names, the last element of each benchmark's name but the variant.
const (
	ours      = "amqp"    // github.com/amqp-go/amqp
	incumbent = "amqp091" // github.com/rabbitmq/amqp091-go
	// oursRecycle is ours with ConsumerOptions.Recycle, each delivery
	// handed back with Release (consume scenarios only).
	oursRecycle = "amqp-recycle"
	rawWriter   = "raw"         // pre-encoded frames on a bare socket: the ceiling
	rawHandoff  = "raw-handoff" // ConsumeBroker: raw, with a reader goroutine that hands each read's deliveries to the consumer's
)

func fakeURL(addr string) string { return "amqp://guest:guest@" + addr + "/" }

// countingConn counts the Read and Write calls a client makes on its socket:
// each is at least one system call (a Read that finds nothing also parks the
// goroutine until the poller wakes it).
type countingConn struct {
	net.Conn
	reads, writes *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	c.reads.Add(1)
	return c.Conn.Read(p)
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// ioCounts are the socket calls of the connections dialed in one benchmark
// round; start's meter reports them per message.
type ioCounts struct{ reads, writes atomic.Int64 }

var roundIO ioCounts

func (c *ioCounts) wrap(nc net.Conn) net.Conn {
	return countingConn{Conn: nc, reads: &c.reads, writes: &c.writes}
}

// dialOurs opens a connection and a channel with this module's client; both
// are closed by b's cleanup. Its socket calls are counted in roundIO.
func dialOurs(b *testing.B, ctx context.Context, url string) (*amqp.Connection, *amqp.Channel) {
	b.Helper()
	return dialOursWith(b, ctx, url, nil)
}

// dialOursWith is dialOurs with a tracer (Config.Tracer; nil for none).
func dialOursWith(b *testing.B, ctx context.Context, url string, tracer any) (*amqp.Connection, *amqp.Channel) {
	b.Helper()
	cfg, err := amqp.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Tracer = tracer
	cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return roundIO.wrap(nc), nil
	}
	conn, err := amqp.DialConfig(ctx, cfg)
	if err != nil {
		b.Fatalf("amqp dial: %v", err)
	}
	b.Cleanup(func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	})
	ch, err := conn.Channel(ctx)
	if err != nil {
		b.Fatalf("amqp channel: %v", err)
	}
	return conn, ch
}

// dialIncumbent opens a connection and a channel with amqp091-go, with the
// settings of amqp091.Dial; both are closed by b's cleanup. Its socket calls
// are counted in roundIO.
func dialIncumbent(b *testing.B, url string) (*amqp091.Connection, *amqp091.Channel) {
	b.Helper()
	dial := amqp091.DefaultDial(30 * time.Second)
	conn, err := amqp091.DialConfig(url, amqp091.Config{
		Locale: "en_US",
		Dial: func(network, addr string) (net.Conn, error) {
			nc, err := dial(network, addr)
			if err != nil {
				return nil, err
			}
			return roundIO.wrap(nc), nil
		},
	})
	if err != nil {
		b.Fatalf("amqp091 dial: %v", err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatalf("amqp091 channel: %v", err)
	}
	return conn, ch
}

// syncOurs makes a round trip on ch (queue.declare passive). The server
// answers it only after handling everything sent before it on the channel,
// so after it every publish was taken in.
func syncOurs(b *testing.B, ctx context.Context, ch *amqp.Channel, queue string) amqp.QueueDeclareOk {
	b.Helper()
	ok, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: queue, Passive: true})
	if err != nil {
		b.Fatalf("amqp queue.declare passive: %v", err)
	}
	return ok
}

func syncIncumbent(b *testing.B, ch *amqp091.Channel, queue string) amqp091.Queue {
	b.Helper()
	q, err := ch.QueueDeclarePassive(queue, false, false, false, false, nil)
	if err != nil {
		b.Fatalf("amqp091 queue.declare passive: %v", err)
	}
	return q
}

// brokerURL returns the broker's URL, or skips b when no broker answers there.
func brokerURL(b *testing.B) string {
	b.Helper()
	brokerOnce.Do(func() {
		brokerAddr = os.Getenv("AMQP_URL")
		if brokerAddr == "" {
			brokerAddr = "amqp://guest:guest@127.0.0.1:5672/"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		conn, err := amqp.Dial(ctx, brokerAddr)
		if err != nil {
			brokerErr = err
			return
		}
		_ = conn.Close(ctx)
	})
	if brokerErr != nil {
		b.Skipf("no AMQP broker at AMQP_URL (%s): %v", brokerAddr, brokerErr)
	}
	return brokerAddr
}

var (
	brokerOnce sync.Once
	brokerAddr string
	brokerErr  error
)

// queueSeq makes queue names unique within a run.
var queueSeq int

// brokerQueue declares a fresh non-durable queue on the broker with args and
// deletes it in b's cleanup. It uses a connection of its own, outside what
// is measured.
func brokerQueue(b *testing.B, url, prefix string, args amqp.Table) string {
	b.Helper()
	ctx := benchCtx(b)
	conn, err := amqp.Dial(ctx, url)
	if err != nil {
		b.Fatalf("admin dial: %v", err)
	}
	ch, err := conn.Channel(ctx)
	if err != nil {
		b.Fatalf("admin channel: %v", err)
	}
	queueSeq++
	name := fmt.Sprintf("bench-%s-%d-%d", prefix, os.Getpid(), queueSeq)
	if _, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: name, Arguments: args}); err != nil {
		b.Fatalf("declare %s: %v", name, err)
	}
	_ = conn.Close(ctx)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := amqp.Dial(ctx, url)
		if err != nil {
			b.Errorf("admin dial: %v", err)
			return
		}
		defer conn.Close(ctx)
		ch, err := conn.Channel(ctx)
		if err == nil {
			_, err = ch.QueueDelete(ctx, amqp.QueueDelete{Queue: name})
		}
		if err != nil {
			b.Errorf("delete %s: %v", name, err)
		}
	})
	return name
}

// boundedQueue holds at most 1000 messages, dropping the oldest, so that
// publishing millions of messages keeps the broker's memory flat. Every
// client publishes to the same kind of queue.
var boundedQueue = amqp.Table{"x-max-length": int32(1000), "x-overflow": "drop-head"}
