package amqp

import "fmt"

// handleFrame processes one frame for this channel on the reader goroutine.
// It never blocks on user code; an error it returns ends the connection.
func (ch *Channel) handleFrame(l *link, f Frame) error {
	switch f.Type {
	case FrameMethod:
		if ch.asm.active() {
			return unexpectedFrame(ch.id, "method frame in the middle of a message")
		}
		m, err := decodeMethodInto(f.Payload, &l.strings, &ch.rx)
		if err != nil {
			return err
		}
		if m.hasContent() {
			ch.asm.begin(m)
			return nil
		}
		return ch.handleMethod(m)
	case FrameHeader:
		done, err := ch.asm.header(f.Payload, ch.conn.cfg.MaxBodySize, &l.strings, &ch.bin)
		if err != nil || !done {
			return err
		}
	case FrameBody:
		done, err := ch.asm.body(f.Payload)
		if err != nil || !done {
			return err
		}
	}
	m, msg := ch.asm.take()
	return ch.handleContent(m, msg)
}

func unexpectedFrame(id uint16, what string) error {
	return &Error{Code: CodeUnexpectedFrame, Connection: true, Reason: fmt.Sprintf("%s on channel %d", what, id)}
}

// handleMethod dispatches a method without content.
func (ch *Channel) handleMethod(m Method) error {
	switch m := m.(type) {
	case *ChannelClose:
		ch.serverClosed(m)
		return nil
	case *BasicAck:
		ch.confirmed(m.DeliveryTag, m.Multiple, false)
		return nil
	case *BasicNack:
		ch.confirmed(m.DeliveryTag, m.Multiple, true)
		return nil
	case *BasicCancel:
		ch.serverCancelled(m.ConsumerTag)
		return nil
	case *ChannelFlow:
		ch.serverFlow(m.Active)
		return nil
	}
	if isReplyKey(m.key()) {
		return ch.complete(m, nil)
	}
	return unexpectedFrame(ch.id, "unexpected "+m.MethodName())
}

// handleContent dispatches a method whose content has been assembled.
func (ch *Channel) handleContent(m Method, msg *Delivery) error {
	switch m := m.(type) {
	case *BasicDeliver:
		ch.deliver(m, msg)
		return nil
	case *BasicReturn:
		ch.returned(m, msg)
		return nil
	case *BasicGetOk:
		ch.gotMessage(m, msg)
		return ch.complete(m, msg)
	}
	return unexpectedFrame(ch.id, "unexpected content for "+m.MethodName())
}
