package conformance

import (
	"fmt"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
)

// The rules of the queue class.

var _ = register("queue.declare/default-binding", func(t *T) {
	s, ch, q := t.FreshQueue("m")
	if t.Get(s, ch, q) == nil {
		t.Fail("a message published to the default exchange with a new queue's name did not arrive")
	}
	t.Pass("a new queue received a message sent to \"\" with its name, without any bind")
})

var _ = register("queue.declare/minimum-queues", func(t *T) {
	s, ch := t.Fresh()
	ctx, cancel := t.step()
	defer cancel()
	const n = 256
	for range n { // pipelined; exclusive and server-named, so they go with the connection
		t.Must(s.Send(ctx, ch, &amqp.QueueDeclare{Exclusive: true}), "queue.declare")
	}
	for i := range n {
		if _, err := amqpraw.Expect[*amqp.QueueDeclareOk](ctx, s, ch); err != nil {
			t.Fail("queue %d: %v", i+1, brief(err))
		}
	}
	t.Pass("%d queues declared (the suite stops there: the broker is shared)", n)
})

var _ = register("queue.declare.queue/default-name", func(t *T) {
	s, ch := t.Fresh()
	seen := map[string]bool{}
	for range 3 {
		q := t.Declare(s, ch, amqp.QueueDeclare{Exclusive: true})
		if q == "" || seen[q] {
			t.Fail("declare-ok named the queue %q", q)
		}
		seen[q] = true
	}
	t.Pass("three queues declared with an empty name got three distinct names")
})

var _ = register("queue.declare.queue/reserved", func(t *T) {
	s, ch := t.Fresh()
	name := "amq." + t.Name("q")
	t.track(name)
	t.ExpectChannelClose(s, ch, &amqp.QueueDeclare{Queue: name}, amqp.CodeAccessRefused)
})

var _ = register("queue.declare.queue/syntax", func(t *T) {
	s, ch := t.Fresh()
	name := t.Name("q") + " bad name!#"
	t.track(name)
	t.ExpectChannelClose(s, ch, &amqp.QueueDeclare{Queue: name}, amqp.CodePreconditionFailed)
})

var _ = register("queue.declare.passive/passive", func(t *T) {
	s, ch, q := t.FreshQueue()
	ctx, cancel := t.step()
	defer cancel()
	if _, err := amqpraw.Call[*amqp.QueueDeclareOk](ctx, s, ch, &amqp.QueueDeclare{Queue: q, Passive: true}); err != nil {
		t.Fail("passive declare of an existing queue: %v", brief(err))
	}
	t.ExpectChannelClose(s, ch, &amqp.QueueDeclare{Queue: t.Name("missing"), Passive: true}, amqp.CodeNotFound)
})

var _ = register("queue.declare.passive/equivalent", func(t *T) {
	s, ch, q := t.FreshQueue()
	ctx, cancel := t.step()
	defer cancel()
	if _, err := amqpraw.Call[*amqp.QueueDeclareOk](ctx, s, ch, &amqp.QueueDeclare{Queue: q}); err != nil {
		t.Fail("an equivalent redeclaration: %v", brief(err))
	}
	t.Must(s.Send(ctx, ch, &amqp.QueueDeclare{Queue: q, Durable: true}), "queue.declare")
	c, err := s.ExpectChannelClose(ctx, ch, 0)
	if err != nil {
		t.Fail("redeclaring a transient queue as durable: %v", brief(err))
	}
	t.Pass("an equivalent redeclaration: declare-ok; a durable one: channel.close %d %s", c.ReplyCode, c.ReplyText)
})

var _ = register("queue.declare.durable/types", func(t *T) {
	s, ch := t.Fresh()
	t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Durable: true})
	t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q")})
	t.Pass("a durable and a transient queue declared")
})

var _ = register("queue.declare.exclusive/types", func(t *T) {
	s, ch := t.Fresh()
	t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Exclusive: true})
	t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q")})
	t.Pass("an exclusive and a shared queue declared")
})

