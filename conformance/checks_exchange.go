package conformance

import (
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
)

// The rules of the exchange class (and exchange.bind/unbind, RabbitMQ's
// exchange-to-exchange bindings, which its extended XML specifies).

// declareTypes declares an exchange of each type and passes when all are
// accepted.
func (t *T) declareTypes(types ...string) {
	s, ch := t.Fresh()
	for _, typ := range types {
		ctx, cancel := t.step()
		_, err := amqpraw.Call[*amqp.ExchangeDeclareOk](ctx, s, ch, &amqp.ExchangeDeclare{Exchange: t.Name(typ), Type: typ, AutoDelete: true})
		cancel()
		if err != nil {
			t.Fail("exchange.declare of type %s: %v", typ, brief(err))
		}
	}
	t.Pass("exchange.declare-ok for types %v", types)
}

var _ = register("exchange/required-types", func(t *T) { t.declareTypes("fanout", "direct") })

var _ = register("exchange/recommended-types", func(t *T) { t.declareTypes("topic", "headers") })

var _ = register("exchange/required-instances", func(t *T) {
	s, ch := t.Fresh()
	q := t.Declare(s, ch, amqp.QueueDeclare{Exclusive: true})
	for _, x := range []string{"amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"} {
		ctx, cancel := t.step()
		_, err := amqpraw.Call[*amqp.QueueBindOk](ctx, s, ch, &amqp.QueueBind{Queue: q, Exchange: x, RoutingKey: q})
		cancel()
		if err != nil {
			t.Fail("queue.bind to %s: %v", x, brief(err))
		}
	}
	t.Pass("a queue bound to amq.direct, amq.fanout, amq.topic, amq.headers and amq.match")
})

var _ = register("exchange/default-exchange", func(t *T) {
	s, ch, q := t.FreshQueue("via the default exchange")
	if m := t.Get(s, ch, q); m == nil || string(m.Body) != "via the default exchange" {
		t.Fail("a message published to the default exchange with the queue's name did not arrive")
	}
	t.Pass("a message published to \"\" with the queue's name arrived")
})

var _ = register("exchange/default-access", func(t *T) {
	s, ch := t.Fresh()
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.ExchangeDeclare{Exchange: "", Type: "direct"}), "exchange.declare")
	cmd, err := s.ReadCommand(ctx)
	if err != nil {
		t.Fail("exchange.declare of the default exchange: %v", brief(err))
	}
	switch m := cmd.Method.(type) {
	case *amqp.ChannelClose:
		_ = s.Send(ctx, ch, &amqp.ChannelCloseOk{})
		t.Pass("exchange.declare of the default exchange: channel.close %d %s", m.ReplyCode, m.ReplyText)
	case *amqp.ConnectionClose:
		_ = s.Send(ctx, 0, &amqp.ConnectionCloseOk{})
		t.Pass("exchange.declare of the default exchange: connection.close %d %s", m.ReplyCode, m.ReplyText)
	}
	t.Fail("exchange.declare of the default exchange by its empty name: %v", cmd)
})

var _ = register("exchange.declare/minimum", func(t *T) {
	s, ch := t.Fresh()
	for i := range 16 {
		ctx, cancel := t.step()
		_, err := amqpraw.Call[*amqp.ExchangeDeclareOk](ctx, s, ch, &amqp.ExchangeDeclare{Exchange: t.Name("x"), Type: "fanout", AutoDelete: true})
		cancel()
		if err != nil {
			t.Fail("exchange %d: %v", i+1, brief(err))
		}
	}
	t.Pass("16 exchanges declared (the suite stops there: the broker is shared)")
})

var _ = register("exchange.declare.exchange/reserved", func(t *T) {
	s, ch := t.Fresh()
	name := "amq." + t.Name("x")
	t.track(name)
	t.ExpectChannelClose(s, ch, &amqp.ExchangeDeclare{Exchange: name, Type: "direct"}, amqp.CodeAccessRefused)
})

