package amqp_test

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

func TestPublishConsumeAck(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.Qos(testCtx(t), amqp.BasicQos{PrefetchCount: 10}))
	q := tempQueue(t, ch, nil)
	for i := range 20 {
		_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte{byte(i)}})
		require.NoError(t, err)
	}
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q})
	require.NoError(t, err)
	require.NotEmpty(t, cons.Tag(), "server-chosen tag")
	for i := range 20 {
		d, err := cons.Next(testCtx(t))
		require.NoError(t, err)
		require.Equal(t, []byte{byte(i)}, d.Body, "in order")
		require.Equal(t, q, d.RoutingKey)
		require.Equal(t, cons.Tag(), d.ConsumerTag)
		require.NoError(t, d.Ack(amqp.AckOptions{}))
		require.ErrorIs(t, d.Ack(amqp.AckOptions{}), amqp.ErrAlreadySettled, "a second ack is a local error")
	}
	require.NoError(t, cons.Cancel(testCtx(t)))
	_, err = cons.Next(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrConsumerCancelled)
	ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	require.NoError(t, err, "the channel survived the double acks")
	require.Zero(t, ok.MessageCount)
}

func TestNoAckDeliveryCannotBeAcked(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("x")})
	require.NoError(t, err)
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q, NoAck: true})
	require.NoError(t, err)
	d, err := cons.Next(testCtx(t))
	require.NoError(t, err)
	require.ErrorIs(t, d.Ack(amqp.AckOptions{}), amqp.ErrNoAckDelivery)
	require.ErrorIs(t, d.Reject(amqp.RejectOptions{Requeue: true}), amqp.ErrNoAckDelivery)
	tempQueue(t, ch, nil) // the channel is still open
	require.NoError(t, ch.Err())
}

func TestStaleDeliveryAfterChannelReopen(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("x")})
	require.NoError(t, err)
	d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err)
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: uniqueName("missing"), Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound)
	require.ErrorIs(t, d.Ack(amqp.AckOptions{}), amqp.ErrStaleDelivery)
	// The server requeued it when the channel closed: it comes again, redelivered.
	d2, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err)
	require.True(t, d2.Redelivered)
	require.NoError(t, d2.Ack(amqp.AckOptions{}))
}

func TestConsumerEndsWithChannelError(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	cons, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q})
	require.NoError(t, err)
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: uniqueName("missing"), Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound)
	_, err = cons.Next(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrNotFound, "the consumer ends with the channel's error")
	<-cons.Done()
}

func TestGetEmpty(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	_, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.ErrorIs(t, err, amqp.ErrEmpty)
}

func TestConfirmsManyPublishersOneChannel(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	q := tempQueue(t, ch, nil)
	var acks, nacks sync.Map
	ch.OnAck(func(tag uint64, multiple bool) { acks.Store(tag, multiple) })
	ch.OnNack(func(tag uint64, multiple bool) { nacks.Store(tag, multiple) })

	const publishers, each = 100, 20
	confs := make(chan *amqp.Confirmation, publishers*each)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				c, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte{byte(p), byte(i)}})
				if err != nil {
					t.Error(err)
					return
				}
				confs <- c
			}
		}()
	}
	wg.Wait()
	close(confs)
	tags := map[uint64]bool{}
	for c := range confs {
		require.NoError(t, c.Wait(testCtx(t)))
		require.True(t, c.Acked())
		require.False(t, tags[c.DeliveryTag()], "each publish has its own sequence number")
		tags[c.DeliveryTag()] = true
	}
	require.Len(t, tags, publishers*each)
	for tag := uint64(1); tag <= publishers*each; tag++ {
		require.True(t, tags[tag], "sequence numbers are 1..n")
	}
	require.Zero(t, ch.Unconfirmed())
	// The listeners saw acks covering the last tag.
	require.Eventually(t, func() bool {
		covered := false
		acks.Range(func(k, v any) bool {
			if k.(uint64) == publishers*each {
				covered = true
			}
			return true
		})
		return covered
	}, 5*time.Second, 10*time.Millisecond)
	nacks.Range(func(k, v any) bool { t.Errorf("unexpected nack %v", k); return true })
	ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	require.NoError(t, err)
	require.Equal(t, uint32(publishers*each), ok.MessageCount)
}

