package amqp_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/stretchr/testify/require"
)

// The exchange type constants name types the broker has: a misspelt one
// would be refused (503 COMMAND_INVALID), closing the connection.
func TestExchangeTypeConstantsAreTheBrokers(t *testing.T) {
	ctx := testCtx(t)
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	for _, kind := range []string{amqp.ExchangeDirect, amqp.ExchangeFanout, amqp.ExchangeTopic, amqp.ExchangeHeaders} {
		name := uniqueName("kind-" + kind)
		require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: name, Type: kind, AutoDelete: true}), kind)
		// The broker has it now.
		require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: name, Type: kind, Passive: true}), kind)
		require.NoError(t, ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: name}))
	}
	require.NoError(t, conn.Err())
}

// Persistent and Transient travel as the delivery modes 2 and 1.
func TestDeliveryModeConstants(t *testing.T) {
	ctx := testCtx(t)
	ch := openChannel(t, dialBroker(t))
	q := tempQueue(t, ch, nil)
	cons, err := ch.Consume(ctx, amqp.BasicConsume{Queue: q, NoAck: true})
	require.NoError(t, err)
	for _, mode := range []uint8{amqp.Persistent, amqp.Transient} {
		_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: q, Properties: amqp.Properties{DeliveryMode: mode}})
		require.NoError(t, err)
		d, err := cons.Next(ctx)
		require.NoError(t, err)
		require.Equal(t, mode, d.DeliveryMode)
	}
	require.Equal(t, uint8(2), amqp.Persistent)
	require.Equal(t, uint8(1), amqp.Transient)
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

// noPanic runs f and turns a panic into a test failure, so that one broken
// call does not abort the whole test binary.
func noPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s panicked: %v", what, r)
		}
	}()
	f()
}

func TestExchangeTypesRoute(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	bound := func(t *testing.T, x, key string, args amqp.Table) string {
		q := tempQueue(t, ch, nil)
		require.NoError(t, ch.QueueBind(testCtx(t), amqp.QueueBind{Queue: q, Exchange: x, RoutingKey: key, Arguments: args}))
		return q
	}
	pub := func(x, key string, headers amqp.Table) bool {
		return confirmRouted(t, ch, amqp.Publishing{Exchange: x, RoutingKey: key,
			Properties: amqp.Properties{Headers: headers}, Body: []byte(key)})
	}

	t.Run("direct", func(t *testing.T) {
		x := tempExchange(t, ch, "direct")
		qa, qb := bound(t, x, "a", nil), bound(t, x, "b", nil)
		require.True(t, pub(x, "a", nil))
		require.False(t, pub(x, "c", nil), "no binding for c: returned")
		require.Equal(t, uint32(1), readyCount(t, ch, qa))
		require.Zero(t, readyCount(t, ch, qb))
	})
	t.Run("fanout", func(t *testing.T) {
		x := tempExchange(t, ch, "fanout")
		qa, qb := bound(t, x, "ignored-a", nil), bound(t, x, "ignored-b", nil)
		require.True(t, pub(x, "anything", nil))
		require.Equal(t, uint32(1), readyCount(t, ch, qa))
		require.Equal(t, uint32(1), readyCount(t, ch, qb))
	})
	t.Run("topic", func(t *testing.T) {
		x := tempExchange(t, ch, "topic")
		kern, crit, all := bound(t, x, "kern.*", nil), bound(t, x, "*.critical", nil), bound(t, x, "#", nil)
		require.True(t, pub(x, "kern.critical", nil))
		require.True(t, pub(x, "kern.info.detail", nil), "# matches several words; * only one")
		require.Equal(t, uint32(1), readyCount(t, ch, kern))
		require.Equal(t, uint32(1), readyCount(t, ch, crit))
		require.Equal(t, uint32(2), readyCount(t, ch, all))
	})
	t.Run("headers", func(t *testing.T) {
		x := tempExchange(t, ch, "headers")
		qAll := bound(t, x, "", amqp.Table{"x-match": "all", "format": "pdf", "type": "report"})
		qAny := bound(t, x, "", amqp.Table{"x-match": "any", "format": "pdf", "type": "log"})
		require.True(t, pub(x, "r1", amqp.Table{"format": "pdf", "type": "report"}), "matches all and any")
		require.True(t, pub(x, "r2", amqp.Table{"format": "zip", "type": "log"}), "matches any only")
		require.False(t, pub(x, "r3", amqp.Table{"format": "zip"}), "matches neither")
		require.Equal(t, uint32(1), readyCount(t, ch, qAll))
		require.Equal(t, uint32(2), readyCount(t, ch, qAny))
		d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: qAll, NoAck: true})
		require.NoError(t, err)
		require.Equal(t, "r1", string(d.Body))
	})
}