var _ = register("exchange.declare.exchange/syntax", func(t *T) {
	s, ch := t.Fresh()
	name := t.Name("x") + " bad name!#"
	t.track(name)
	t.ExpectChannelClose(s, ch, &amqp.ExchangeDeclare{Exchange: name, Type: "direct"}, amqp.CodePreconditionFailed)
})

var _ = register("exchange.declare.type/typed", func(t *T) {
	s, ch := t.Fresh()
	x := t.Name("x")
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: x, Type: "direct"})
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.ExchangeDeclare{Exchange: x, Type: "fanout"}), "exchange.declare")
	cmd, err := s.ReadCommand(ctx)
	if err != nil {
		t.Fail("redeclaring a direct exchange as fanout: %v", brief(err))
	}
	switch m := cmd.Method.(type) {
	case *amqp.ConnectionClose:
		_ = s.Send(ctx, 0, &amqp.ConnectionCloseOk{})
		if m.ReplyCode == amqp.CodeNotAllowed {
			t.Pass("redeclaring a direct exchange as fanout: connection.close %d %s", m.ReplyCode, m.ReplyText)
		}
	case *amqp.ChannelClose:
		_ = s.Send(ctx, ch, &amqp.ChannelCloseOk{})
		t.Fail("redeclaring a direct exchange as fanout: channel.close %d %s, where the rule names 530 NOT_ALLOWED (a connection error)", m.ReplyCode, m.ReplyText)
	}
	t.Fail("redeclaring a direct exchange as fanout: %v, want 530 NOT_ALLOWED", cmd)
})

var _ = register("exchange.declare.type/support", func(t *T) {
	s, ch := t.Fresh()
	ctx, cancel := t.step()
	defer cancel()
	x := t.Name("x")
	t.Must(s.Send(ctx, ch, &amqp.ExchangeDeclare{Exchange: x, Type: "x-no-such-type"}), "exchange.declare")
	t.expectFatal(s, "exchange.declare of type x-no-such-type", amqp.CodeCommandInvalid)
})

var _ = register("exchange.declare.passive/not-found", func(t *T) {
	s, ch := t.Fresh()
	t.ExpectChannelClose(s, ch, &amqp.ExchangeDeclare{Exchange: t.Name("x"), Passive: true}, amqp.CodeNotFound)
})

var _ = register("exchange.declare.passive/equivalent", func(t *T) {
	s, ch := t.Fresh()
	x := t.Name("x")
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: x, Type: "direct"})
	ctx, cancel := t.step()
	defer cancel()
	if _, err := amqpraw.Call[*amqp.ExchangeDeclareOk](ctx, s, ch, &amqp.ExchangeDeclare{Exchange: x, Type: "direct"}); err != nil {
		t.Fail("an equivalent redeclaration: %v", brief(err))
	}
	t.Must(s.Send(ctx, ch, &amqp.ExchangeDeclare{Exchange: x, Type: "direct", Durable: true}), "exchange.declare")
	c, err := s.ExpectChannelClose(ctx, ch, 0)
	if err != nil {
		t.Fail("redeclaring a transient exchange as durable: %v", brief(err))
	}
	t.Pass("an equivalent redeclaration: declare-ok; a durable one: channel.close %d %s", c.ReplyCode, c.ReplyText)
})

var _ = register("exchange.declare.durable/support", func(t *T) {
	s, ch := t.Fresh()
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: t.Name("x"), Type: "direct", Durable: true})
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: t.Name("x"), Type: "direct"})
	t.Pass("a durable and a transient exchange declared")
})

var _ = register("exchange.declare.auto-delete/amq_exchange_02", func(t *T) {
	s, ch := t.Fresh()
	x := t.Name("x")
	q := t.Declare(s, ch, amqp.QueueDeclare{Exclusive: true})
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: x, Type: "fanout", AutoDelete: true})
	time.Sleep(100 * time.Millisecond) // the small delay the rule speaks of
	ExpectReply[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: x})
})

