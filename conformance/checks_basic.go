package conformance

import (
	"fmt"
	"slices"
	"strings"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
)

// The rules of the basic, tx and confirm classes.

// bodies collects the bodies of n deliveries on ch.
func (t *T) bodies(s *amqpraw.Session, ch uint16, n int, what string) []string {
	var got []string
	for range n {
		got = append(got, string(t.Next(s, ch, what).Body))
	}
	return got
}

var _ = register("basic/06", func(t *T) {
	s, ch, q := t.FreshQueue()
	for i := range 5 {
		t.Publish(s, ch, "", q, amqp.Properties{Priority: 0}, fmt.Sprint("p0-", i))
	}
	t.Publish(s, ch, "", q, amqp.Properties{Priority: 9}, "p9")
	t.Sync(s, ch)
	t.Consume(s, ch, amqp.BasicConsume{Queue: q, NoAck: true})
	if got := t.bodies(s, ch, 6, "a delivery"); got[0] != "p9" {
		t.Fail("five priority-0 messages then one of priority 9 came back in the order %v", got)
	}
	t.Pass("the priority-9 message came first")
})

var _ = register("basic/07", func(t *T) {
	s, ch, q := t.FreshQueue()
	for p := range uint8(10) {
		t.Publish(s, ch, "", q, amqp.Properties{Priority: p}, fmt.Sprint(p))
	}
	t.Sync(s, ch)
	t.Consume(s, ch, amqp.BasicConsume{Queue: q, NoAck: true})
	got := t.bodies(s, ch, 10, "a delivery")
	// Levels seen: runs of the published (ascending) order that come back reversed.
	levels := 1
	for i := 1; i < len(got); i++ {
		if got[i] < got[i-1] {
			levels++
		}
	}
	if levels == 1 {
		t.Pass("priorities 0 to 9 published low to high came back %v: one level (up to 10 levels is optional)", got)
	}
	t.Pass("priorities 0 to 9 published low to high came back %v: %d levels", got, levels)
})

var _ = register("basic/08", func(t *T) {
	s, ch := t.Fresh()
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Durable: true})
	var want []string
	for i := range 6 {
		mode := uint8(1 + i%2) // transient, persistent, ...
		t.Publish(s, ch, "", q, amqp.Properties{DeliveryMode: mode}, fmt.Sprint(i))
		want = append(want, fmt.Sprint(i))
	}
	t.Sync(s, ch)
	t.Consume(s, ch, amqp.BasicConsume{Queue: q, NoAck: true})
	if got := t.bodies(s, ch, 6, "a delivery"); !slices.Equal(got, want) {
		t.Fail("messages alternating transient and persistent came back in the order %v", got)
	}
	t.Pass("messages alternating transient and persistent came back in order")
})

var _ = register("basic/09", func(t *T) {
	s, ch, q := t.FreshQueue("m")
	t.Consume(s, ch, amqp.BasicConsume{Queue: q, NoAck: true})
	t.Next(s, ch, "a no-ack delivery")
	if ok := Call[*amqp.QueueDeclareOk](t, s, ch, &amqp.QueueDeclare{Queue: q, Passive: true}); ok.MessageCount != 0 {
		t.Fail("after a no-ack delivery the queue still counts %d messages", ok.MessageCount)
	}
	t.Pass("a no-ack consumer received the message and the queue is empty")
})

var _ = register("basic/10", func(t *T) {
	s, ch, q := t.FreshQueue()
	for i := range 4 {
		t.Publish(s, ch, "", q, amqp.Properties{}, fmt.Sprint(i))
	}
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	ctx, cancel := t.step()
	defer cancel()
	for i := range 4 {
		m := t.Next(s, ch, "a delivery")
		if i%2 == 0 {
			t.Must(s.Send(ctx, ch, &amqp.BasicAck{DeliveryTag: deliveryTag(m)}), "basic.ack")
		}
	}
	t.Sync(s, ch)
	closePolitely(ctx, s)
	s2, ch2 := t.Fresh()
	t.Consume(s2, ch2, amqp.BasicConsume{Queue: q, NoAck: true})
	got := t.bodies(s2, ch2, 2, "after reconnecting")
	slices.Sort(got)
	if !slices.Equal(got, []string{"1", "3"}) {
		t.Fail("after acknowledging 0 and 2 of 4 and reconnecting, got %v", got)
	}
	if extra := t.Quiet(s2); extra != nil {
		t.Fail("after the two unacknowledged messages: %v", extra)
	}
	t.Pass("acknowledged 2 of 4; after reconnecting exactly the other 2 came back")
})