func TestExchangeDeclarePassiveMissing(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	err := ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: uniqueName("missing"), Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound)
	var e *amqp.Error
	require.ErrorAs(t, err, &e)
	require.True(t, e.Server)
	require.False(t, e.Connection, "404 is a channel error")
	require.Equal(t, "exchange.declare", e.Method())

	// The channel was reopened: the same *Channel works.
	require.NoError(t, ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: "amq.topic", Passive: true}))
	require.NoError(t, ch.Err())
	require.NoError(t, conn.Err())
}

func TestExchangeDurableAndInternal(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)

	// Durable: redeclaring with another durability is refused.
	durable := uniqueName("x-durable")
	require.NoError(t, ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: durable, Type: "direct", Durable: true}))
	t.Cleanup(func() { _ = ch.ExchangeDelete(context.Background(), amqp.ExchangeDelete{Exchange: durable}) })
	require.NoError(t, ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: durable, Passive: true}))
	err := ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: durable, Type: "direct"})
	require.ErrorIs(t, err, amqp.ErrPreconditionFailed, "inequivalent arg 'durable'")

	// Internal: clients cannot publish to it, but other exchanges can route to it.
	internal := uniqueName("x-internal")
	require.NoError(t, ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: internal, Type: "fanout", Internal: true, AutoDelete: true}))
	t.Cleanup(func() { _ = ch.ExchangeDelete(context.Background(), amqp.ExchangeDelete{Exchange: internal}) })
	front := tempExchange(t, ch, "fanout")
	require.NoError(t, ch.ExchangeBind(testCtx(t), amqp.ExchangeBind{Destination: internal, Source: front}))
	q := tempQueue(t, ch, nil)
	require.NoError(t, ch.QueueBind(testCtx(t), amqp.QueueBind{Queue: q, Exchange: internal}))

	errs := make(chan *amqp.Error, 1)
	ch.OnError(func(e *amqp.Error) { errs <- e })
	_, err = ch.Publish(testCtx(t), amqp.Publishing{Exchange: internal, Body: []byte("direct to internal")})
	require.NoError(t, err, "publish is asynchronous: the refusal comes later")
	// The next call, pipelined behind the publish, fails with the channel error
	// (unless the server's channel.close arrived before it was sent).
	if _, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true}); err != nil {
		require.ErrorIs(t, err, amqp.ErrAccessRefused)
	}
	select {
	case e := <-errs:
		require.ErrorIs(t, e, amqp.ErrAccessRefused, "403 ACCESS_REFUSED")
		require.Equal(t, "basic.publish", e.Method())
		require.False(t, e.Connection)
	case <-time.After(5 * time.Second):
		t.Fatal("OnError was not told of the 403")
	}

	// The reopened channel routes through the internal exchange.
	_, err = ch.Publish(testCtx(t), amqp.Publishing{Exchange: front, Body: []byte("via front")})
	require.NoError(t, err)
	require.Equal(t, "via front", string(getEventually(t, ch, q).Body))
}

func TestExchangeDeleteIfUnused(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	x := uniqueName("x-ifunused")
	require.NoError(t, ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: x, Type: "direct"}))
	t.Cleanup(func() { _ = ch.ExchangeDelete(context.Background(), amqp.ExchangeDelete{Exchange: x}) })
	q := tempQueue(t, ch, nil)
	require.NoError(t, ch.QueueBind(testCtx(t), amqp.QueueBind{Queue: q, Exchange: x, RoutingKey: "k"}))

	err := ch.ExchangeDelete(testCtx(t), amqp.ExchangeDelete{Exchange: x, IfUnused: true})
	require.ErrorIs(t, err, amqp.ErrPreconditionFailed, "406: the exchange has a binding")
	require.NoError(t, ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: x, Passive: true}), "still there")

	require.NoError(t, ch.QueueUnbind(testCtx(t), amqp.QueueUnbind{Queue: q, Exchange: x, RoutingKey: "k"}))
	require.NoError(t, ch.ExchangeDelete(testCtx(t), amqp.ExchangeDelete{Exchange: x, IfUnused: true}))
	err = ch.ExchangeDeclare(testCtx(t), amqp.ExchangeDeclare{Exchange: x, Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound, "deleted")
}