var _ = register("exchange.declare.auto-delete/amq_exchange_25", func(t *T) {
	s, ch := t.Fresh()
	x := t.Name("x")
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: x, Type: "direct"})
	ctx, cancel := t.step()
	defer cancel()
	if _, err := amqpraw.Call[*amqp.ExchangeDeclareOk](ctx, s, ch, &amqp.ExchangeDeclare{Exchange: x, Type: "direct", AutoDelete: true}); err != nil {
		t.Fail("redeclaring an existing exchange with auto-delete set: %v", brief(err))
	}
	t.Pass("redeclaring an existing exchange with auto-delete set: declare-ok")
})

var _ = register("exchange.delete.exchange/exists", func(t *T) {
	s, ch := t.Fresh()
	t.ExpectChannelClose(s, ch, &amqp.ExchangeDelete{Exchange: t.Name("x")}, amqp.CodeNotFound)
})

var _ = register("exchange.delete.if-unused/in-use", func(t *T) {
	s, ch := t.Fresh()
	x := t.Name("x")
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: x, Type: "fanout"})
	q := t.Declare(s, ch, amqp.QueueDeclare{Exclusive: true})
	Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: x})
	t.ExpectChannelClose(s, ch, &amqp.ExchangeDelete{Exchange: x, IfUnused: true}, amqp.CodePreconditionFailed)
})

// e2e declares two fanout exchanges for the exchange.bind rules.
func (t *T) e2e() (*amqpraw.Session, uint16, string, string) {
	s, ch := t.Fresh()
	src, dst := t.Name("src"), t.Name("dst")
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: src, Type: "fanout"})
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: dst, Type: "fanout"})
	return s, ch, src, dst
}

var _ = register("exchange.bind/duplicates", func(t *T) {
	s, ch, src, dst := t.e2e()
	Call[*amqp.ExchangeBindOk](t, s, ch, &amqp.ExchangeBind{Destination: dst, Source: src, RoutingKey: "k"})
	ExpectReply[*amqp.ExchangeBindOk](t, s, ch, &amqp.ExchangeBind{Destination: dst, Source: src, RoutingKey: "k"})
})

var _ = register("exchange.bind/cyclical", func(t *T) {
	s, ch, src, _ := t.e2e()
	ExpectReply[*amqp.ExchangeBindOk](t, s, ch, &amqp.ExchangeBind{Destination: src, Source: src})
})

var _ = register("exchange.bind/unique", func(t *T) {
	s, ch := t.Fresh()
	dst := t.Name("dst")
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: dst, Type: "fanout"})
	q := t.Declare(s, ch, amqp.QueueDeclare{Exclusive: true})
	Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: dst})
	key := t.run.prefix + ".unique.x"
	for _, pattern := range []string{t.run.prefix + ".unique.*", t.run.prefix + ".#", "#." + "unique.x"} {
		Call[*amqp.ExchangeBindOk](t, s, ch, &amqp.ExchangeBind{Destination: dst, Source: "amq.topic", RoutingKey: pattern})
	}
	t.Publish(s, ch, "amq.topic", key, amqp.Properties{}, "once")
	if t.Get(s, ch, q) == nil {
		t.Fail("the message matching three bindings did not arrive at all")
	}
	if m := t.Get(s, ch, q); m != nil {
		t.Fail("the message matching three bindings arrived more than once")
	}
	t.Pass("a message matching three exchange bindings arrived once")
})

var _ = register("exchange.bind.destination/exchange-existence", func(t *T) {
	s, ch, src, _ := t.e2e()
	t.ExpectChannelClose(s, ch, &amqp.ExchangeBind{Destination: t.Name("missing"), Source: src}, amqp.CodeNotFound)
})

var _ = register("exchange.bind.destination/default-exchange", func(t *T) {
	s, ch, src, _ := t.e2e()
	ExpectReply[*amqp.ExchangeBindOk](t, s, ch, &amqp.ExchangeBind{Destination: "", Source: src})
})

