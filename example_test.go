package amqp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/amqp-go/amqp"
)

// The examples run against a RabbitMQ on localhost. They clean up after
// themselves: their queues are exclusive (deleted with the connection) and
// their exchanges auto-delete, with unique names so that runs do not clash.

func ExampleDial() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	fmt.Println("connected to", conn.ServerProperties()["product"])
	// Output: connected to RabbitMQ
}

// A work queue: tasks are shared among workers, each of which takes one at
// a time (prefetch 1) and acknowledges it when done. A task whose worker
// dies before acknowledging it goes to another worker.
func ExampleChannel_Consume_workQueue() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}

	// A real work queue is durable with a well-known name, such as
	// amqp.QueueDeclare{Queue: "tasks", Durable: true}.
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	if err != nil {
		log.Fatal(err)
	}
	for _, task := range []string{"resize photo 1", "resize photo 2", "resize photo 3"} {
		_, err := ch.Publish(ctx, amqp.Publishing{
			RoutingKey: q.Queue,
			Properties: amqp.Properties{DeliveryMode: amqp.Persistent},
			Body:       []byte(task),
		})
		if err != nil {
			log.Fatal(err)
		}
	}

	// The worker: at most one unacknowledged task at a time.
	if err := ch.Qos(ctx, amqp.BasicQos{PrefetchCount: 1}); err != nil {
		log.Fatal(err)
	}
	tasks, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue})
	if err != nil {
		log.Fatal(err)
	}
	processed := 0
	for d, err := range tasks.Deliveries(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("done:", string(d.Body)) // do the work, then acknowledge
		if err := d.Ack(amqp.AckOptions{}); err != nil {
			log.Fatal(err)
		}
		processed++
		if processed == 3 { // a real worker runs until ctx ends
			break
		}
	}
	// Output:
	// done: resize photo 1
	// done: resize photo 2
	// done: resize photo 3
}

// Publisher confirms: the server acks each message once it has taken
// responsibility for it, or nacks it.
func ExampleChannel_Publish_confirms() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	if err != nil {
		log.Fatal(err)
	}

	if err := ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}); err != nil {
		log.Fatal(err)
	}
	// Publish a batch, then wait for every confirmation.
	var confs []*amqp.Confirmation
	for i := 1; i <= 3; i++ {
		conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: fmt.Appendf(nil, "order %d", i)})
		if err != nil {
			log.Fatal(err)
		}
		confs = append(confs, conf)
	}
	for _, conf := range confs {
		switch err := conf.Wait(ctx); {
		case err == nil:
			fmt.Println("acked:", conf.DeliveryTag())
		case errors.Is(err, amqp.ErrNacked):
			fmt.Println("nacked, publish again:", conf.DeliveryTag())
		default: // returned (mandatory), or the channel closed first
			log.Fatal(err)
		}
	}
	// Output:
	// acked: 1
	// acked: 2
	// acked: 3
}

// Publish/subscribe: a fanout exchange copies every message to each queue
// bound to it, whatever the routing key.
func ExampleChannel_QueueBind_fanout() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}

	logs := fmt.Sprintf("logs-%d", time.Now().UnixNano())
	err = ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: logs, Type: amqp.ExchangeFanout, AutoDelete: true})
	if err != nil {
		log.Fatal(err)
	}
	// Each subscriber has a queue of its own, named by the server.
	var subscribers []*amqp.Consumer
	for range 2 {
		q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
		if err != nil {
			log.Fatal(err)
		}
		if err := ch.QueueBind(ctx, amqp.QueueBind{Queue: q.Queue, Exchange: logs}); err != nil {
			log.Fatal(err)
		}
		sub, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue, NoAck: true})
		if err != nil {
			log.Fatal(err)
		}
		subscribers = append(subscribers, sub)
	}

	if _, err := ch.Publish(ctx, amqp.Publishing{Exchange: logs, Body: []byte("disk almost full")}); err != nil {
		log.Fatal(err)
	}
	for i, sub := range subscribers {
		d, err := sub.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("subscriber %d: %s\n", i+1, d.Body)
	}
	// Output:
	// subscriber 1: disk almost full
	// subscriber 2: disk almost full
}

