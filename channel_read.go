package amqp

// channelReader is a channel's side of the reader goroutine: the frame
// handling for one channel and the state it keeps between frames. Only the
// reader touches asm and rx (a reopen clears them, on the reader handling
// channel.close, or after the lost link's reader has exited). The consumer
// routing cache (Channel.lastConsumer) stays with the consumers map, under
// ch.mu, since cancelling and closing clear it.
type channelReader struct {
	ch  *Channel
	asm assembly  // the content being assembled
	rx  rxScratch // deliver, ack and nack are decoded into this, not new structs

	// bin holds deliveries Release handed back (from application
	// goroutines), for asm to reuse; it has a lock of its own.
	bin deliveryBin
}

// handleFrame processes one frame for this channel on the reader goroutine.
// It never blocks on user code; an error it returns ends the connection.
func (rd *channelReader) handleFrame(f Frame, strings *stringCache) error {
	ch := rd.ch
	switch f.Type {
	case FrameMethod:
		if rd.asm.active() {
			return unexpectedFrame(ch.id, "method frame in the middle of a message")
		}
		m, err := decodeMethodInto(f.Payload, strings, &rd.rx)
		if err != nil {
			return err
		}
		if m.hasContent() {
			rd.asm.begin(m)
			return nil
		}
		return rd.handleMethod(m)
	case FrameHeader:
		done, err := rd.asm.header(f.Payload, ch.conn.cfg.MaxBodySize, strings, &rd.bin)
		if err != nil || !done {
			return err
		}
	case FrameBody:
		done, err := rd.asm.body(f.Payload)
		if err != nil || !done {
			return err
		}
	}
	m, msg := rd.asm.take()
	return rd.handleContent(m, msg)
}

// handleMethod dispatches a method without content.
func (rd *channelReader) handleMethod(m Method) error {
	ch := rd.ch
	switch m := m.(type) {
	case *ChannelClose:
		ch.serverClosed(m)
		return nil
	case *BasicAck:
		ch.confirmed(m.DeliveryTag, m.Multiple, serverAck)
		return nil
	case *BasicNack:
		ch.confirmed(m.DeliveryTag, m.Multiple, serverNack)
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
func (rd *channelReader) handleContent(m Method, msg *Delivery) error {
	ch := rd.ch
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
