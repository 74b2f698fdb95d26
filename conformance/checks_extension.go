package conformance

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
)

// RabbitMQ's extensions.

var _ = register("ext/capabilities", func(t *T) {
	s := t.Open()
	caps, _ := s.Start.ServerProperties["capabilities"].(amqp.Table)
	var missing []string
	for _, c := range []string{"publisher_confirms", "exchange_exchange_bindings", "basic.nack", "consumer_cancel_notify",
		"connection.blocked", "authentication_failure_close", "per_consumer_qos", "direct_reply_to"} {
		if v, _ := caps[c].(bool); !v {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		t.Fail("server-properties capabilities lack %s", strings.Join(missing, ", "))
	}
	t.Pass("server-properties announce all eight capabilities")
})

var _ = register("ext.confirm/select", func(t *T) {
	s, ch, q := t.FreshQueue()
	Call[*amqp.ConfirmSelectOk](t, s, ch, &amqp.ConfirmSelect{})
	for range 3 {
		t.Publish(s, ch, "", q, amqp.Properties{}, "m")
	}
	acked, nacked, _ := t.confirmed(s, ch, 3)
	if len(nacked) > 0 || !slices.Equal(acked, []uint64{1, 2, 3}) {
		t.Fail("three publishes: acked %v, nacked %v", acked, nacked)
	}
	t.Pass("confirm.select-ok; three publishes acknowledged as tags 1, 2, 3")
})

var _ = register("ext.confirm/nack", func(t *T) {
	s, ch := t.Fresh()
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q"), Arguments: amqp.Table{"x-max-length": int32(0), "x-overflow": "reject-publish"}})
	Call[*amqp.ConfirmSelectOk](t, s, ch, &amqp.ConfirmSelect{})
	t.Publish(s, ch, "", q, amqp.Properties{}, "no room")
	acked, nacked, _ := t.confirmed(s, ch, 1)
	if len(nacked) != 1 {
		t.Fail("a publish to a full queue with x-overflow reject-publish: acked %v", acked)
	}
	t.Pass("a publish to a full queue with x-overflow reject-publish: basic.nack")
})

var _ = register("ext.basic.nack/multiple", func(t *T) {
	s, ch, q := t.FreshQueue()
	for range 3 {
		t.Publish(s, ch, "", q, amqp.Properties{}, "m")
	}
	t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	var last uint64
	for range 3 {
		last = deliveryTag(t.Next(s, ch, "a delivery"))
	}
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.BasicNack{DeliveryTag: last, Multiple: true, Requeue: true}), "basic.nack")
	for i := range 3 {
		if !redelivered(t.Next(s, ch, "a requeued delivery")) {
			t.Fail("requeued delivery %d is not flagged redelivered", i+1)
		}
	}
	t.Pass("basic.nack multiple requeue: the three deliveries came back, redelivered")
})

var _ = register("ext.consumer-cancel-notify/queue-deleted", func(t *T) {
	s, ch, q := t.FreshQueue()
	tag := t.Consume(s, ch, amqp.BasicConsume{Queue: q})
	other := t.Channel(s)
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, other, &amqp.QueueDelete{Queue: q}), "queue.delete")
	// The cancel and the delete-ok travel on different channels, in either order.
	var cancelled *amqp.BasicCancel
	for deleted := false; cancelled == nil || !deleted; {
		cmd, err := s.ReadCommand(ctx)
		if err != nil {
			t.Fail("after deleting the consumer's queue: %v", brief(err))
		}
		switch m := cmd.Method.(type) {
		case *amqp.QueueDeleteOk:
			deleted = true
		case *amqp.BasicCancel:
			if cmd.Channel != ch || m.ConsumerTag != tag {
				t.Fail("basic.cancel for tag %q on channel %d, want %q on %d", m.ConsumerTag, cmd.Channel, tag, ch)
			}
			cancelled = m
		default:
			t.Fail("after deleting the consumer's queue: %v", cmd)
		}
	}
	t.Pass("deleting the queue sent basic.cancel for the consumer's tag")
})

var _ = register("ext.e2e/routing", func(t *T) {
	s, ch, src, dst := t.e2e()
	q := t.Declare(s, ch, amqp.QueueDeclare{Queue: t.Name("q")})
	Call[*amqp.QueueBindOk](t, s, ch, &amqp.QueueBind{Queue: q, Exchange: dst})
	Call[*amqp.ExchangeBindOk](t, s, ch, &amqp.ExchangeBind{Destination: dst, Source: src})
	t.Publish(s, ch, src, "", amqp.Properties{}, "through two exchanges")
	if m := t.Get(s, ch, q); m == nil {
		t.Fail("a message published to the source exchange did not reach the destination's queue")
	}
	t.Pass("a message published to the source reached the queue bound to the destination")
})

var _ = register("ext.direct-reply-to/rpc", func(t *T) {
	s, ch, q := t.FreshQueue()
	t.Consume(s, ch, amqp.BasicConsume{Queue: "amq.rabbitmq.reply-to", NoAck: true})
	t.Publish(s, ch, "", q, amqp.Properties{ReplyTo: "amq.rabbitmq.reply-to"}, "request")
	server := t.Channel(s)
	req := t.Get(s, server, q)
	if req == nil {
		t.Fail("the request did not arrive")
	}
	replyTo := req.Properties.ReplyTo
	if !strings.HasPrefix(replyTo, "amq.rabbitmq.reply-to.") {
		t.Fail("the request's reply_to is %q, not a name the broker made", replyTo)
	}
	t.Publish(s, server, "", replyTo, amqp.Properties{}, "reply")
	if m := t.Next(s, ch, "the reply"); string(m.Body) != "reply" {
		t.Fail("the reply consumer got %q", m.Body)
	}
	t.Pass("a reply published to %s... reached the amq.rabbitmq.reply-to consumer", replyTo[:len("amq.rabbitmq.reply-to.")])
})