var _ = register("basic.qos.prefetch-size/01", func(t *T) {
	s, ch, q := t.FreshQueue()
	ctx, cancel := t.step()
	defer cancel()
	if _, err := amqpraw.Call[*amqp.BasicQosOk](ctx, s, ch, &amqp.BasicQos{PrefetchSize: 10}); err != nil {
		t.Fail("basic.qos prefetch-size 10: %v", brief(err))
	}
	t.Publish(s, ch, "", q, amqp.Properties{}, strings.Repeat("x", 100))
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	t.Next(s, ch, "a 100-byte message with prefetch-size 10")
	t.Pass("with prefetch-size 10, a 100-byte message was delivered")
})

var _ = register("basic.qos.prefetch-count/01", func(t *T) {
	s, ch, q := t.FreshQueue()
	for i := range 5 {
		t.Publish(s, ch, "", q, amqp.Properties{}, fmt.Sprint(i))
	}
	Call[*amqp.BasicQosOk](t, s, ch, &amqp.BasicQos{PrefetchCount: 2})
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	first := t.Next(s, ch, "delivery 1")
	t.Next(s, ch, "delivery 2")
	if extra := t.Quiet(s); extra != nil {
		t.Fail("with prefetch-count 2 and nothing acknowledged, a third: %v", extra)
	}
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.BasicAck{DeliveryTag: deliveryTag(first)}), "basic.ack")
	t.Next(s, ch, "delivery 3, after one ack")
	if extra := t.Quiet(s); extra != nil {
		t.Fail("with prefetch-count 2 and one acknowledged, a fourth: %v", extra)
	}
	t.Pass("prefetch-count 2: two deliveries, then one per acknowledgement")
})

var _ = register("basic.consume/01", func(t *T) {
	s, ch, q := t.FreshQueue()
	for range 16 {
		t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	}
	t.Pass("16 consumers on one queue (the suite stops there: the broker is shared)")
})

var _ = register("basic.consume.consumer-tag/01", func(t *T) {
	s, ch, q := t.FreshQueue()
	t.Consume(s, ch, amqp.BasicConsume{Queue: q, ConsumerTag: "twice"})
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.BasicConsume{Queue: q, ConsumerTag: "twice"}), "basic.consume")
	t.expectFatal(s, "a second consumer with the same tag on the channel", amqp.CodeNotAllowed)
})

var _ = register("basic.consume.consumer-tag/02", func(t *T) {
	s, ch := t.Fresh()
	other := t.Channel(s)
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q")})
	tag1 := t.Consume(s, ch, amqp.BasicConsume{Queue: q, NoAck: true})
	tag2 := t.Consume(s, other, amqp.BasicConsume{Queue: t.Declare(s, other, amqp.QueueDeclare{Exclusive: true}), NoAck: true})
	if tag1 == tag2 {
		t.Fail("server-generated consumer tags on two channels are both %q", tag1)
	}
	// Use channel 1's tag on channel 2: the consumer on channel 1 must not be touched.
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, other, &amqp.BasicCancel{ConsumerTag: tag1}), "basic.cancel")
	cmd, err := s.ReadCommand(ctx)
	if err != nil {
		t.Fail("basic.cancel of channel %d's tag on channel %d: %v", ch, other, brief(err))
	}
	t.Publish(s, other, "", q, amqp.Properties{}, "still consumed")
	t.Next(s, ch, "a delivery to the consumer on channel 1 after its tag was cancelled on channel 2")
	t.Pass("tags %q and %q; cancelling channel %d's tag on channel %d (%s) left its consumer running", tag1, tag2, ch, other, cmd.Method.MethodName())
})