func TestQueueDeclareReturnsCounts(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	other := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))

	ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Exclusive: true})
	require.NoError(t, err)
	require.Regexp(t, `^amq\.gen-`, ok.Queue, "server-named")
	require.Zero(t, ok.MessageCount)
	require.Zero(t, ok.ConsumerCount)

	q := uniqueName("counts")
	ok, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Exclusive: true})
	require.NoError(t, err)
	require.Equal(t, amqp.QueueDeclareOk{Queue: q}, ok)
	for range 3 {
		require.True(t, confirmRouted(t, ch, amqp.Publishing{RoutingKey: q, Body: []byte("m")}))
	}
	// A non-passive redeclare with the same properties also reports counts.
	// (RabbitMQ refuses a non-passive declare of an amq.gen-* name: 403.)
	ok, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Exclusive: true})
	require.NoError(t, err)
	require.Equal(t, amqp.QueueDeclareOk{Queue: q, MessageCount: 3, ConsumerCount: 0}, ok)

	empty := tempQueue(t, ch, nil)
	for range 2 {
		_, err := other.Consume(testCtx(t), amqp.BasicConsume{Queue: empty})
		require.NoError(t, err)
	}
	ok, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: empty, Passive: true})
	require.NoError(t, err)
	require.Equal(t, uint32(2), ok.ConsumerCount)
	require.Zero(t, ok.MessageCount)
}

func TestQueueMaxLengthDropsHead(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	q := tempQueue(t, ch, amqp.Table{"x-max-length": int32(2)})
	for _, body := range []string{"1", "2", "3"} {
		require.True(t, confirmRouted(t, ch, amqp.Publishing{RoutingKey: q, Body: []byte(body)}))
	}
	require.Equal(t, uint32(2), readyCount(t, ch, q))
	d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q, NoAck: true})
	require.NoError(t, err)
	require.Equal(t, "2", string(d.Body), "the oldest message was dropped")
}

// deathReason returns the reason of the first x-death entry of a dead-lettered message.
func deathReason(t *testing.T, d *amqp.Delivery) (reason, queue string) {
	t.Helper()
	deaths, ok := d.Headers["x-death"].([]any)
	require.True(t, ok, "x-death header: %#v", d.Headers)
	require.NotEmpty(t, deaths)
	death, ok := deaths[0].(amqp.Table)
	require.True(t, ok, "x-death entry: %#v", deaths[0])
	reason, _ = death["reason"].(string)
	queue, _ = death["queue"].(string)
	return reason, queue
}

func TestQueueMessageTTLExpiry(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	dlq := tempQueue(t, ch, nil)
	// Expired messages go to dlq through the default exchange.
	q := tempQueue(t, ch, amqp.Table{
		"x-message-ttl":             int32(50),
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": dlq,
	})
	require.True(t, confirmRouted(t, ch, amqp.Publishing{RoutingKey: q, Body: []byte("short-lived")}))
	d := getEventually(t, ch, dlq)
	require.Equal(t, "short-lived", string(d.Body))
	reason, from := deathReason(t, d)
	require.Equal(t, "expired", reason)
	require.Equal(t, q, from)
	require.Zero(t, readyCount(t, ch, q))
}

func TestQueueDeadLetterExchange(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	dlx := tempExchange(t, ch, "fanout")
	dlq := tempQueue(t, ch, nil)
	require.NoError(t, ch.QueueBind(testCtx(t), amqp.QueueBind{Queue: dlq, Exchange: dlx}))
	q := tempQueue(t, ch, amqp.Table{"x-dead-letter-exchange": dlx})

	require.True(t, confirmRouted(t, ch, amqp.Publishing{RoutingKey: q, Body: []byte("poison")}))
	d, err := ch.Get(testCtx(t), amqp.BasicGet{Queue: q})
	require.NoError(t, err)
	require.NoError(t, d.Nack(amqp.NackOptions{Requeue: false}))

	dead := getEventually(t, ch, dlq)
	require.Equal(t, "poison", string(dead.Body))
	require.Equal(t, dlx, dead.Exchange)
	reason, from := deathReason(t, dead)
	require.Equal(t, "rejected", reason)
	require.Equal(t, q, from)
	require.Zero(t, readyCount(t, ch, q))
}