func TestBrokerNackWithRejectPublish(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	q := tempQueue(t, ch, amqp.Table{"x-max-length": int32(1), "x-overflow": "reject-publish"})
	first, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("1")})
	require.NoError(t, err)
	second, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("2")})
	require.NoError(t, err)
	require.NoError(t, first.Wait(testCtx(t)))
	require.ErrorIs(t, second.Wait(testCtx(t)), amqp.ErrNacked)
	require.False(t, second.Acked())
}

func TestMandatoryReturnWithConfirms(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	returns := make(chan amqp.Return, 1)
	ch.OnReturn(func(r amqp.Return) { returns <- r })
	q := tempQueue(t, ch, nil)

	routed, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Mandatory: true, Body: []byte("routed")})
	require.NoError(t, err)
	lost, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: uniqueName("nowhere"), Mandatory: true,
		Properties: amqp.Properties{MessageID: "m-1"}, Body: []byte("unroutable")})
	require.NoError(t, err)

	require.NoError(t, routed.Wait(testCtx(t)))
	err = lost.Wait(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrReturned)
	require.ErrorIs(t, err, amqp.ErrNoRoute, "312 NO_ROUTE")
	var re *amqp.ReturnedError
	require.ErrorAs(t, err, &re)
	require.Equal(t, "unroutable", string(re.Return.Body))
	require.Equal(t, "m-1", re.Return.MessageID)
	require.NotNil(t, lost.Returned())
	r := <-returns
	require.Equal(t, amqp.CodeNoRoute, r.ReplyCode)
	require.Equal(t, "unroutable", string(r.Body))
}

func TestReturnWithoutConfirms(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	returns := make(chan amqp.Return, 1)
	ch.OnReturn(func(r amqp.Return) { returns <- r })
	conf, err := ch.Publish(testCtx(t), amqp.Publishing{Exchange: "amq.direct", RoutingKey: uniqueName("nowhere"), Mandatory: true, Body: []byte("back")})
	require.NoError(t, err)
	require.False(t, conf.Requested())
	require.NoError(t, conf.Wait(testCtx(t)), "outside confirm mode a confirmation is resolved at once")
	select {
	case r := <-returns:
		require.Equal(t, "amq.direct", r.Exchange)
		require.Equal(t, "back", string(r.Body))
	case <-time.After(5 * time.Second):
		t.Fatal("no basic.return")
	}
}

func TestServerCancelNotification(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	admin := openChannel(t, conn)

	// Without OnCancel: the consumer ends with an error that says so.
	q1 := uniqueName("cancel1")
	_, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q1})
	require.NoError(t, err)
	c1, err := ch.Consume(testCtx(t), amqp.BasicConsume{Queue: q1})
	require.NoError(t, err)
	_, err = admin.QueueDelete(testCtx(t), amqp.QueueDelete{Queue: q1})
	require.NoError(t, err)
	_, err = c1.Next(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrCancelledByServer)

	// With OnCancel: the callback runs with the tag.
	q2 := uniqueName("cancel2")
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q2})
	require.NoError(t, err)
	cancelled := make(chan string, 1)
	c2, err := ch.ConsumeWith(testCtx(t), amqp.BasicConsume{Queue: q2, ConsumerTag: "tagged"},
		amqp.ConsumerOptions{OnCancel: func(tag string) { cancelled <- tag }})
	require.NoError(t, err)
	_, err = admin.QueueDelete(testCtx(t), amqp.QueueDelete{Queue: q2})
	require.NoError(t, err)
	select {
	case tag := <-cancelled:
		require.Equal(t, "tagged", tag)
	case <-time.After(5 * time.Second):
		t.Fatal("OnCancel not called")
	}
	_, err = c2.Next(testCtx(t))
	require.ErrorIs(t, err, amqp.ErrConsumerCancelled)
	require.NoError(t, ch.Err(), "the channel stays open")
}