var _ = register("basic.consume.exclusive/01", func(t *T) {
	s, ch, q := t.FreshQueue()
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	s2, ch2 := t.Fresh()
	t.ExpectChannelClose(s2, ch2, &amqp.BasicConsume{Queue: q, Exclusive: true}, amqp.CodeAccessRefused)
})

// noCancelNotify is a handshake whose client does not announce
// consumer_cancel_notify.
func noCancelNotify() amqpraw.Handshake {
	props := amqpraw.DefaultClientProperties()
	caps := props["capabilities"].(amqp.Table)
	delete(caps, "consumer_cancel_notify")
	return amqpraw.Handshake{ClientProperties: props}
}

var _ = register("basic.cancel/01", func(t *T) {
	s := t.OpenWith(noCancelNotify())
	ch := t.Channel(s)
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q")})
	tag := t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	other := t.Channel(s)
	Call[*amqp.QueueDeleteOk](t, s, other, &amqp.QueueDelete{Queue: q})
	ExpectReply[*amqp.BasicCancelOk](t, s, ch, &amqp.BasicCancel{ConsumerTag: tag})
})

// publishFails publishes and expects the channel closed with code.
func (t *T) publishFails(s *amqpraw.Session, ch uint16, exchange string, code amqp.ReplyCode, what string) {
	t.Publish(s, ch, exchange, "k", amqp.Properties{}, "m")
	ctx, cancel := t.step()
	defer cancel()
	c, err := s.ExpectChannelClose(ctx, ch, code)
	if err != nil {
		t.Fail("%s: %v", what, brief(err))
	}
	t.Pass("%s: channel.close %d %s", what, c.ReplyCode, c.ReplyText)
}

var _ = register("basic.publish.exchange/must-exist", func(t *T) {
	s, ch := t.Fresh()
	t.publishFails(s, ch, t.Name("missing"), amqp.CodeNotFound, "basic.publish to an exchange that does not exist")
})

var _ = register("basic.publish.exchange/default-exchange", func(t *T) {
	s, ch, q := t.FreshQueue("m")
	if t.Get(s, ch, q) == nil {
		t.Fail("basic.publish to \"\" with the queue's name: nothing arrived")
	}
	t.Pass("basic.publish to \"\" reached the queue named by the routing key")
})

var _ = register("basic.publish.exchange/02", func(t *T) {
	s, ch := t.Fresh()
	x := t.Name("x")
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: x, Type: "fanout", Internal: true})
	t.publishFails(s, ch, x, amqp.CodeAccessRefused, "basic.publish to an internal exchange")
})

var _ = register("basic.publish.exchange/03", func(t *T) {
	s, ch, q := t.FreshQueue()
	Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: "amq.direct", RoutingKey: q})
	t.Publish(s, ch, "amq.direct", q, amqp.Properties{}, "m")
	if err := t.Sync(s, ch); err != nil {
		ctx, cancel := t.step()
		defer cancel()
		if c, e := s.ExpectChannelClose(ctx, ch, amqp.CodeNotImplemented); e == nil {
			t.Pass("the exchange refuses basic content: channel.close %d %s", c.ReplyCode, c.ReplyText)
		}
		t.Fail("basic content refused otherwise than with 540: %v", brief(err))
	}
	t.Pass("amq.direct accepts basic content (refusing it is optional)")
})

var _ = register("basic.publish.mandatory/01", func(t *T) {
	s, ch := t.Fresh()
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.SendContent(ctx, ch, &amqp.BasicPublish{Exchange: "amq.direct", RoutingKey: t.Name("nobody"), Mandatory: true}, amqp.Properties{}, []byte("m")), "basic.publish")
	cmd, err := amqpraw.ExpectCommand[*amqp.BasicReturn](ctx, s, ch)
	if err != nil {
		t.Fail("an unroutable mandatory publish: %v", brief(err))
	}
	r := cmd.Method.(*amqp.BasicReturn)
	if r.ReplyCode != amqp.CodeNoRoute || string(cmd.Body) != "m" {
		t.Fail("an unroutable mandatory publish: basic.return %d %s with body %q", r.ReplyCode, r.ReplyText, cmd.Body)
	}
	t.Pass("an unroutable mandatory publish came back: basic.return %d %s with its body", r.ReplyCode, r.ReplyText)
})