var _ = register("queue.declare.exclusive/exclusive", func(t *T) {
	owner, och := t.Fresh()
	q := t.Declare(owner, och, amqp.QueueDeclare{Queue: t.Name("q"), Exclusive: true})
	other := t.Open()
	var seen []string
	for _, m := range []amqp.Method{
		&amqp.QueueDeclare{Queue: q},
		&amqp.QueueDeclare{Queue: q, Passive: true},
		&amqp.QueueBind{Queue: q, Exchange: "amq.fanout"},
		&amqp.BasicConsume{Queue: q},
		&amqp.QueuePurge{Queue: q},
		&amqp.QueueDelete{Queue: q},
	} {
		ch := t.Channel(other)
		ctx, cancel := t.step()
		t.Must(other.Send(ctx, ch, m), m.MethodName())
		c, err := other.ExpectChannelClose(ctx, ch, amqp.CodeResourceLocked)
		cancel()
		if err != nil {
			t.Fail("%s from another connection: %v", m.MethodName(), brief(err))
		}
		seen = append(seen, fmt.Sprintf("%s %d", m.MethodName(), c.ReplyCode))
	}
	t.Pass("from another connection: %v", seen)
})

var _ = register("queue.declare.auto-delete/pre-existence", func(t *T) {
	s, ch := t.Fresh()
	auto := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), AutoDelete: true})
	plain := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q")})
	for _, q := range []amqp.QueueDeclare{{Queue: auto}, {Queue: plain, AutoDelete: true}} {
		ctx, cancel := t.step()
		_, err := amqpraw.Call[*amqp.QueueDeclareOk](ctx, s, ch, &q)
		cancel()
		if err != nil {
			t.Fail("redeclaring queue %s with auto-delete %t: %v", q.Queue, q.AutoDelete, brief(err))
		}
	}
	t.Pass("both queues redeclared with auto-delete reversed: declare-ok")
})

var _ = register("queue.bind/duplicates", func(t *T) {
	s, ch, q := t.FreshQueue()
	Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: "amq.direct", RoutingKey: q})
	ExpectReply[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: "amq.direct", RoutingKey: q})
})

var _ = register("queue.bind/unique", func(t *T) {
	s, ch, q := t.FreshQueue()
	key := t.run.prefix + ".bind.x"
	for _, pattern := range []string{t.run.prefix + ".bind.*", t.run.prefix + ".#", "#.bind.x"} {
		Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: "amq.topic", RoutingKey: pattern})
	}
	t.Publish(s, ch, "amq.topic", key, amqp.Properties{}, "once")
	if t.Get(s, ch, q) == nil {
		t.Fail("the message matching three bindings did not arrive at all")
	}
	if t.Get(s, ch, q) != nil {
		t.Fail("the message matching three bindings arrived more than once")
	}
	t.Pass("a message matching three of the queue's bindings arrived once")
})

var _ = register("queue.bind/transient-exchange", func(t *T) {
	s, ch := t.Fresh()
	x := t.Name("x")
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: x, Type: "fanout"})
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Durable: true})
	ExpectReply[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: x})
})

var _ = register("queue.bind/binding-count", func(t *T) {
	s, ch, q := t.FreshQueue()
	for _, x := range []string{"amq.direct", "amq.fanout", "amq.topic", "amq.headers"} {
		Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: x, RoutingKey: q})
	}
	t.Pass("one queue bound to 4 exchanges")
})

// queueKnown sends m, which names no queue, on a fresh channel.
func (t *T) queueKnown(m amqp.Method) {
	s, ch := t.Fresh()
	t.ExpectChannelClose(s, ch, m, amqp.CodeNotFound)
}

var _ = register("queue.bind.queue/queue-known", func(t *T) {
	t.queueKnown(&amqp.QueueBind{Exchange: "amq.direct", RoutingKey: "k"})
})

var _ = register("queue.bind.queue/must-exist", func(t *T) {
	s, ch := t.Fresh()
	t.ExpectChannelClose(s, ch, &amqp.QueueBind{Queue: t.Name("missing"), Exchange: "amq.direct"}, amqp.CodeNotFound)
})

var _ = register("queue.bind.exchange/exchange-existence", func(t *T) {
	s, ch, q := t.FreshQueue()
	t.ExpectChannelClose(s, ch, &amqp.QueueBind{Queue: q, Exchange: t.Name("missing")}, amqp.CodeNotFound)
})

var _ = register("queue.bind.exchange/default-exchange", func(t *T) {
	s, ch, q := t.FreshQueue()
	ExpectReply[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: "", RoutingKey: q})
})

