package amqpraw

import (
	"context"
	"fmt"
	"strings"

	"github.com/amqp-go/amqp"
)

// Command is a method the broker sent, with its content for the methods
// that carry one (basic.deliver, basic.get-ok, basic.return).
type Command struct {
	Channel    uint16
	Method     amqp.Method
	Properties amqp.Properties
	Body       []byte

	size uint64 // announced body size, once the header has come
	head bool   // the header has come
}

func (c *Command) String() string {
	s := fmt.Sprintf("ch%d %s", c.Channel, DescribeMethod(c.Method))
	if hasContent(c.Method) {
		s += fmt.Sprintf(" with %d-byte body", len(c.Body))
	}
	return s
}

func hasContent(m amqp.Method) bool {
	switch m.(type) {
	case *amqp.BasicPublish, *amqp.BasicDeliver, *amqp.BasicReturn, *amqp.BasicGetOk:
		return true
	}
	return false
}

// ReadCommand returns the next method the broker sent, skipping
// heartbeats, with its content header and body frames for the methods that
// carry content. Contents on different channels may interleave; commands
// come in the order they complete. A frame that breaks the content rules
// (a header or body frame with no content pending, a method where a
// header is due) is an *UnexpectedError.
func (s *Session) ReadCommand(ctx context.Context) (*Command, error) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	for {
		f, err := s.readFrame(ctx)
		if err != nil {
			return nil, err
		}
		cmd, err := s.assemble(f)
		if cmd != nil || err != nil {
			return cmd, err
		}
	}
}

// assemble adds f to the channel's pending content, returning a command
// once one is complete.
func (s *Session) assemble(f amqp.Frame) (*Command, error) {
	p := s.partial[f.Channel]
	switch f.Type {
	case amqp.FrameHeartbeat:
		return nil, nil
	case amqp.FrameMethod:
		if p != nil {
			delete(s.partial, f.Channel)
			return nil, &UnexpectedError{Want: "content frames of " + p.Method.MethodName(), Got: describeFrame(f)}
		}
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			return nil, err
		}
		cmd := &Command{Channel: f.Channel, Method: m}
		if !hasContent(m) {
			return cmd, nil
		}
		s.partial[f.Channel] = cmd
		return nil, nil
	case amqp.FrameHeader:
		if p == nil || p.head {
			return nil, &UnexpectedError{Want: "a method", Got: describeFrame(f)}
		}
		h, err := amqp.DecodeContentHeader(f.Payload)
		if err != nil {
			delete(s.partial, f.Channel)
			return nil, err
		}
		if h.ClassID != p.Method.ClassID() {
			delete(s.partial, f.Channel)
			return nil, &UnexpectedError{Want: "a content header of class " + fmt.Sprint(p.Method.ClassID()), Got: fmt.Sprintf("one of class %d", h.ClassID)}
		}
		p.head, p.size, p.Properties = true, h.BodySize, h.Properties
		p.Body = make([]byte, 0, min(h.BodySize, 1<<20))
	case amqp.FrameBody:
		if p == nil || !p.head {
			return nil, &UnexpectedError{Want: "a method or content header", Got: describeFrame(f)}
		}
		p.Body = append(p.Body, f.Payload...)
		if uint64(len(p.Body)) > p.size {
			delete(s.partial, f.Channel)
			return nil, &UnexpectedError{Want: fmt.Sprintf("%d body bytes", p.size), Got: fmt.Sprintf("%d", len(p.Body))}
		}
	default:
		return nil, &UnexpectedError{Want: "a frame of a known type", Got: describeFrame(f)}
	}
	if p.head && uint64(len(p.Body)) == p.size {
		delete(s.partial, f.Channel)
		return p, nil
	}
	return nil, nil
}

// DescribeMethod renders m in one line for transcripts and errors; closes
// show their reply code and text.
func DescribeMethod(m amqp.Method) string {
	switch m := m.(type) {
	case *amqp.ChannelClose:
		return fmt.Sprintf("channel.close %d %s (failing %d.%d)", m.ReplyCode, m.ReplyText, m.FailingClassID, m.FailingMethodID)
	case *amqp.ConnectionClose:
		return fmt.Sprintf("connection.close %d %s (failing %d.%d)", m.ReplyCode, m.ReplyText, m.FailingClassID, m.FailingMethodID)
	case nil:
		return "<nil>"
	}
	s := fmt.Sprintf("%+v", m)
	s = strings.TrimPrefix(s, "&")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return m.MethodName() + " " + s
}

func describeFrame(f amqp.Frame) string {
	switch f.Type {
	case amqp.FrameMethod:
		m, err := amqp.DecodeMethod(f.Payload)
		if err != nil {
			return fmt.Sprintf("ch%d undecodable method frame (%v)", f.Channel, err)
		}
		return fmt.Sprintf("ch%d %s", f.Channel, DescribeMethod(m))
	case amqp.FrameHeartbeat:
		return fmt.Sprintf("ch%d heartbeat", f.Channel)
	}
	return fmt.Sprintf("ch%d %s frame, %d bytes", f.Channel, f.Type, len(f.Payload))
}