var _ = register("basic.publish.immediate/01", func(t *T) {
	s, ch, q := t.FreshQueue()
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.SendContent(ctx, ch, &amqp.BasicPublish{RoutingKey: q, Immediate: true}, amqp.Properties{}, []byte("m")), "basic.publish")
	cmd, err := s.ReadCommand(ctx)
	if err != nil {
		t.Fail("an immediate publish to a queue without consumers: %v", brief(err))
	}
	if r, ok := cmd.Method.(*amqp.BasicReturn); ok && r.ReplyCode == amqp.CodeNoConsumers {
		t.Pass("an immediate publish to a queue without consumers: basic.return %d %s", r.ReplyCode, r.ReplyText)
	}
	if _, ok := cmd.Method.(*amqp.ConnectionClose); ok {
		_ = s.Send(ctx, 0, &amqp.ConnectionCloseOk{})
	}
	t.Fail("an immediate publish to a queue without consumers: %v", cmd)
})

var _ = register("basic.deliver/01", func(t *T) {
	s, ch, q := t.FreshQueue("poison")
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	ctx, cancel := t.step()
	defer cancel()
	for i := range 5 {
		m := t.Next(s, ch, fmt.Sprintf("delivery %d", i+1))
		if i > 0 && string(m.Body) != "poison" {
			t.Fail("delivery %d: %q", i+1, m.Body)
		}
		t.Must(s.Send(ctx, ch, rejectRequeue(deliveryTag(m))), "basic.reject")
	}
	// A fence: whatever comes first, the poison or the fence, decides.
	t.Publish(s, ch, "", q, amqp.Properties{}, "fence")
	if m := t.Next(s, ch, "after 5 rejections"); string(m.Body) != "fence" {
		t.Fail("after 5 deliveries rejected with requeue, the message is delivered a 6th time (before a message published after the rejections): %v", m)
	}
	t.Pass("after 5 rejected deliveries the message was not delivered again: a message published after came first")
})

func rejectRequeue(tag uint64) amqp.Method { return &amqp.BasicReject{DeliveryTag: tag, Requeue: true} }

func nackRequeue(tag uint64) amqp.Method { return &amqp.BasicNack{DeliveryTag: tag, Requeue: true} }

// settleTwice settles a delivery twice with m and expects 406.
func (t *T) settleTwice(what string, settle func(tag uint64) amqp.Method) {
	s, ch, q := t.FreshQueue("m")
	m := t.GetUnacked(s, ch, q)
	if m == nil {
		t.Fail("basic.get: the queue is empty")
	}
	ctx, cancel := t.step()
	defer cancel()
	tag := deliveryTag(m)
	t.Must(s.Send(ctx, ch, settle(tag)), what)
	t.Must(s.Send(ctx, ch, settle(tag)), what)
	c, err := s.ExpectChannelClose(ctx, ch, amqp.CodePreconditionFailed)
	if err != nil {
		t.Fail("%s of the same delivery twice: %v", what, brief(err))
	}
	// On a transacted channel, at once, not at commit.
	tx := t.Channel(s)
	Call[*amqp.TxSelectOk](t, s, tx, &amqp.TxSelect{})
	t.Must(s.Send(ctx, tx, settle(99)), what)
	c2, err := s.ExpectChannelClose(ctx, tx, amqp.CodePreconditionFailed)
	if err != nil {
		t.Fail("%s of tag 99, never delivered, on a transacted channel: %v", what, brief(err))
	}
	t.Pass("twice: channel.close %d %s; an unknown tag in a transaction, before commit: channel.close %d", c.ReplyCode, c.ReplyText, c2.ReplyCode)
}

