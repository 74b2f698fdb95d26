package amqptest_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
)

// A cooperative server for code that declares a queue and publishes with
// confirms. In a test, pass t instead of nil and skip the Close.
func ExampleServer() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	published := make(chan string, 1)
	srv := amqptest.NewServer(nil, amqptest.Options{
		Handler: func(ctx context.Context, c *amqptest.Conn, cmd *amqptest.Command) error {
			if pub, ok := cmd.Method.(*amqp.BasicPublish); ok {
				published <- fmt.Sprintf("%s: %s", pub.RoutingKey, cmd.Body)
			}
			return amqptest.AutoReply(ctx, c, cmd) // in confirm mode, acks the publish
		},
	})
	defer srv.Close()

	conn, err := amqp.DialConfig(ctx, amqp.Config{Dial: srv.Dial})
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
	conf, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q.Queue, Body: []byte("hello")})
	if err != nil {
		log.Fatal(err)
	}
	if err := conf.Wait(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("declared", q.Queue)
	fmt.Println("published", <-published)
	fmt.Println("acked:", conf.Acked())
	// Output:
	// declared amq.gen-1
	// published amq.gen-1: hello
	// acked: true
}

// The scripted test of the package documentation, with the client engine.
func TestClientDeclareRefused(t *testing.T) {
	ctx := t.Context()
	srv := amqptest.NewServer(t, amqptest.Options{})
	conn, err := amqp.DialConfig(ctx, amqp.Config{Dial: srv.Dial})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := srv.Accept(ctx) // the handshake is done
	if err != nil {
		t.Fatal(err)
	}
	if caps, _ := sc.StartOk().ClientProperties["capabilities"].(amqp.Table); caps["authentication_failure_close"] != true {
		t.Errorf("client capabilities = %v", caps)
	}

	errc := make(chan error, 1)
	go func() {
		ch, err := conn.Channel(ctx)
		if err == nil {
			_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: "jobs", Durable: true})
		}
		errc <- err
	}()

	ch, _ := amqptest.Expect[*amqp.ChannelOpen](t, sc)
	if err := sc.Send(ctx, ch, &amqp.ChannelOpenOk{}); err != nil {
		t.Fatal(err)
	}
	ch, qd := amqptest.Expect[*amqp.QueueDeclare](t, sc)
	if qd.Queue != "jobs" || !qd.Durable {
		t.Errorf("declared %+v", qd)
	}
	err = sc.CloseChannel(ctx, ch, amqp.CodeAccessRefused, "ACCESS_REFUSED - no permission", qd)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, amqp.ErrAccessRefused) {
		t.Errorf("QueueDeclare: %v, want ACCESS_REFUSED", err)
	}

	// The rest of the conversation is routine.
	go sc.Serve(ctx, amqptest.AutoReply)
	if err := conn.Close(ctx); err != nil {
		t.Error(err)
	}
}

// A refused login, through the TCP listener and the URL.
func TestClientLoginRefused(t *testing.T) {
	srv := amqptest.NewServer(t, amqptest.Options{
		CheckAuth: func(mechanism, response string) error {
			if user, pass, err := amqptest.Credentials(mechanism, response); err != nil || user != "alice" || pass != "secret" {
				return errors.New("Login was refused using authentication mechanism " + mechanism)
			}
			return nil
		},
	})
	_, err := amqp.Dial(t.Context(), srv.URL()) // guest:guest
	if !errors.Is(err, amqp.ErrAccessRefused) {
		t.Errorf("Dial as guest: %v, want ACCESS_REFUSED", err)
	}
	cfg := amqp.Config{Addrs: []string{srv.Addr()}, Username: "alice", Password: "secret"}
	conn, err := amqp.DialConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Connections come in the order their handshakes end: either may be first.
	var good *amqptest.Conn
	refused := 0
	for range 2 {
		sc, err := srv.Accept(t.Context())
		if err != nil {
			refused++
			if sc.StartOk() == nil || sc.TuneOk() != nil {
				t.Errorf("refused connection got to %v, %v", sc.StartOk(), sc.TuneOk())
			}
		} else {
			good = sc
		}
	}
	if refused != 1 || good == nil {
		t.Fatalf("%d connections refused, want 1", refused)
	}
	go good.Serve(t.Context(), nil)
	if err := conn.Close(t.Context()); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestClientConsume feeds the client engine's consumer with Deliver while
// Serve answers the rest, acknowledgements included.
func TestClientConsume(t *testing.T) {
	ctx := t.Context()
	srv := amqptest.NewServer(t, amqptest.Options{Handler: amqptest.AutoReply})
	conn, err := amqp.DialConfig(ctx, amqp.Config{Dial: srv.Dial})
	if err != nil {
		t.Fatal(err)
	}
	sc := accept(t, srv)
	ch, err := conn.Channel(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Qos(ctx, amqp.BasicQos{PrefetchCount: 100}); err != nil {
		t.Fatal(err)
	}
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: "q"})
	if err != nil {
		t.Fatal(err)
	}
	if cons.Tag() != "amq.ctag-1" {
		t.Errorf("consumer tag %q", cons.Tag())
	}
	const n = 1000
	go func() {
		if err := sc.Deliver(ctx, ch.ID(), cons.Tag(), n, amqp.Properties{ContentType: "text/plain"}, []byte("job")); err != nil {
			t.Error(err)
		}
	}()
	for i := uint64(1); i <= n; i++ {
		d, err := cons.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d.DeliveryTag != i || string(d.Body) != "job" || d.ContentType != "text/plain" {
			t.Fatalf("delivery %d: tag %d, %q, %+v", i, d.DeliveryTag, d.Body, d.Properties)
		}
		if err := d.Ack(amqp.AckOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}