func TestQueueDeclareQuorum(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := uniqueName("quorum")
	args := amqp.Table{"x-queue-type": "quorum"}
	_, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Durable: true, Arguments: args})
	if err != nil {
		var e *amqp.Error
		if errors.As(err, &e) && !e.Connection {
			t.Skipf("quorum queues are not available on this broker: %v", err)
		}
		require.NoError(t, err)
	}
	t.Cleanup(func() { _, _ = ch.QueueDelete(context.Background(), amqp.QueueDelete{Queue: q}) })

	// It is a quorum queue: redeclaring it as classic is refused.
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Durable: true, Arguments: amqp.Table{"x-queue-type": "classic"}})
	require.ErrorIs(t, err, amqp.ErrPreconditionFailed)
	// Quorum queues must be durable and cannot be exclusive.
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: uniqueName("quorum-excl"), Exclusive: true, Arguments: args})
	require.ErrorIs(t, err, amqp.ErrPreconditionFailed)

	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	require.True(t, confirmRouted(t, ch, amqp.Publishing{RoutingKey: q, Body: []byte("replicated")}))
	require.Equal(t, uint32(1), readyCount(t, ch, q))
	n, err := ch.QueueDelete(testCtx(t), amqp.QueueDelete{Queue: q})
	require.NoError(t, err)
	require.Equal(t, uint32(1), n)
}

func TestQueuePurgeAndDeleteReturnCounts(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))
	q := tempQueue(t, ch, nil)
	for range 3 {
		require.True(t, confirmRouted(t, ch, amqp.Publishing{RoutingKey: q, Body: []byte("p")}))
	}
	n, err := ch.QueuePurge(testCtx(t), amqp.QueuePurge{Queue: q})
	require.NoError(t, err)
	require.Equal(t, uint32(3), n)
	require.Zero(t, readyCount(t, ch, q))

	for range 2 {
		require.True(t, confirmRouted(t, ch, amqp.Publishing{RoutingKey: q, Body: []byte("d")}))
	}
	n, err = ch.QueueDelete(testCtx(t), amqp.QueueDelete{Queue: q})
	require.NoError(t, err)
	require.Equal(t, uint32(2), n)
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound)
}

func TestQueueDeleteIfEmptyIfUnused(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	other := openChannel(t, conn)
	require.NoError(t, ch.ConfirmSelect(testCtx(t), amqp.ConfirmSelect{}))

	full := tempQueue(t, ch, nil)
	require.True(t, confirmRouted(t, ch, amqp.Publishing{RoutingKey: full, Body: []byte("x")}))
	_, err := ch.QueueDelete(testCtx(t), amqp.QueueDelete{Queue: full, IfEmpty: true})
	require.ErrorIs(t, err, amqp.ErrPreconditionFailed, "406: not empty")
	require.Equal(t, uint32(1), readyCount(t, ch, full), "still there, with its message")

	used := tempQueue(t, ch, nil)
	cons, err := other.Consume(testCtx(t), amqp.BasicConsume{Queue: used})
	require.NoError(t, err)
	_, err = ch.QueueDelete(testCtx(t), amqp.QueueDelete{Queue: used, IfUnused: true})
	require.ErrorIs(t, err, amqp.ErrPreconditionFailed, "406: has a consumer")
	require.NoError(t, cons.Cancel(testCtx(t)))
	n, err := ch.QueueDelete(testCtx(t), amqp.QueueDelete{Queue: used, IfUnused: true, IfEmpty: true})
	require.NoError(t, err)
	require.Zero(t, n)
}