var _ = register("basic.ack.multiple/exists", func(t *T) {
	t.settleTwice("basic.ack", func(tag uint64) amqp.Method { return &amqp.BasicAck{DeliveryTag: tag} })
})

var _ = register("basic.nack.multiple/exists", func(t *T) {
	t.settleTwice("basic.nack", func(tag uint64) amqp.Method { return &amqp.BasicNack{DeliveryTag: tag} })
})

// requeueComesBack settles a delivery with requeue and expects it back.
func (t *T) requeueComesBack(what string, settle func(tag uint64) amqp.Method) {
	s, ch, q := t.FreshQueue("m")
	m := t.GetUnacked(s, ch, q)
	if m == nil {
		t.Fail("basic.get: the queue is empty")
	}
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, settle(deliveryTag(m))), what)
	again := t.Get(s, ch, q)
	if again == nil || !redelivered(again) {
		t.Fail("after %s with requeue: %v", what, again)
	}
	t.Pass("after %s with requeue the message was available again, flagged redelivered", what)
}

var _ = register("basic.reject/02", func(t *T) {
	t.requeueComesBack("basic.reject", rejectRequeue)
})

var _ = register("basic.nack/02", func(t *T) {
	t.requeueComesBack("basic.nack", nackRequeue)
})

// notBackToSender settles a consumer's delivery with requeue and expects
// it not to come back to the same consumer on the same channel.
func (t *T) notBackToSender(what string, settle func(tag uint64) amqp.Method) {
	s, ch, q := t.FreshQueue("m")
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	m := t.Next(s, ch, "the delivery")
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, settle(deliveryTag(m))), what)
	// A fence: whatever comes first, the settled message or the fence, decides.
	t.Publish(s, ch, "", q, amqp.Properties{}, "fence")
	if next := t.Next(s, ch, "after "+what); string(next.Body) != "fence" {
		t.Fail("after %s with requeue, the only consumer on the channel got it again (before a message published after the %s): %v", what, what, next)
	}
	t.Pass("after %s with requeue, the message was not delivered to the same consumer: a message published after came first", what)
}

var _ = register("basic.reject.requeue/01", func(t *T) {
	t.notBackToSender("basic.reject", rejectRequeue)
})

var _ = register("basic.nack.requeue/01", func(t *T) {
	t.notBackToSender("basic.nack", nackRequeue)
})

// recoverRedelivers has the consumer's unacknowledged delivery resent by
// m and checks the redelivered flag.
func (t *T) recoverRedelivers(m amqp.Method) {
	_, reply := m.(*amqp.BasicRecover) // basic.recover-async has no reply
	s, ch, q := t.FreshQueue("m")
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	t.Next(s, ch, "the first delivery")
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, m), m.MethodName())
	var again *amqpraw.Command
	for again == nil {
		cmd, err := s.ReadCommand(ctx)
		if err != nil {
			t.Fail("after %s: %v", m.MethodName(), brief(err))
		}
		switch cmd.Method.(type) {
		case *amqp.BasicRecoverOk:
			if !reply {
				t.Fail("basic.recover-async answered with recover-ok")
			}
		case *amqp.BasicDeliver:
			again = cmd
		default:
			t.Fail("after %s: %v", m.MethodName(), cmd)
		}
	}
	if !redelivered(again) {
		t.Fail("the message resent after %s is not flagged redelivered", m.MethodName())
	}
	t.Pass("the message resent after %s is flagged redelivered", m.MethodName())
}

var _ = register("basic.recover-async/01", func(t *T) { t.recoverRedelivers(&amqp.BasicRecoverAsync{Requeue: true}) })

var _ = register("basic.recover/01", func(t *T) { t.recoverRedelivers(&amqp.BasicRecover{Requeue: true}) })

var _ = register("tx.commit/transacted", func(t *T) {
	s, ch := t.Fresh()
	t.ExpectChannelClose(s, ch, &amqp.TxCommit{}, amqp.CodePreconditionFailed)
})

var _ = register("tx.rollback/transacted", func(t *T) {
	s, ch := t.Fresh()
	t.ExpectChannelClose(s, ch, &amqp.TxRollback{}, amqp.CodePreconditionFailed)
})