var _ = register("exchange.bind.source/exchange-existence", func(t *T) {
	s, ch, _, dst := t.e2e()
	t.ExpectChannelClose(s, ch, &amqp.ExchangeBind{Destination: dst, Source: t.Name("missing")}, amqp.CodeNotFound)
})

var _ = register("exchange.bind.source/default-exchange", func(t *T) {
	s, ch, _, dst := t.e2e()
	ExpectReply[*amqp.ExchangeBindOk](t, s, ch, &amqp.ExchangeBind{Destination: dst, Source: ""})
})

// bindThenUnbind makes a binding, which must work, then passes if undoing
// it does.
func bindThenUnbind[B, U amqp.Method](t *T, s *amqpraw.Session, ch uint16, what string, bind, unbind amqp.Method) {
	ctx, cancel := t.step()
	defer cancel()
	if _, err := amqpraw.Call[B](ctx, s, ch, bind); err != nil {
		t.Fail("%s: %v", what, brief(err))
	}
	ExpectReply[U](t, s, ch, unbind)
}

// unbindFails checks that a failing unbind raises a connection exception.
func (t *T) unbindFails(m amqp.Method, s *amqpraw.Session, ch uint16) {
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, m), m.MethodName())
	cmd, err := s.ReadCommand(ctx)
	if err != nil {
		t.Fail("%s of something that does not exist: %v", m.MethodName(), brief(err))
	}
	switch c := cmd.Method.(type) {
	case *amqp.ConnectionClose:
		_ = s.Send(ctx, 0, &amqp.ConnectionCloseOk{})
		t.Pass("%s of something that does not exist: connection.close %d %s", m.MethodName(), c.ReplyCode, c.ReplyText)
	case *amqp.ChannelClose:
		_ = s.Send(ctx, ch, &amqp.ChannelCloseOk{})
		t.Fail("%s of something that does not exist: a channel exception (channel.close %d %s), not a connection exception", m.MethodName(), c.ReplyCode, c.ReplyText)
	}
	t.Skip("%s of something that does not exist was answered with %s: the broker found nothing to fail, so the rule could not be exercised", m.MethodName(), cmd.Method.MethodName())
}

var _ = register("exchange.unbind/01", func(t *T) {
	s, ch, _, dst := t.e2e()
	t.unbindFails(&amqp.ExchangeUnbind{Destination: dst, Source: t.Name("missing")}, s, ch)
})

var _ = register("exchange.unbind.destination/must-exist", func(t *T) {
	s, ch, src, _ := t.e2e()
	t.ExpectChannelClose(s, ch, &amqp.ExchangeUnbind{Destination: t.Name("missing"), Source: src}, amqp.CodeNotFound)
})

var _ = register("exchange.unbind.destination/default-exchange", func(t *T) {
	s, ch, src, _ := t.e2e()
	bindThenUnbind[*amqp.ExchangeBindOk, *amqp.ExchangeUnbindOk](t, s, ch, "binding the default exchange as destination", &amqp.ExchangeBind{Destination: "", Source: src}, &amqp.ExchangeUnbind{Destination: "", Source: src})
})

var _ = register("exchange.unbind.source/must-exist", func(t *T) {
	s, ch, _, dst := t.e2e()
	t.ExpectChannelClose(s, ch, &amqp.ExchangeUnbind{Destination: dst, Source: t.Name("missing")}, amqp.CodeNotFound)
})

var _ = register("exchange.unbind.source/default-exchange", func(t *T) {
	s, ch, _, dst := t.e2e()
	bindThenUnbind[*amqp.ExchangeBindOk, *amqp.ExchangeUnbindOk](t, s, ch, "binding to the default exchange as source", &amqp.ExchangeBind{Destination: dst, Source: ""}, &amqp.ExchangeUnbind{Destination: dst, Source: ""})
})
