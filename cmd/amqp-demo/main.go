// Command amqp-demo shows the client working against a real broker: it
// connects to AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/), prints
// what was negotiated, publishes with confirms, consumes and acknowledges,
// recovers a channel from a server error, and closes cleanly.
//
//	go run ./cmd/amqp-demo
package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/amqp-go/amqp"
)

func main() {
	if err := run(); err != nil {
		log.Fatalf("amqp-demo: %v", err)
	}
}

func run() error {
	url := os.Getenv("AMQP_URL")
	if url == "" {
		url = "amqp://guest:guest@127.0.0.1:5672/"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cfg, err := amqp.ParseURL(url)
	if err != nil {
		return err
	}
	cfg.ConnectionName = "amqp-demo"
	fmt.Printf("dialing %s\n", cfg) // the password is never printed
	conn, err := amqp.DialConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	fmt.Printf("connected to %s %v at %s: frame_max=%d channel_max=%d heartbeat=%s\n",
		conn.ServerProperties()["product"], conn.ServerProperties()["version"], conn.Addr(),
		conn.FrameMax(), conn.ChannelMax(), conn.Heartbeat())

	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	if err := ch.Qos(ctx, amqp.BasicQos{PrefetchCount: 100}); err != nil {
		return err
	}
	if err := ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}); err != nil {
		return err
	}
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true}) // deleted when the connection closes
	if err != nil {
		return err
	}
	fmt.Printf("declared server-named queue %s\n", q.Queue)

	// Publish from several goroutines on one channel; every confirm is accounted for.
	const publishers, each = 10, 100
	start := time.Now()
	var wg sync.WaitGroup
	confs := make(chan *amqp.Confirmation, publishers*each)
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				conf, err := ch.Publish(ctx, amqp.Publishing{
					RoutingKey: q.Queue,
					Properties: amqp.Properties{ContentType: "text/plain", DeliveryMode: amqp.Persistent,
						Headers: amqp.Table{"publisher": int32(p)}},
					Body: fmt.Appendf(nil, "message %d from publisher %d", i, p),
				})
				if err != nil {
					errs <- err
					return
				}
				confs <- conf
			}
		}()
	}
	wg.Wait()
	close(confs)
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	acked := 0
	for conf := range confs {
		if err := conf.Wait(ctx); err != nil {
			return fmt.Errorf("publish %d: %w", conf.DeliveryTag(), err)
		}
		acked++
	}
	fmt.Printf("published %d messages from %d goroutines, %d acked by the broker, in %s\n",
		publishers*each, publishers, acked, time.Since(start).Round(time.Millisecond))

	// Consume them back and acknowledge in batches.
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue})
	if err != nil {
		return err
	}
	received := 0
	for d, err := range cons.Deliveries(ctx) {
		if err != nil {
			return err
		}
		received++
		if received%50 == 0 {
			if err := d.Ack(amqp.AckOptions{Multiple: true}); err != nil {
				return err
			}
		}
		if received == publishers*each {
			fmt.Printf("consumed %d messages (last: %q, headers %v)\n", received, d.Body, d.Headers)
			break
		}
	}
	if err := cons.Cancel(ctx); err != nil {
		return err
	}

	// A server error closes the channel; the library reopens it with its
	// qos and confirm mode, and the same *Channel serves the next call.
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "amqp-demo-no-such-queue", Passive: true})
	var amqpErr *amqp.Error
	if !errors.As(err, &amqpErr) || !errors.Is(err, amqp.ErrNotFound) {
		return fmt.Errorf("expected 404 NOT_FOUND, got %v", err)
	}
	fmt.Printf("channel error: %d %s; channel reopened\n", amqpErr.Code, amqpErr.Code)
	conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("after recovery")})
	if err != nil {
		return err
	}
	if err := conf.Wait(ctx); err != nil {
		return err
	}
	msg, err := ch.Get(ctx, amqp.BasicGet{Queue: q.Queue, NoAck: true})
	if err != nil {
		return err
	}
	fmt.Printf("after recovery: published (confirm tag %d) and got %q back\n", conf.DeliveryTag(), msg.Body)

	if err := conn.Close(ctx); err != nil {
		return err
	}
	fmt.Printf("closed: %v\n", conn.Err())
	return nil
}