// Topic routing: a queue bound with a pattern receives the messages whose
// routing key matches it; "*" stands for one word, "#" for any number.
func ExampleChannel_QueueBind_topic() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}

	events := fmt.Sprintf("events-%d", time.Now().UnixNano())
	err = ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: events, Type: amqp.ExchangeTopic, AutoDelete: true})
	if err != nil {
		log.Fatal(err)
	}
	subscribe := func(pattern string) *amqp.Consumer {
		q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
		if err != nil {
			log.Fatal(err)
		}
		err = ch.QueueBind(ctx, amqp.QueueBind{Queue: q.Queue, Exchange: events, RoutingKey: pattern})
		if err != nil {
			log.Fatal(err)
		}
		c, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue, NoAck: true})
		if err != nil {
			log.Fatal(err)
		}
		return c
	}
	kernel := subscribe("kern.*")
	critical := subscribe("*.critical")

	for _, key := range []string{"kern.info", "app.critical", "kern.critical"} {
		if _, err := ch.Publish(ctx, amqp.Publishing{Exchange: events, RoutingKey: key}); err != nil {
			log.Fatal(err)
		}
	}
	for _, sub := range []struct {
		pattern string
		c       *amqp.Consumer
	}{{"kern.*", kernel}, {"*.critical", critical}} {
		for range 2 {
			d, err := sub.c.Next(ctx)
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("%-10s got %s\n", sub.pattern, d.RoutingKey)
		}
	}
	// Output:
	// kern.*     got kern.info
	// kern.*     got kern.critical
	// *.critical got app.critical
	// *.critical got kern.critical
}

// Exchange-to-exchange binding (a RabbitMQ extension): messages that the
// source exchange routes with a matching key go on to the destination
// exchange, and from there to its queues.
func ExampleChannel_ExchangeBind() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}

	suffix := time.Now().UnixNano()
	all, audit := fmt.Sprintf("all-%d", suffix), fmt.Sprintf("audit-%d", suffix)
	for _, x := range []amqp.ExchangeDeclare{
		{Exchange: all, Type: amqp.ExchangeTopic, AutoDelete: true},
		{Exchange: audit, Type: amqp.ExchangeFanout, AutoDelete: true},
	} {
		if err := ch.ExchangeDeclare(ctx, x); err != nil {
			log.Fatal(err)
		}
	}
	// Everything about users that reaches "all" is copied to "audit".
	err = ch.ExchangeBind(ctx, amqp.ExchangeBind{Destination: audit, Source: all, RoutingKey: "user.#"})
	if err != nil {
		log.Fatal(err)
	}
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	if err != nil {
		log.Fatal(err)
	}
	if err := ch.QueueBind(ctx, amqp.QueueBind{Queue: q.Queue, Exchange: audit}); err != nil {
		log.Fatal(err)
	}
	auditLog, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue, NoAck: true})
	if err != nil {
		log.Fatal(err)
	}

	for _, key := range []string{"order.created", "user.deleted"} {
		if _, err := ch.Publish(ctx, amqp.Publishing{Exchange: all, RoutingKey: key}); err != nil {
			log.Fatal(err)
		}
	}
	d, err := auditLog.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("audited:", d.RoutingKey)
	// Output: audited: user.deleted
}

// RPC with direct reply-to: the client receives replies on the pseudo-queue
// amq.rabbitmq.reply-to, with no reply queue to declare. It must consume
// from it, in no-ack mode, before publishing requests on the same channel.
func ExampleChannel_Consume_directReplyTo() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)

	// The server answers each request with its body in upper case, sent to
	// the request's ReplyTo with its CorrelationID.
	server, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	rpcQueue, err := server.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true}) // usually a well-known name
	if err != nil {
		log.Fatal(err)
	}
	requests, err := server.Consume(ctx, amqp.BasicConsume{Queue: rpcQueue.Queue})
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		for req, err := range requests.Deliveries(ctx) {
			if err != nil {
				return
			}
			reply := amqp.Publishing{
				RoutingKey: req.ReplyTo,
				Properties: amqp.Properties{CorrelationID: req.CorrelationID},
				Body:       bytes.ToUpper(req.Body),
			}
			if _, err := server.Publish(ctx, reply); err != nil {
				log.Print(err)
			}
			if err := req.Ack(amqp.AckOptions{}); err != nil {
				log.Print(err)
			}
		}
	}()

	// The client.
	client, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	replies, err := client.Consume(ctx, amqp.BasicConsume{Queue: "amq.rabbitmq.reply-to", NoAck: true})
	if err != nil {
		log.Fatal(err)
	}
	_, err = client.Publish(ctx, amqp.Publishing{
		RoutingKey: rpcQueue.Queue,
		Properties: amqp.Properties{ReplyTo: "amq.rabbitmq.reply-to", CorrelationID: "request-1"},
		Body:       []byte("hello"),
	})
	if err != nil {
		log.Fatal(err)
	}
	reply, err := replies.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.CorrelationID, string(reply.Body))

	// Stop the server: cancelling its consumer ends its range loop.
	if err := requests.Cancel(ctx); err != nil {
		log.Fatal(err)
	}
	<-served
	// Output: request-1 HELLO
}

