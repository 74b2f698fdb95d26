// Package layer is a channel layer on RabbitMQ, in the manner of Django
// Channels' asgi_rabbitmq, built on the public API of
// github.com/amqp-go/amqp: processes send each other messages (maps, as in
// ASGI) through named channels, and broadcast to groups of channels.
//
//	l, err := layer.New(ctx, layer.Config{URL: "amqp://guest:guest@localhost:5672/%2F"})
//	err = l.Send(ctx, "http.request", layer.Message{"path": "/"})
//	channel, msg, err := l.Receive(ctx, "http.request", "websocket.connect")
//
//	reply, err := l.NewChannel(ctx, "chat")    // "chat!3QKX...": unique, for one reader
//	err = l.GroupAdd(ctx, "room.lobby", reply) // membership lapses after GroupExpiry
//	err = l.SendGroup(ctx, "room.lobby", layer.Message{"text": "hello"})
//
// # Wire modes
//
// [Config].Mode selects how channels and groups map onto the broker.
// [Native], the default, is the layer's own mapping, described below. The
// other modes make a Go program one more process of a Django Channels
// deployment, indistinguishable on the broker from the Python layer it
// joins: [AsgiRabbitMQ] (asgi_rabbitmq 0.5.5) and [ChannelsRabbitMQ]
// (channels_rabbitmq). They declare the same queues and exchanges with the
// same flags and argument types, route and publish the same way, with the
// same properties, headers and bodies, follow the same name rules and make
// the same NewChannel names; the README gives each mapping in full. Where
// the Python layer is racy the Go layer is exact without changing what the
// other side sees (asgi_rabbitmq's capacity check among one layer's Sends,
// its blocking receive, which can take several messages and return one).
// What the Python layer lacks fails with an [*UnsupportedError]
// ([ErrUnsupported]): at New for an option (channels_rabbitmq: GroupExpiry,
// SymmetricEncryptionKeys, ChannelCapacity), at the call otherwise (Flush
// in both; normal channels in channels_rabbitmq).
//
//	l, err := layer.New(ctx, layer.Config{URL: url, Mode: layer.ChannelsRabbitMQ})
//	inbox, err := l.NewChannel(ctx, "") // "channels_<12 letters>!<12 letters>"
//	err = l.SendGroup(ctx, "chat_lobby", layer.Message{"type": "chat.message", "text": "hi"})
//
// # Names
//
// Native channel and group names are 1 to 99 ASCII letters, digits,
// hyphens, underscores and periods (asgiref and the Python layers take
// names shorter than 100 characters). A channel name may also have one '!'
// followed by more of them: a single-reader channel, as NewChannel makes
// them ("prefix!random"). Other names fail with [ErrInvalidName]. The other
// modes apply their Python layer's rules.
//
// # How it maps onto RabbitMQ (Native)
//
// Everything the layer creates on the broker is named after its Namespace
// ("asgi" by default), so that layers sharing a namespace meet and others
// do not; every option below is the broker's to enforce, so layers on
// different nodes of a cluster agree without talking to each other.
//
//   - A channel is a classic queue, "<ns>:channel:<name>", declared with
//     x-message-ttl = Expiry (messages expire unread), x-max-length =
//     its capacity with x-overflow = reject-publish (the broker refuses
//     messages beyond the capacity), and x-expires = 2 × Expiry (a channel
//     nobody reads goes away once its messages have all expired).
//   - Send publishes to the default exchange with the queue name as routing
//     key, mandatory, on a channel in confirm mode, and waits for the
//     broker: an ack is success, a nack is the queue refusing the message
//     ([ErrChannelFull]), a return means the queue does not exist yet, so
//     Send declares it and publishes again. A full channel is detected
//     atomically by the broker, however many layers send at once.
//   - Receive declares the queues (at most once per Expiry), starts a
//     consumer on each, with a channel-wide prefetch of one, and takes the
//     first delivery; it then cancels the consumers, requeues any other
//     delivery they were handed, and acknowledges the one it returns. If
//     ctx ends first, everything goes back: no message is lost.
//     TryReceive uses basic.get on each queue in turn.
//   - A group is a fanout exchange, "<ns>:group:<name>", which auto-deletes
//     when its last member goes. A membership is an exchange-to-exchange
//     binding from it to a fanout exchange of the membership's own,
//     "<ns>:member:<group>:<channel>", auto-delete, which is bound to a
//     queue of the same name with x-message-ttl 0 and a dead-letter
//     exchange that forwards every message at once to the channel's queue,
//     and x-expires = GroupExpiry. GroupAdd declares them all and binds
//     them, the group to the membership last; it redeclares the queue, and
//     so renews its lease. GroupExpiry after the last GroupAdd the broker
//     deletes the queue, and with it its binding; the membership's exchange,
//     left without bindings, auto-deletes, and its binding from the group
//     goes with it: the membership lapses on the broker, with no process
//     watching. GroupDiscard unbinds the membership from the group and
//     deletes its queue and exchange. SendGroup publishes to the group's
//     exchange; a group that does not exist has no members, and a member
//     whose channel is full misses the message.
//   - A message is a msgpack map; with SymmetricEncryptionKeys it is a
//     Fernet token of that map (see [Config]).
//   - A message that expires unread is dropped; its channel stays in its
//     groups (asgi_rabbitmq, and AsgiRabbitMQ mode, remove it from all).
//   - Each channel declaration and each GroupAdd leaves the names it
//     declares in the queue "<ns>:registry", for as long as those objects
//     can live, so that [Layer.Flush] can find and delete them.
//
// Classic queues live on the node where they were declared; a message sent
// through any node of the cluster is routed to them, and a Receive through
// any node reads them. If that node goes down, its queues and the messages
// in them are lost (they are not replicated), as with asgi_rabbitmq; the
// layer itself reconnects to another node of its URL on its next call.
//
// # Delivery
//
// Delivery is at most once, as ASGI specifies: a message is acknowledged
// before Receive returns it. A message that cannot be read is consumed and
// reported as a [*MessageError] ([ErrDecrypt], [ErrDecode]). Messages sent
// to one channel are received in the order they were sent.
package layer
