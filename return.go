package amqp

// OnReturn registers fn to be called with every message the server returns
// on this channel, whether or not the channel is in confirm mode. In confirm
// mode the return is also attached to the publish's [Confirmation]. Calls
// run in order on the connection's callback goroutine, never on the reader.
func (ch *Channel) OnReturn(fn func(Return)) {
	ch.mu.Lock()
	ch.listeners.onReturn = append(ch.listeners.onReturn, fn)
	ch.mu.Unlock()
}

// returned handles a basic.return on the reader goroutine.
func (ch *Channel) returned(m *BasicReturn, msg *Delivery) {
	ret := Return{ReplyCode: m.ReplyCode, ReplyText: m.ReplyText, Exchange: m.Exchange, RoutingKey: m.RoutingKey,
		Properties: msg.Properties, Body: msg.Body, Err: msg.Err()}
	ch.mu.Lock()
	if ch.confirms.active {
		ch.confirms.matchReturn(&ret)
	}
	listeners := ch.listeners.onReturn
	ch.mu.Unlock()
	if t := ch.conn.tr.ret; t != nil {
		ch.conn.events.push(func() { t.TraceReturn(ch, ret) })
	}
	for _, fn := range listeners {
		ch.conn.events.push(func() { fn(ret) })
	}
}
