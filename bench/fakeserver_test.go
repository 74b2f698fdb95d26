package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
)

// runFakeServer is the child process: an amqptest server on 127.0.0.1:0
// that prints "ADDR host:port" and serves every connection in mode until
// its stdin closes.
//
//   - sink: [amqptest.Conn.Sink] reads and discards publishes and answers
//     everything else (channel.open, queue.declare, connection.close).
//   - source: [amqptest.AutoReply], plus: basic.consume with the consumer
//     tag "bench-<n>-<size>" is answered with consume-ok and followed by n
//     basic.deliver of size-byte bodies for that tag ([amqptest.Conn.Deliver]).
//   - rpc: [amqptest.AutoReply] (queue.declare passive gets declare-ok).
func runFakeServer(mode string) int {
	var serve func(ctx context.Context, c *amqptest.Conn)
	switch mode {
	case "sink":
		serve = func(ctx context.Context, c *amqptest.Conn) { _, _ = c.Sink(ctx) }
	case "source":
		serve = func(ctx context.Context, c *amqptest.Conn) { _ = c.Serve(ctx, sourceHandler) }
	case "rpc":
		serve = func(ctx context.Context, c *amqptest.Conn) { _ = c.Serve(ctx, amqptest.AutoReply) }
	default:
		fmt.Fprintf(os.Stderr, "bench: unknown %s=%q\n", envFakeServer, mode)
		return 2
	}
	srv := amqptest.NewServer(nil, amqptest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // the parent holds stdin open while it lives
		cancel()
		_ = srv.Close()
	}()
	fmt.Printf("ADDR %s\n", srv.Addr())
	for {
		c, err := srv.Accept(ctx)
		if c == nil {
			if ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "bench: fake server: %v\n", err)
				return 1
			}
			return 0
		}
		if err != nil {
			continue // a failed handshake
		}
		go serve(ctx, c)
	}
}

// sourceTag is the consumer tag that asks the source server for n
// deliveries of size bytes.
func sourceTag(n, size int) string { return fmt.Sprintf("bench-%d-%d", n, size) }

func parseSourceTag(tag string) (n, size int, ok bool) {
	parts := strings.Split(tag, "-")
	if len(parts) != 3 || parts[0] != "bench" {
		return 0, 0, false
	}
	n, err1 := strconv.Atoi(parts[1])
	size, err2 := strconv.Atoi(parts[2])
	return n, size, err1 == nil && err2 == nil
}

func sourceHandler(ctx context.Context, c *amqptest.Conn, cmd *amqptest.Command) error {
	if err := amqptest.AutoReply(ctx, c, cmd); err != nil {
		return err
	}
	bc, ok := cmd.Method.(*amqp.BasicConsume)
	if !ok {
		return nil
	}
	n, size, ok := parseSourceTag(bc.ConsumerTag)
	if !ok {
		return nil
	}
	// Deliver writes while Serve keeps reading (acks, cancel, close).
	go func() { _ = c.Deliver(ctx, cmd.Channel, bc.ConsumerTag, n, amqp.Properties{}, body(size)) }()
	return nil
}