var _ = register("ext.update-secret/ok", func(t *T) {
	s := t.Open()
	ExpectReply[*amqp.ConnectionUpdateSecretOk](t, s, 0, &amqp.ConnectionUpdateSecret{NewSecret: first(t.run.handshake.Password, "guest"), Reason: "conformance check"})
})

var _ = register("ext.authentication-failure-close/refused", func(t *T) {
	s := t.Dial()
	ctx, cancel := t.step()
	defer cancel()
	err := s.Handshake(ctx, amqpraw.Handshake{Password: t.run.prefix + "-wrong-password"})
	var ue *amqpraw.UnexpectedError
	if err == nil {
		t.Fail("a wrong password was accepted")
	}
	if errors.As(err, &ue) {
		if c, ok := ue.Method.(*amqp.ConnectionClose); ok && c.ReplyCode == amqp.CodeAccessRefused {
			_ = s.Send(ctx, 0, &amqp.ConnectionCloseOk{})
			t.Pass("a wrong password: connection.close %d %s", c.ReplyCode, c.ReplyText)
		}
	}
	t.Fail("a wrong password: %v", brief(err))
})

var _ = register("ext.per-consumer-qos/prefetch", func(t *T) {
	s, ch, q := t.FreshQueue()
	for range 4 {
		t.Publish(s, ch, "", q, amqp.Properties{}, "m")
	}
	Call[*amqp.BasicQosOk](t, s, ch, &amqp.BasicQos{PrefetchCount: 1})
	ctx, cancel := t.step()
	defer cancel()
	t.Must(s.Send(ctx, ch, &amqp.BasicConsume{Queue: q, ConsumerTag: "a"}), "basic.consume")
	t.Must(s.Send(ctx, ch, &amqp.BasicConsume{Queue: q, ConsumerTag: "b"}), "basic.consume")
	// Deliveries to the first consumer may come before the second's
	// consume-ok: wait for both consume-oks and a delivery to each, then
	// make sure nothing more comes.
	got, oks := map[string]int{}, 0
	for oks < 2 || got["a"] == 0 || got["b"] == 0 {
		cmd, err := s.ReadCommand(ctx)
		if err != nil {
			t.Fail("two consumers with prefetch-count 1: %d consume-ok, deliveries %v, then %v", oks, got, brief(err))
		}
		switch m := cmd.Method.(type) {
		case *amqp.BasicConsumeOk:
			oks++
		case *amqp.BasicDeliver:
			got[m.ConsumerTag]++
		default:
			t.Fail("while consuming: %v", cmd)
		}
		if got["a"] > 1 || got["b"] > 1 {
			t.Fail("prefetch-count 1 with global unset: a consumer got a second unacknowledged delivery: %v", got)
		}
	}
	if extra := t.Quiet(s); extra != nil {
		t.Fail("prefetch-count 1 with global unset, one delivery to each consumer, then: %v", extra)
	}
	t.Pass("prefetch-count 1 with global unset: one unacknowledged delivery for each of two consumers")
})

var _ = registerNeeds("ext.connection.blocked/alarm", needsAlarm, 60*time.Second, func(t *T) {
	s, ch, q := t.FreshQueue()
	t.RaiseAlarm()
	blocked := t.publishUntil(s, ch, q, func(m amqp.Method) bool { _, ok := m.(*amqp.ConnectionBlocked); return ok })
	t.ClearAlarm()
	ctx, cancel := t.step()
	defer cancel()
	if _, err := amqpraw.Expect[*amqp.ConnectionUnblocked](ctx, s, 0); err != nil {
		t.Fail("after the alarm cleared: %v", brief(err))
	}
	t.Pass("connection.blocked %q during the alarm, connection.unblocked after", blocked.(*amqp.ConnectionBlocked).Reason)
})

// publishUntil publishes to q every 200 ms until a method that stop
// accepts arrives (acks in between are fine), and returns it.
func (t *T) publishUntil(s *amqpraw.Session, ch uint16, q string, stop func(amqp.Method) bool) amqp.Method {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		t.Publish(s, ch, "", q, amqp.Properties{DeliveryMode: 2}, "during the alarm")
		t.seqPublished++
		ctx, cancel := context.WithTimeout(t.ctx, 200*time.Millisecond)
		for {
			cmd, err := s.ReadCommand(ctx)
			if errors.Is(err, context.DeadlineExceeded) {
				break
			}
			if err != nil {
				cancel()
				t.Fail("during the alarm: %v", brief(err))
			}
			if stop(cmd.Method) {
				cancel()
				return cmd.Method
			}
			if _, ack := cmd.Method.(*amqp.BasicAck); !ack {
				cancel()
				t.Fail("during the alarm: %v", cmd)
			}
		}
		cancel()
	}
	t.Fail("nothing within 20 s of publishing during a resource alarm")
	return nil
}