var _ = register("queue.bind.routing-key/direct-exchange-key-matching", func(t *T) {
	s, ch, q := t.FreshQueue()
	Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: "amq.direct", RoutingKey: q + ".K"})
	t.Publish(s, ch, "amq.direct", q+".R", amqp.Properties{}, "other key")
	t.Publish(s, ch, "amq.direct", q+".K", amqp.Properties{}, "same key")
	m := t.Get(s, ch, q)
	if m == nil || string(m.Body) != "same key" {
		t.Fail("after publishing with key R and then K to a queue bound with K: got %v", m)
	}
	if extra := t.Get(s, ch, q); extra != nil {
		t.Fail("a message with another key arrived too: %q", extra.Body)
	}
	t.Pass("bound with key K: the message with K arrived, the one with R did not")
})

var _ = register("queue.unbind/01", func(t *T) {
	s, ch, q := t.FreshQueue()
	t.unbindFails(&amqp.QueueUnbind{Queue: q, Exchange: t.Name("missing")}, s, ch)
})

var _ = register("queue.unbind.queue/queue-known", func(t *T) {
	t.queueKnown(&amqp.QueueUnbind{Exchange: "amq.direct", RoutingKey: "k"})
})

var _ = register("queue.unbind.queue/must-exist", func(t *T) {
	s, ch := t.Fresh()
	t.ExpectChannelClose(s, ch, &amqp.QueueUnbind{Queue: t.Name("missing"), Exchange: "amq.direct"}, amqp.CodeNotFound)
})

var _ = register("queue.unbind.exchange/must-exist", func(t *T) {
	s, ch, q := t.FreshQueue()
	t.ExpectChannelClose(s, ch, &amqp.QueueUnbind{Queue: q, Exchange: t.Name("missing")}, amqp.CodeNotFound)
})

var _ = register("queue.unbind.exchange/default-exchange", func(t *T) {
	s, ch, q := t.FreshQueue()
	bindThenUnbind[*amqp.QueueBindOk, *amqp.QueueUnbindOk](t, s, ch, "binding to the default exchange", &amqp.QueueBind{Queue: q, Exchange: "", RoutingKey: q}, &amqp.QueueUnbind{Queue: q, Exchange: "", RoutingKey: q})
})

var _ = register("queue.purge/02", func(t *T) {
	s, ch, q := t.FreshQueue("unacked")
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	t.Next(s, ch, "the message")
	ok := Call[*amqp.QueuePurgeOk](t, s, ch, &amqp.QueuePurge{Queue: q})
	// Give it back: it must still exist.
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.ChannelClose{ReplyCode: amqp.CodeSuccess}), "channel.close")
	if _, err := amqpraw.Expect[*amqp.ChannelCloseOk](ctx, s, ch); err != nil {
		t.Fail("channel.close: %v", brief(err))
	}
	ch2 := t.Channel(s)
	if t.Get(s, ch2, q) == nil {
		t.Fail("purge-ok counted %d, and the delivered but unacknowledged message was gone after its channel closed", ok.MessageCount)
	}
	t.Pass("purge-ok counted %d; the unacknowledged message came back when its channel closed", ok.MessageCount)
})

var _ = register("queue.purge.queue/queue-known", func(t *T) { t.queueKnown(&amqp.QueuePurge{}) })

var _ = register("queue.purge.queue/must-exist", func(t *T) {
	s, ch := t.Fresh()
	t.ExpectChannelClose(s, ch, &amqp.QueuePurge{Queue: t.Name("missing")}, amqp.CodeNotFound)
})

var _ = register("queue.delete.queue/queue-known", func(t *T) { t.queueKnown(&amqp.QueueDelete{}) })

var _ = register("queue.delete.queue/must-exist", func(t *T) {
	s, ch := t.Fresh()
	t.ExpectChannelClose(s, ch, &amqp.QueueDelete{Queue: t.Name("missing")}, amqp.CodeNotFound)
})

var _ = register("queue.delete.if-unused/in-use", func(t *T) {
	s, ch, q := t.FreshQueue()
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	other := t.Channel(s)
	t.ExpectChannelClose(s, other, &amqp.QueueDelete{Queue: q, IfUnused: true}, amqp.CodePreconditionFailed)
})

var _ = register("queue.delete.if-empty/not-empty", func(t *T) {
	s, ch, q := t.FreshQueue()
	Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: "amq.direct", RoutingKey: q})
	t.Publish(s, ch, "amq.direct", q, amqp.Properties{}, "one")
	t.Publish(s, ch, "amq.direct", q, amqp.Properties{}, "two")
	t.ExpectChannelClose(s, ch, &amqp.QueueDelete{Queue: q, IfEmpty: true}, amqp.CodePreconditionFailed)
})
