package amqptest

import (
	"context"
	"testing"

	"github.com/amqp-go/amqp"
)

// expectContext bounds an Expect helper: the test's context and
// Options.ExpectTimeout.
func (c *Conn) expectContext(tb testing.TB) (context.Context, context.CancelFunc) {
	return context.WithTimeout(tb.Context(), c.srv.opts.timeout(tb))
}

// Expect reads the next command the client sent (as [Conn.ReadCommand]
// does, skipping heartbeats) and returns its channel and method, which
// must be an M. Otherwise, or if nothing comes within
// Options.ExpectTimeout, it ends the test with tb.Fatalf, saying what came
// instead. Like tb.Fatalf, it must be called from the test's goroutine.
//
//	ch, qd := amqptest.Expect[*amqp.QueueDeclare](t, sc)
//	sc.Send(ctx, ch, &amqp.QueueDeclareOk{Queue: qd.Queue})
//
// With M = amqp.Method it accepts any method. For basic.publish, whose
// content matters too, use [ExpectPublish].
func Expect[M amqp.Method](tb testing.TB, c *Conn) (channel uint16, m M) {
	tb.Helper()
	cmd := expectCommand[M](tb, c)
	return cmd.Channel, cmd.Method.(M)
}

func expectCommand[M amqp.Method](tb testing.TB, c *Conn) *Command {
	tb.Helper()
	ctx, cancel := c.expectContext(tb)
	defer cancel()
	want := methodName[M]()
	cmd, err := c.ReadCommand(ctx)
	if err != nil {
		tb.Fatalf("amqptest: %v: expected %s from the client: %v", c, want, err)
	}
	if _, ok := cmd.Method.(M); !ok {
		tb.Fatalf("amqptest: %v: expected %s from the client, got %v", c, want, cmd)
	}
	return cmd
}

// Publish is a basic.publish the client sent, with its content.
type Publish struct {
	Channel    uint16
	Method     *amqp.BasicPublish
	Properties amqp.Properties
	Body       []byte

	// ConfirmTag is the delivery tag that acknowledges the publish if its
	// channel is in confirm mode, 0 otherwise (see Command.ConfirmTag).
	ConfirmTag uint64
}

// ExpectPublish is [Expect] for basic.publish: it returns the method with
// its properties and body, and the tag to confirm it with.
//
//	pub := amqptest.ExpectPublish(t, sc)
//	if string(pub.Body) != "hello" { ... }
//	sc.Send(ctx, pub.Channel, &amqp.BasicAck{DeliveryTag: pub.ConfirmTag})
func ExpectPublish(tb testing.TB, c *Conn) *Publish {
	tb.Helper()
	cmd := expectCommand[*amqp.BasicPublish](tb, c)
	return &Publish{
		Channel:    cmd.Channel,
		Method:     cmd.Method.(*amqp.BasicPublish),
		Properties: cmd.Properties,
		Body:       cmd.Body,
		ConfirmTag: cmd.ConfirmTag,
	}
}