func TestExchangeToExchangeBinding(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	src, dst := uniqueName("e2e-src"), uniqueName("e2e-dst")
	require.NoError(t, ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: src, Type: "topic", AutoDelete: true}))
	require.NoError(t, ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: dst, Type: "fanout", AutoDelete: true}))
	t.Cleanup(func() {
		ctx := context.Background()
		ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: src})
		ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: dst})
	})
	require.NoError(t, ch.ExchangeBind(testCtx(t), amqp.ExchangeBind{Destination: dst, Source: src, RoutingKey: "logs.*"}))
	q := tempQueue(t, ch, nil)
	require.NoError(t, ch.QueueBind(testCtx(t), amqp.QueueBind{Queue: q, Exchange: dst}))

	_, err := ch.Publish(testCtx(t), amqp.Publishing{Exchange: src, RoutingKey: "logs.error", Body: []byte("routed")})
	require.NoError(t, err)
	_, err = ch.Publish(testCtx(t), amqp.Publishing{Exchange: src, RoutingKey: "metrics.cpu", Body: []byte("not routed")})
	require.NoError(t, err)
	d := getEventually(t, ch, q)
	require.Equal(t, "routed", string(d.Body))
	require.Equal(t, src, d.Exchange)
	_, err = ch.Get(testCtx(t), amqp.BasicGet{Queue: q, NoAck: true})
	require.ErrorIs(t, err, amqp.ErrEmpty)

	require.NoError(t, ch.ExchangeUnbind(testCtx(t), amqp.ExchangeUnbind{Destination: dst, Source: src, RoutingKey: "logs.*"}))
	_, err = ch.Publish(testCtx(t), amqp.Publishing{Exchange: src, RoutingKey: "logs.error", Body: []byte("after unbind")})
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	_, err = ch.Get(testCtx(t), amqp.BasicGet{Queue: q, NoAck: true})
	require.ErrorIs(t, err, amqp.ErrEmpty)
}

func TestLargeBodySplitIntoFrames(t *testing.T) {
	needBroker(t)
	cfg, err := amqp.ParseURL(brokerURL())
	require.NoError(t, err)
	cfg.FrameMax = 4096
	conn, err := amqp.DialConfig(testCtx(t), cfg)
	require.NoError(t, err)
	defer conn.Close(testCtx(t))
	require.Equal(t, uint32(4096), conn.FrameMax())
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	q := tempQueue(t, ch, nil)
	body := make([]byte, 16<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	conf, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: body})
	require.NoError(t, err)
	require.NoError(t, conf.Wait(testCtx(t)))
	d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q, NoAck: true})
	require.NoError(t, err)
	require.True(t, bytes.Equal(body, d.Body), "16 MiB arrived intact through 4 KiB frames")
}

func TestEveryTableTypeAndPropertyRoundTrip(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	ts := time.Date(2026, 11, 22, 10, 30, 0, 0, time.UTC)
	headers := amqp.Table{
		"bool": true, "int8": int8(-8), "uint8": uint8(200), "int16": int16(-1600),
		"uint16": uint16(60000), "int32": int32(-320000), "uint32": uint32(4000000000),
		"int64": int64(math.MinInt64), "float32": float32(1.5), "float64": 2.25,
		"decimal": amqp.Decimal{Scale: 2, Value: 1234}, "string": "héllo", "bytes": []byte{0, 1, 2},
		"array":  []any{int32(1), "two", true, nil},
		"time":   ts,
		"table":  amqp.Table{"nested": amqp.Table{"deep": "yes"}},
		"void":   nil,
		"empty":  "",
		"emptyA": []any{},
	}
	props := amqp.Properties{
		ContentType: "application/json", ContentEncoding: "gzip", Headers: headers,
		DeliveryMode: 2, Priority: 5, CorrelationID: "corr", ReplyTo: "reply",
		Expiration: "60000", MessageID: "id-1", Timestamp: ts, Type: "kind",
		UserID: "guest", AppID: "app", ClusterID: "",
	}
	_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Properties: props, Body: []byte("{}")})
	require.NoError(t, err)
	d := getEventually(t, ch, q)
	require.Equal(t, props, d.Properties, "every property and table type read back unchanged")
}

func TestAbandonedGetGivesMessageBack(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := tempQueue(t, ch, nil)
	for range 200 {
		_, err := ch.Publish(testCtx(t), amqp.Publishing{RoutingKey: q, Body: []byte("m")})
		require.NoError(t, err)
	}
	// Cancel many Gets at random points; none may leave a message unacked.
	got := 0
	for range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(rand.IntN(400))*time.Microsecond)
		d, err := ch.Get(ctx, amqp.BasicGet{Queue: q})
		cancel()
		if err == nil {
			require.NoError(t, d.Ack(amqp.AckOptions{}))
			got++
		}
	}
	// Every message is either acked (got) or back in the queue: none stays
	// unacked. (The last abandoned Get's message may be handed back just
	// after a first count is taken, hence the polling.)
	require.Eventually(t, func() bool {
		ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
		return err == nil && ok.MessageCount == uint32(200-got)
	}, 5*time.Second, 20*time.Millisecond, "%d acked; the rest must be ready again", got)
}
