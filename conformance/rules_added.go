package conformance

// The rules the suite adds to the XML's: the frame-level rules of the
// specification's general part (the PDF's sections 2 and 4, which the XML
// leaves out), and RabbitMQ's extensions. Texts are paraphrased; the
// section is in each rule's Text.

var generalRules = []Rule{
	gen("frame/end-octet", "MUST", "frame-error", "4.2.3: every frame ends with the octet %xCE; a peer that reads another end octet treats it as a fatal protocol error and closes the connection."),
	gen("frame/unknown-type", "MUST", "frame-error", "4.2.3: a frame of a type the protocol does not define is a fatal protocol error that closes the connection."),
	gen("frame/unknown-method", "MUST", "", "4.2.5, 540 NOT_IMPLEMENTED, 503 COMMAND_INVALID: a method frame with a class or method id the protocol does not define is a connection exception (540 NOT_IMPLEMENTED or 503 COMMAND_INVALID)."),
	gen("frame/oversized", "MUST", "frame-error", "4.2.3: a frame larger than the agreed frame_max is a connection exception 501 FRAME_ERROR."),
	gen("frame/peer-frame-max", "MUST", "", "4.2.3: a peer never sends frames larger than the agreed frame_max (here 4096, lowered by the client in tune-ok)."),
	gen("frame/connection-class-channel", "MUST", "command-invalid", "4.2.3: methods of the connection class travel on channel 0; one on another channel is a connection exception 503 COMMAND_INVALID."),
	gen("frame/heartbeat-channel", "MUST", "command-invalid", "4.2.3, 4.2.6.2: heartbeat frames travel on channel 0; one on another channel is a connection exception (503, or 501 in 4.2.6.2)."),
	gen("frame/content-channel-zero", "MUST", "channel-error", "4.2.6.1: content frames never travel on channel 0; one there is a connection exception 504 CHANNEL_ERROR."),
	gen("frame/header-class-id", "MUST", "frame-error", "4.2.6.1: the class id of a content header matches its method's; another is a connection exception 501 FRAME_ERROR."),
	gen("frame/body-split", "MUST", "", "4.2.6.2: a content body split into several frames is handled as one body."),
	gen("content/header-without-method", "MUST", "unexpected-frame", "4.2.6: a content header with no content method before it is incomplete or badly-formatted content: connection exception 505 UNEXPECTED_FRAME."),
	gen("content/body-without-header", "MUST", "unexpected-frame", "4.2.6: a content method followed by a body frame with no header is badly-formatted content: 505 UNEXPECTED_FRAME."),
	gen("content/method-inside-content", "MUST", "unexpected-frame", "4.2.6: a method frame where the rest of a content's body is due is incomplete content: 505 UNEXPECTED_FRAME."),
	gen("content/body-overrun", "MUST", "unexpected-frame", "4.2.6: body frames carrying more than the header's body size are badly-formatted content: 505 UNEXPECTED_FRAME."),
	gen("channel/unopened", "MUST", "channel-error", "2.3.7, 504 CHANNEL_ERROR: a method on a channel that was never opened is a connection exception 504 CHANNEL_ERROR."),
	gen("channel/after-close", "MUST", "channel-error", "2.3.7, 504 CHANNEL_ERROR: a method on a channel after its close handshake is a connection exception 504 CHANNEL_ERROR."),
	gen("channel/close-handshake", "MUST", "", "2.3.7: a peer answers channel.close with channel.close-ok."),
	gen("connection/close-handshake", "MUST", "", "2.3.7: a peer answers connection.close with connection.close-ok, then closes the socket."),
	gen("connection/limits-proposed", "MUST", "", "2.3.3: the server tells the client the limits it proposes (connection.tune)."),
	gen("connection/channel-max", "MUST", "", "4.3 and 0-9-1's clarification: with channel_max negotiated down to 2, channel 3 is illegal and the broker refuses it with a connection exception."),
	gen("connection/frame-max-lowered", "MUST", "frame-error", "2.3.3: the client MAY lower the server's limits in tune-ok; a frame over the lowered frame_max is then a 501 FRAME_ERROR."),
	gen("connection/errors-before-open", "MUST", "", "2.2.4: after the protocol header and before connection.open, a peer that detects an error closes the socket without sending any further data."),
	gen("heartbeat/sent", "SHOULD", "", "4.2.7: with a heartbeat interval negotiated, a peer sends heartbeat frames when it has nothing else to send."),
	gen("heartbeat/accepted", "MUST", "", "4.2.7: heartbeat frames from the peer are accepted (or discarded) without any error or fault."),
	gen("heartbeat/dead-peer", "SHOULD", "", "4.2.7: a peer that hears nothing for two heartbeat intervals or longer closes the connection without the close handshake."),
}

var extensionRules = []Rule{
	ext("ext/capabilities", "SHOULD", "server-properties carry a capabilities table naming the extensions the broker supports (publisher_confirms, exchange_exchange_bindings, basic.nack, consumer_cancel_notify, connection.blocked, authentication_failure_close, per_consumer_qos, direct_reply_to)."),
	ext("ext.confirm/select", "MUST", "Publisher confirms: confirm.select is answered with select-ok, and the publishes that follow are acknowledged with delivery tags 1, 2, 3 and so on."),
	ext("ext.confirm/nack", "MUST", "Publisher confirms: a publish the broker refuses (a queue full with x-overflow reject-publish) is answered with basic.nack."),
	ext("ext.basic.nack/multiple", "MUST", "basic.nack from a consumer with multiple set rejects every unacknowledged delivery up to the tag; with requeue they come back, redelivered."),
	ext("ext.consumer-cancel-notify/queue-deleted", "MUST", "Consumer cancel notification: a client that announces consumer_cancel_notify gets basic.cancel when the queue it consumes from is deleted."),
	ext("ext.e2e/routing", "MUST", "Exchange-to-exchange bindings: a message published to a source exchange reaches the queues bound to a destination exchange bound to it."),
	ext("ext.connection.blocked/alarm", "MUST", "connection.blocked: a client that announces connection.blocked is told when a resource alarm blocks publishing, and told connection.unblocked when it clears."),
	ext("ext.direct-reply-to/rpc", "MUST", "Direct reply-to: a consumer on amq.rabbitmq.reply-to (no-ack) receives replies published to the reply_to name the broker gives a request."),
	ext("ext.update-secret/ok", "MUST", "connection.update-secret is answered with update-secret-ok when the new secret is valid."),
	ext("ext.authentication-failure-close/refused", "MUST", "authentication_failure_close: a client that announces it is refused bad credentials with connection.close 403 ACCESS_REFUSED instead of a bare socket close."),
	ext("ext.per-consumer-qos/prefetch", "MUST", "Per-consumer QoS: basic.qos with global unset limits each consumer the channel starts afterwards, not the channel as a whole."),
}

func gen(id, level, onFailure, text string) Rule {
	return Rule{ID: id, Name: id, Level: level, OnFailure: onFailure, Text: text, Source: sourceGeneral}
}

func ext(id, level, text string) Rule {
	return Rule{ID: id, Name: id, Level: level, Text: text, Source: sourceExtension}
}

// AllRules returns every rule the suite knows: the XML's, then the general
// part's, then the extensions'.
func AllRules() []Rule {
	rules := SpecRules()
	rules = append(rules, generalRules...)
	return append(rules, extensionRules...)
}