// A mandatory message that no queue can take comes back (basic.return)
// instead of being dropped. In confirm mode its Confirmation reports it too.
func ExampleChannel_OnReturn() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}

	returns := make(chan amqp.Return, 1)
	ch.OnReturn(func(r amqp.Return) { returns <- r })
	_, err = ch.Publish(ctx, amqp.Publishing{
		RoutingKey: fmt.Sprintf("no-such-queue-%d", time.Now().UnixNano()),
		Mandatory:  true,
		Body:       []byte("anyone?"),
	})
	if err != nil {
		log.Fatal(err)
	}
	select {
	case r := <-returns:
		fmt.Printf("returned %q: %d %s\n", r.Body, r.ReplyCode, r.ReplyText)
	case <-ctx.Done():
		log.Fatal("no return")
	}
	// Output: returned "anyone?": 312 NO_ROUTE
}

// When the server cancels a consumer, for example because its queue was
// deleted, OnCancel is told and the consumer ends with ErrConsumerCancelled.
func ExampleConsumerOptions_onCancel() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	if err != nil {
		log.Fatal(err)
	}

	cancelled := make(chan string, 1)
	cons, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: q.Queue, ConsumerTag: "worker-1"}, amqp.ConsumerOptions{
		OnCancel: func(tag string) { cancelled <- tag },
	})
	if err != nil {
		log.Fatal(err)
	}

	// Someone deletes the queue.
	if _, err := ch.QueueDelete(ctx, amqp.QueueDelete{Queue: q.Queue}); err != nil {
		log.Fatal(err)
	}
	select {
	case tag := <-cancelled:
		fmt.Println("cancelled by the server:", tag)
	case <-ctx.Done():
		log.Fatal("no cancel notification")
	}
	_, err = cons.Next(ctx)
	fmt.Println(errors.Is(err, amqp.ErrConsumerCancelled))
	// Output:
	// cancelled by the server: worker-1
	// true
}

// A connection that recovers by itself: channels, consumers and the topology
// declared through it come back after a network failure or a broker
// restart. The publisher republishes what the loss left unconfirmed, and the
// consumer tolerates the duplicates that can cause.
func ExampleConfig_recovery() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg, err := amqp.ParseURL("amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	cfg.Recovery = &amqp.RecoveryConfig{MaxBackoff: 5 * time.Second}
	conn, err := amqp.DialConfig(ctx, cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	conn.OnRecovery(func(ev amqp.RecoveryEvent) {
		log.Println(ev) // started, attempt failed, succeeded, queue renamed, ...
	})

	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if err := ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}); err != nil {
		log.Fatal(err)
	}
	// Recorded, and declared again by a recovery: a server-named queue gets
	// a new name, which its consumers follow.
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	if err != nil {
		log.Fatal(err)
	}
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue})
	if err != nil {
		log.Fatal(err)
	}

	publish := func(body string) error {
		for {
			conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte(body)})
			if err == nil {
				err = conf.Wait(ctx)
			}
			if errors.Is(err, amqp.ErrPublishLost) {
				continue // the connection dropped before the ack: send it again
			}
			return err
		}
	}
	for _, body := range []string{"one", "two"} {
		if err := publish(body); err != nil {
			log.Fatal(err)
		}
	}
	for range 2 {
		d, err := cons.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("received", string(d.Body))
		// A delivery from before a reconnect can no longer be acked; the
		// broker delivers it again.
		if err := d.Ack(amqp.AckOptions{}); err != nil && !errors.Is(err, amqp.ErrStaleDelivery) {
			log.Fatal(err)
		}
	}
	// Output:
	// received one
	// received two
}

// A high-rate consumer that hands each delivery back once done with it, so
// that the client reuses its memory instead of allocating per message. Copy
// whatever outlives the loop body before Release, and acknowledge first.
func ExampleConsumerOptions_recycle() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	if err != nil {
		log.Fatal(err)
	}
	for _, reading := range []string{"21.5", "21.7", "22.0"} {
		if _, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte(reading)}); err != nil {
			log.Fatal(err)
		}
	}

	cons, err := ch.ConsumeWith(ctx, amqp.BasicConsume{Queue: q.Queue}, amqp.ConsumerOptions{Recycle: true})
	if err != nil {
		log.Fatal(err)
	}
	var readings []string
	for range 3 {
		d, err := cons.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		readings = append(readings, string(d.Body)) // a copy: Body is reused after Release
		if err := d.Ack(amqp.AckOptions{}); err != nil {
			log.Fatal(err)
		}
		d.Release() // d must not be used from here on
	}
	fmt.Println(readings)
	// Output: [21.5 21.7 22.0]
}