func TestNoWaitForms(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	ctx := testCtx(t)

	require.NoError(t, ch.ConfirmSelect(ctx, amqp.ConfirmSelect{NoWait: true}))
	src, dst, q := uniqueName("nw-src"), uniqueName("nw-dst"), uniqueName("nw-q")
	t.Cleanup(func() {
		ctx := context.Background()
		_ = ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: src})
		_ = ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: dst})
	})
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: src, Type: "topic", NoWait: true}))
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: dst, Type: "fanout", NoWait: true}))
	noPanic(t, "QueueDeclare with NoWait", func() {
		ok, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Exclusive: true, NoWait: true})
		require.NoError(t, err)
		require.Equal(t, amqp.QueueDeclareOk{}, ok, "no reply: a zero result")
	})
	require.NoError(t, ch.QueueBind(ctx, amqp.QueueBind{Queue: q, Exchange: dst, NoWait: true}))
	require.NoError(t, ch.ExchangeBind(ctx, amqp.ExchangeBind{Destination: dst, Source: src, RoutingKey: "k.*", NoWait: true}))

	// Their effects are visible: passive declares find everything, and a
	// message routes src → dst → q, acked because confirm.select took effect.
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: src, Passive: true}))
	require.NoError(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: dst, Passive: true}))
	require.True(t, confirmRouted(t, ch, amqp.Publishing{Exchange: src, RoutingKey: "k.1", Body: []byte("1")}))
	require.Equal(t, uint32(1), readyCount(t, ch, q))

	noPanic(t, "QueuePurge with NoWait", func() {
		n, err := ch.QueuePurge(ctx, amqp.QueuePurge{Queue: q, NoWait: true})
		require.NoError(t, err)
		require.Zero(t, n, "no reply: no count")
	})
	require.Zero(t, readyCount(t, ch, q), "purged")

	require.NoError(t, ch.ExchangeUnbind(ctx, amqp.ExchangeUnbind{Destination: dst, Source: src, RoutingKey: "k.*", NoWait: true}))
	require.False(t, confirmRouted(t, ch, amqp.Publishing{Exchange: src, RoutingKey: "k.1", Body: []byte("2")}), "unbound")

	noPanic(t, "QueueDelete with NoWait", func() {
		n, err := ch.QueueDelete(ctx, amqp.QueueDelete{Queue: q, NoWait: true})
		require.NoError(t, err)
		require.Zero(t, n)
	})
	require.NoError(t, ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: src, NoWait: true}))
	require.NoError(t, ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: dst, NoWait: true}))
	_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Passive: true})
	require.ErrorIs(t, err, amqp.ErrNotFound, "queue deleted")
	require.ErrorIs(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: src, Passive: true}), amqp.ErrNotFound)
	require.ErrorIs(t, ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: dst, Passive: true}), amqp.ErrNotFound)
}

func TestNoWaitErrorArrivesAsChannelError(t *testing.T) {
	conn := dialBroker(t)
	ch := openChannel(t, conn)
	q := uniqueName("nowait-406") // not amq.gen-*: RabbitMQ refuses a non-passive declare of those
	_, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Exclusive: true, Arguments: amqp.Table{"x-max-length": int32(10)}})
	require.NoError(t, err)
	errs := make(chan *amqp.Error, 1)
	ch.OnError(func(e *amqp.Error) { errs <- e })

	// Redeclaring with other arguments is refused, but with no-wait the call
	// cannot know: it returns at once.
	noPanic(t, "QueueDeclare with NoWait", func() {
		_, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Exclusive: true, NoWait: true,
			Arguments: amqp.Table{"x-max-length": int32(20)}})
		require.NoError(t, err)
	})

	// The next call was sent behind it, so the server discarded it: it fails
	// with the declare's error (unless the server's channel.close had already
	// arrived and the channel was reopened before it was sent).
	_, err = ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Passive: true})
	if err != nil {
		require.ErrorIs(t, err, amqp.ErrPreconditionFailed)
		var e *amqp.Error
		require.ErrorAs(t, err, &e)
		require.Equal(t, "queue.declare", e.Method())
	} else {
		t.Log("the channel.close arrived before the next call was sent; only OnError saw it")
	}
	select {
	case e := <-errs:
		require.ErrorIs(t, e, amqp.ErrPreconditionFailed)
		require.True(t, e.Server)
		require.False(t, e.Connection)
		require.Contains(t, e.Reason, "x-max-length")
	case <-time.After(5 * time.Second):
		t.Fatal("OnError was not told of the 406")
	}

	// The channel was reopened and works; the queue kept its arguments.
	ok, err := ch.QueueDeclare(testCtx(t), amqp.QueueDeclare{Queue: q, Exclusive: true,
		Arguments: amqp.Table{"x-max-length": int32(10)}})
	require.NoError(t, err)
	require.Equal(t, q, ok.Queue)
	require.NoError(t, ch.Err())
}
