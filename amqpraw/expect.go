package amqpraw

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/amqp-go/amqp"
)

// UnexpectedError says what an Expect helper wanted and what the broker
// did instead.
type UnexpectedError struct {
	Want string // "queue.declare-ok on channel 1"
	Got  string // "ch1 channel.close 404 NOT_FOUND - ...", "the broker closed the connection", "nothing within 2s"

	// Method is what came instead, when it was a method (a close, mostly).
	Method amqp.Method
}

func (e *UnexpectedError) Error() string {
	return fmt.Sprintf("amqpraw: expected %s, got %s", e.Want, e.Got)
}

// unexpected turns a read error or an unwanted command into an
// *UnexpectedError.
func unexpected(ctx context.Context, want string, cmd *Command, err error) error {
	var ue *UnexpectedError
	switch {
	case errors.As(err, &ue):
		return &UnexpectedError{Want: want, Got: ue.Got, Method: ue.Method}
	case errors.Is(err, ErrClosedByPeer):
		return &UnexpectedError{Want: want, Got: "the broker closed the connection"}
	case errors.Is(err, context.DeadlineExceeded):
		return &UnexpectedError{Want: want, Got: "nothing" + within(ctx)}
	case err != nil:
		return &UnexpectedError{Want: want, Got: err.Error()}
	}
	return &UnexpectedError{Want: want, Got: cmd.String(), Method: cmd.Method}
}

func within(ctx context.Context) string {
	if v, ok := ctx.Value(startKey{}).(time.Time); ok {
		return fmt.Sprintf(" within %s", time.Since(v).Round(100*time.Millisecond))
	}
	return " before the deadline"
}

type startKey struct{}

// ExpectCommand reads the next command (as [Session.ReadCommand] does) and
// returns it if it is an M on channel ch; otherwise it returns an
// *UnexpectedError saying what came instead.
func ExpectCommand[M amqp.Method](ctx context.Context, s *Session, ch uint16) (*Command, error) {
	ctx = context.WithValue(ctx, startKey{}, time.Now())
	want := fmt.Sprintf("%s on channel %d", methodName[M](), ch)
	cmd, err := s.ReadCommand(ctx)
	if err != nil {
		return nil, unexpected(ctx, want, nil, err)
	}
	if _, ok := cmd.Method.(M); !ok || cmd.Channel != ch {
		return nil, unexpected(ctx, want, cmd, nil)
	}
	return cmd, nil
}

// Expect is [ExpectCommand] for the method alone:
//
//	ok, err := amqpraw.Expect[*amqp.QueueDeclareOk](ctx, s, 1)
func Expect[M amqp.Method](ctx context.Context, s *Session, ch uint16) (M, error) {
	cmd, err := ExpectCommand[M](ctx, s, ch)
	if err != nil {
		var zero M
		return zero, err
	}
	return cmd.Method.(M), nil
}

// Call sends m on channel ch and expects the reply R on that channel.
func Call[R amqp.Method](ctx context.Context, s *Session, ch uint16, m amqp.Method) (R, error) {
	if err := s.Send(ctx, ch, m); err != nil {
		var zero R
		return zero, err
	}
	return Expect[R](ctx, s, ch)
}

func methodName[M amqp.Method]() string {
	var m M
	if any(m) == nil {
		return "a method" // M is amqp.Method itself
	}
	return m.MethodName() // generated methods need no receiver state
}

// ExpectChannelClose expects channel.close on channel ch with the reply
// code want (0: any code) and answers it with channel.close-ok, as the
// protocol requires, so that the channel number can be opened again.
func (s *Session) ExpectChannelClose(ctx context.Context, ch uint16, want amqp.ReplyCode) (*amqp.ChannelClose, error) {
	label := fmt.Sprintf("channel.close %d %s on channel %d", want, want, ch)
	if want == 0 {
		label = fmt.Sprintf("channel.close on channel %d", ch)
	}
	c, err := Expect[*amqp.ChannelClose](ctx, s, ch)
	if err != nil {
		var ue *UnexpectedError
		if errors.As(err, &ue) {
			ue.Want = label
		}
		return nil, err
	}
	if err := s.Send(ctx, ch, &amqp.ChannelCloseOk{}); err != nil {
		return c, err
	}
	if want != 0 && c.ReplyCode != want {
		return c, &UnexpectedError{Want: label, Got: fmt.Sprintf("ch%d %s", ch, DescribeMethod(c)), Method: c}
	}
	return c, nil
}

// ExpectConnectionClose expects connection.close with the reply code want
// (0: any code) and answers it with connection.close-ok.
func (s *Session) ExpectConnectionClose(ctx context.Context, want amqp.ReplyCode) (*amqp.ConnectionClose, error) {
	label := fmt.Sprintf("connection.close %d %s", want, want)
	if want == 0 {
		label = "connection.close"
	}
	c, err := Expect[*amqp.ConnectionClose](ctx, s, 0)
	if err != nil {
		var ue *UnexpectedError
		if errors.As(err, &ue) {
			ue.Want = label
		}
		return nil, err
	}
	_ = s.Send(ctx, 0, &amqp.ConnectionCloseOk{}) // the broker may have gone already
	if want != 0 && c.ReplyCode != want {
		return c, &UnexpectedError{Want: label, Got: DescribeMethod(c), Method: c}
	}
	return c, nil
}

// ExpectProtocolHeader expects the broker's protocol header, which it
// sends when it refuses the one it was sent.
func (s *Session) ExpectProtocolHeader(ctx context.Context) ([8]byte, error) {
	ctx = context.WithValue(ctx, startKey{}, time.Now())
	s.rmu.Lock()
	defer s.rmu.Unlock()
	ev, err := s.next(ctx)
	if err != nil {
		return [8]byte{}, unexpected(ctx, "a protocol header", nil, err)
	}
	if ev.header == nil {
		return [8]byte{}, &UnexpectedError{Want: "a protocol header", Got: describeFrame(ev.frame)}
	}
	return [8]byte(ev.header), nil
}

// ExpectClosed expects the broker to close the connection without sending
// anything more: the first frame that comes instead is an
// *UnexpectedError.
func (s *Session) ExpectClosed(ctx context.Context) error {
	ctx = context.WithValue(ctx, startKey{}, time.Now())
	s.rmu.Lock()
	defer s.rmu.Unlock()
	ev, err := s.next(ctx)
	switch {
	case errors.Is(err, ErrClosedByPeer):
		return nil
	case err != nil:
		return unexpected(ctx, "the connection closed", nil, err)
	case ev.header != nil:
		return &UnexpectedError{Want: "the connection closed", Got: fmt.Sprintf("protocol header %q", ev.header)}
	}
	var m amqp.Method
	if ev.frame.Type == amqp.FrameMethod {
		m, _ = amqp.DecodeMethod(ev.frame.Payload)
	}
	return &UnexpectedError{Want: "the connection closed", Got: describeFrame(ev.frame), Method: m}
}