// A work queue served by a pool of handlers: at most Workers run at once,
// each delivery is acked when its handler returns nil and requeued when it
// fails (dead-lettered when the error wraps ErrReject), and Shutdown stops
// gracefully, letting running handlers finish.
func ExampleChannel_Serve() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true}) // usually durable, with a well-known name
	if err != nil {
		log.Fatal(err)
	}
	for _, task := range []string{"resize photo 1", "resize photo 2", "resize photo 3"} {
		_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte(task),
			Properties: amqp.Properties{DeliveryMode: amqp.Persistent}})
		if err != nil {
			log.Fatal(err)
		}
	}

	var mu sync.Mutex
	var done []string
	finished := make(chan struct{}, 3)
	svc, err := ch.Serve(ctx, amqp.BasicConsume{Queue: q.Queue}, func(ctx context.Context, d *amqp.Delivery) error {
		if len(d.Body) == 0 {
			return fmt.Errorf("empty task: %w", amqp.ErrReject) // no retry can fix it
		}
		mu.Lock()
		done = append(done, strings.ToUpper(string(d.Body))) // do the work; ctx ends if the shutdown runs out of time
		mu.Unlock()
		finished <- struct{}{}
		return nil // ack
	}, amqp.ServeOptions{
		Workers: 4,
		OnError: func(d *amqp.Delivery, err error) { log.Printf("task %d: %v", d.DeliveryTag, err) },
	})
	if err != nil {
		log.Fatal(err)
	}
	for range 3 {
		<-finished
	}

	// On SIGTERM, say: stop taking tasks, let those running finish, and
	// hand the prefetched ones back to the queue, within 30 s.
	shutdownCtx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	if err := svc.Shutdown(shutdownCtx); err != nil {
		log.Fatal(err)
	}
	slices.Sort(done)
	fmt.Println(strings.Join(done, "\n"))
	// Output:
	// RESIZE PHOTO 1
	// RESIZE PHOTO 2
	// RESIZE PHOTO 3
}

// A publish barrier: publish a batch in confirm mode without waiting for
// each confirmation, then wait once for all of them. The error lists every
// publish that failed.
func ExampleChannel_WaitConfirms() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// A queue that takes two messages and refuses more (the broker nacks them).
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true,
		Arguments: amqp.Table{"x-max-length": int32(2), "x-overflow": "reject-publish"}})
	if err != nil {
		log.Fatal(err)
	}
	if err := ch.ConfirmSelect(ctx, amqp.ConfirmSelect{}); err != nil {
		log.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: fmt.Appendf(nil, "order %d", i)})
		if err != nil {
			log.Fatal(err)
		}
	}

	err = ch.WaitConfirms(ctx) // every publish above has its outcome now
	var failed *amqp.ConfirmsError
	switch {
	case err == nil:
		fmt.Println("all confirmed")
	case errors.As(err, &failed):
		for _, c := range failed.Failed {
			fmt.Printf("publish %d: nacked: %t\n", c.DeliveryTag(), errors.Is(c.Wait(ctx), amqp.ErrNacked))
		}
	default: // ctx ended first
		log.Fatal(err)
	}
	// Output: publish 3: nacked: true
}

// A range over Deliveries ends without an error when the application
// itself cancels the consumer or closes its channel or connection, here
// from another goroutine; an end that comes from elsewhere (the server
// closed the channel or connection, the network failed) is yielded.
func ExampleConsumer_Deliveries() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := amqp.Dial(ctx, "amqp://guest:guest@localhost:5672/")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close(ctx)
	ch, err := conn.Channel(ctx)
	if err != nil {
		log.Fatal(err)
	}
	q, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Exclusive: true})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("last one")}); err != nil {
		log.Fatal(err)
	}
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q.Queue})
	if err != nil {
		log.Fatal(err)
	}

	for d, err := range cons.Deliveries(ctx) {
		if err != nil {
			log.Fatal(err) // a failure: not reached when the application closed it
		}
		fmt.Println("got", string(d.Body))
		if err := d.Ack(amqp.AckOptions{}); err != nil {
			log.Fatal(err)
		}
		go ch.Close(ctx) // say, at shutdown
	}
	fmt.Println("loop ended; by the application:", amqp.EndedByApplication(cons.Err()))
	// Output:
	// got last one
	// loop ended; by the application: true
}

// Recovery tuned from the URL alone: the recovery_ parameters set the
// fields of RecoveryConfig (durations in milliseconds).
func ExampleParseURL_recovery() {
	cfg, err := amqp.ParseURL("amqp://guest:guest@node1,node2/?recovery=on&recovery_republish=true" +
		"&recovery_min_backoff=250&recovery_max_backoff=30000&recovery_max_attempts=0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cfg.Addrs, cfg.Recovery)
	// Output: [node1:5672 node2:5672] {MinBackoff:250ms MaxBackoff:30s MaxAttempts:0 FailFast:false Republish:true SkipTopology:false AttemptTimeout:0s ProtocolErrorRepeats:0}
}
