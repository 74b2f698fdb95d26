package amqpraw_test

import (
	"context"
	"fmt"
	"time"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqpraw"
)

// A method on a channel that was never opened is a connection error: the
// broker answers with connection.close 504 CHANNEL_ERROR.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := amqpraw.DialURL(ctx, brokerURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	if err := s.Handshake(ctx, amqpraw.Handshake{}); err != nil {
		fmt.Println(err)
		return
	}

	// Channel 7 was never opened.
	if err := s.Send(ctx, 7, &amqp.QueueDeclare{Queue: "amqpraw-example", Exclusive: true}); err != nil {
		fmt.Println(err)
		return
	}
	within, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := s.ExpectConnectionClose(within, amqp.CodeChannelError)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(c.ReplyCode, c.ReplyCode.Hard())
	fmt.Println(s.ExpectClosed(within))
	// Output:
	// CHANNEL_ERROR true
	// <nil>
}