// confirmed collects acks and nacks on ch until every tag from 1 to n is
// settled (in any order: a broker may confirm unroutable publishes first),
// returning the tags sorted and what else came in between.
func (t *T) confirmed(s *amqpraw.Session, ch uint16, n uint64) (acked, nacked []uint64, others []*amqpraw.Command) {
	ctx, cancel := t.step()
	defer cancel()
	settled := map[uint64]bool{}
	settle := func(tag uint64, multiple bool, into *[]uint64) {
		lo := tag
		if multiple {
			lo = 1
		}
		for x := lo; x <= tag; x++ {
			if !settled[x] {
				settled[x] = true
				*into = append(*into, x)
			}
		}
	}
	for uint64(len(settled)) < n {
		cmd, err := s.ReadCommand(ctx)
		if err != nil {
			t.Fail("waiting for confirms of %d publishes (%d settled): %v", n, len(settled), brief(err))
		}
		switch m := cmd.Method.(type) {
		case *amqp.BasicAck:
			settle(m.DeliveryTag, m.Multiple, &acked)
		case *amqp.BasicNack:
			settle(m.DeliveryTag, m.Multiple, &nacked)
		default:
			others = append(others, cmd)
		}
	}
	slices.Sort(acked)
	slices.Sort(nacked)
	return acked, nacked, others
}

var _ = register("confirm/all messages acknowledged", func(t *T) {
	s, ch, q := t.FreshQueue()
	Call[*amqp.ConfirmSelectOk](t, s, ch, &amqp.ConfirmSelect{})
	for i := range 5 {
		key := q
		if i%2 == 1 {
			key = t.Name("nobody") // unroutable, not mandatory: acked too
		}
		t.Publish(s, ch, "", key, amqp.Properties{}, "m")
	}
	acked, nacked, _ := t.confirmed(s, ch, 5)
	if len(nacked) > 0 || !slices.Equal(acked, []uint64{1, 2, 3, 4, 5}) {
		t.Fail("five publishes: acked %v, nacked %v", acked, nacked)
	}
	t.Pass("five publishes (two unroutable) acknowledged as tags 1 to 5")
})

var _ = register("confirm/all queues", func(t *T) {
	s, ch := t.Fresh()
	x := t.Name("x")
	t.ExchangeDeclare(s, ch, amqp.ExchangeDeclare{Exchange: x, Type: "fanout"})
	q1 := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Durable: true})
	q2 := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Durable: true})
	Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q1, Exchange: x})
	Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q2, Exchange: x})
	Call[*amqp.ConfirmSelectOk](t, s, ch, &amqp.ConfirmSelect{})
	t.Publish(s, ch, x, "", amqp.Properties{DeliveryMode: 2}, "both")
	if acked, nacked, _ := t.confirmed(s, ch, 1); len(acked) != 1 {
		t.Fail("a persistent publish to two durable queues: nacked %v", nacked)
	}
	for _, q := range []string{q1, q2} {
		if t.Get(s, ch, q) == nil {
			t.Fail("acknowledged, but queue %s does not hold the message", q)
		}
	}
	t.Pass("acknowledged once both durable queues held the persistent message")
})

var _ = register("confirm/unroutable messages", func(t *T) {
	s, ch := t.Fresh()
	Call[*amqp.ConfirmSelectOk](t, s, ch, &amqp.ConfirmSelect{})
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.SendContent(ctx, ch, &amqp.BasicPublish{Exchange: "amq.direct", RoutingKey: t.Name("nobody"), Mandatory: true}, amqp.Properties{}, []byte("m")), "basic.publish")
	acked, _, others := t.confirmed(s, ch, 1)
	if len(others) == 0 {
		t.Fail("an unroutable mandatory publish was acknowledged (%v) with no basic.return before", acked)
	}
	if _, ok := others[0].Method.(*amqp.BasicReturn); !ok {
		t.Fail("before the acknowledgement: %v", others[0])
	}
	t.Pass("basic.return, then basic.ack")
})
