package layer

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/amqp-go/amqp"
)

// asgiWire is asgi_rabbitmq 0.5.5's mapping (core.py, Protocol): see
// ../shared/research/django-channels-wire.md §1 for each fact and where it
// is in the Python source.
type asgiWire struct {
	l *Layer

	mu    sync.Mutex
	locks map[string]*queueLock // queue -> the lock its Sends check capacity under
}

// queueLock serializes this layer's Sends to one queue, so that their
// capacity checks (declare-ok's message count, then publish) never
// overshoot each other.
type queueLock struct {
	mu    sync.Mutex
	users int
}

// asgiDeadLetters names the exchange and the queue every asgi_rabbitmq
// process declares and consumes.
const asgiDeadLetters = "dead-letters"

// asgiMarkerPrefix starts the names of group expiry marker queues.
const asgiMarkerPrefix = "expire.bind."

func (w *asgiWire) checkChannel(name string, use nameUse) error {
	if err := checkLength("channel", name); err != nil {
		return err
	}
	if !asgiChannelRE.MatchString(name) {
		return &NameError{Kind: "channel", Name: name, Reason: "asgiref's rule: ASCII letters, digits, hyphens, underscores and periods, then optionally one '?' or '!' and letters, digits, hyphens, underscores and periods"}
	}
	if strings.Contains(name, "?") && strings.HasSuffix(name, "?") {
		return &NameError{Kind: "channel", Name: name, Reason: "a single-reader channel name must not end with '?'"}
	}
	if use == useReceive && strings.Contains(name, "!") && !strings.HasSuffix(name, "!") {
		return &NameError{Kind: "channel", Name: name, Reason: "receive takes a process-specific channel by its prefix, ending at the '!' (the message says which channel it was for)"}
	}
	return nil
}

// asgiQueue is Protocol.get_queue_name: a process-specific channel "a!b"
// lives in queue "a!", other channels in the queue of their name.
func asgiQueue(channel string) string {
	if i := strings.LastIndexByte(channel, '!'); i >= 0 {
		return channel[:i+1]
	}
	return channel
}

// pikaInt is an integer as pika 0.11 writes it in a table: 'I' (int32)
// when it fits, else 'l'. RabbitMQ compares queue arguments with their
// types, so the other type would be a 406 against a Python layer.
func pikaInt(v int64) any {
	if v >= math.MinInt32 && v <= math.MaxInt32 {
		return int32(v)
	}
	return v
}

func (w *asgiWire) expirySeconds() int64 { return int64(w.l.cfg.Expiry.Seconds()) }

func (w *asgiWire) groupExpirySeconds() int64 { return int64(w.l.cfg.GroupExpiry.Seconds()) }

// queueArgs is Protocol.queue_arguments.
func (w *asgiWire) queueArgs() amqp.Table {
	return amqp.Table{
		"x-dead-letter-exchange": asgiDeadLetters,
		"x-expires":              pikaInt(w.expirySeconds() * 2000),
	}
}

// properties is Protocol.publish_properties: the per-message TTL, and for a
// process-specific channel the part after its '!' in header asgi_channel.
func (w *asgiWire) properties(channel string) amqp.Properties {
	p := amqp.Properties{Expiration: strconv.FormatInt(w.expirySeconds()*1000, 10)}
	if i := strings.LastIndexByte(channel, '!'); i >= 0 {
		p.Headers = amqp.Table{"asgi_channel": channel[i+1:]}
	}
	return p
}

// withQueueLock runs f while no other Send of this layer to queue q runs.
func (w *asgiWire) withQueueLock(q string, f func() error) error {
	w.mu.Lock()
	ql := w.locks[q]
	if ql == nil {
		ql = &queueLock{}
		w.locks[q] = ql
	}
	ql.users++
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		if ql.users--; ql.users == 0 {
			delete(w.locks, q)
		}
		w.mu.Unlock()
	}()
	ql.mu.Lock()
	defer ql.mu.Unlock()
	return f()
}

// send is Protocol.send: declare the queue, compare its message count with
// the channel's capacity, publish to the default exchange. Unlike Python it
// waits for the broker's confirm, and this layer's Sends to one queue take
// turns, so among them the count is exact (Python's can lag a message just
// published); Sends from other processes still race as they do in Python.
func (w *asgiWire) send(ctx context.Context, channel string, msg Message) error {
	body, err := w.l.cfg.codec.encode(msg)
	if err != nil {
		return err
	}
	q := asgiQueue(channel)
	return w.l.withChannel(ctx, func(ch *amqp.Channel) error {
		return w.withQueueLock(q, func() error {
			ok, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Arguments: w.queueArgs()})
			if err != nil {
				return fmt.Errorf("layer: declaring the queue of channel %q: %w", channel, err)
			}
			if capacity := w.l.cfg.capacity(channel); int(ok.MessageCount) >= capacity {
				return &ChannelFullError{Channel: channel, Capacity: capacity}
			}
			if err := publish(ctx, ch, amqp.Publishing{RoutingKey: q, Properties: w.properties(channel), Body: body}); err != nil {
				return fmt.Errorf("layer: sending to channel %q: %w", channel, err)
			}
			return nil
		})
	})
}

// sendGroup is Protocol.send_group: declare the group's fanout exchange (so
// that a group nobody joined yet takes the message), publish to it with the
// message TTL and no headers. No capacity check, as in Python.
func (w *asgiWire) sendGroup(ctx context.Context, group string, msg Message) error {
	body, err := w.l.cfg.codec.encode(msg)
	if err != nil {
		return err
	}
	return w.l.withChannel(ctx, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: group, Type: "fanout"}); err != nil {
			return fmt.Errorf("layer: declaring the exchange of group %q: %w", group, err)
		}
		if err := publish(ctx, ch, amqp.Publishing{Exchange: group, Properties: w.properties(""), Body: body}); err != nil {
			return fmt.Errorf("layer: sending to group %q: %w", group, err)
		}
		return nil
	})
}

// declareQueues declares the queues of channels (Protocol.receive does on
// every call; the arguments must match the Python layers').
func (w *asgiWire) declareQueues(ctx context.Context, ch *amqp.Channel, channels []string) ([]string, error) {
	queues := make([]string, len(channels))
	calls := make([]func() error, len(channels))
	for i, c := range channels {
		queues[i] = asgiQueue(c)
		calls[i] = func() error {
			_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: queues[i], Arguments: w.queueArgs()})
			return err
		}
	}
	if err := pipelined(calls...); err != nil {
		return nil, fmt.Errorf("layer: declaring the queues of %q: %w", channels, err)
	}
	return queues, nil
}

// receive is Protocol.receive with block=True, without its race: a
// consumer on each queue under a channel-wide prefetch of one, so at most
// one message is taken (Python's unlimited prefetch can ack several and
// return one).
func (w *asgiWire) receive(ctx context.Context, channels []string) (string, Message, error) {
	s, ch, err := w.l.channel(ctx)
	if err != nil {
		return "", nil, err
	}
	fit := true
	defer func() { s.put(ch, fit) }()
	queues, err := w.declareQueues(ctx, ch, channels)
	if err != nil {
		return "", nil, err
	}
	d, i, fit, err := consumeOne(ctx, ch, queues)
	if d != nil && err != nil { // taken, but its content header could not be decoded
		return channels[i], nil, &MessageError{Channel: channels[i], Err: err}
	}
	if err != nil {
		return "", nil, err
	}
	return w.decode(channels[i], d)
}

// tryReceive is Protocol.receive with block=False: basic.get on each queue
// in turn.
func (w *asgiWire) tryReceive(ctx context.Context, channels []string) (string, Message, bool, error) {
	s, ch, err := w.l.channel(ctx)
	if err != nil {
		return "", nil, false, err
	}
	defer s.put(ch, true)
	queues, err := w.declareQueues(ctx, ch, channels)
	if err != nil {
		return "", nil, false, err
	}
	for i, q := range queues {
		d, err := ch.Get(ctx, amqp.BasicGet{Queue: q})
		d, bad, err := malformed(d, err)
		if errors.Is(err, amqp.ErrEmpty) {
			continue
		}
		if err == nil {
			// Acknowledged before decoding, as Python does.
			err = d.Ack(amqp.AckOptions{})
		}
		if err != nil {
			return "", nil, false, fmt.Errorf("layer: receiving from channel %q: %w", channels[i], err)
		}
		if bad != nil {
			return channels[i], nil, true, &MessageError{Channel: channels[i], Err: bad}
		}
		c, m, err := w.decode(channels[i], d)
		return c, m, true, err
	}
	return "", nil, false, nil
}

// decode returns the channel a delivery was for (the received name plus
// header asgi_channel, for process-specific channels) and its message.
func (w *asgiWire) decode(channel string, d *amqp.Delivery) (string, Message, error) {
	if local, ok := headerString(d.Headers, "asgi_channel"); ok {
		channel += local
	}
	m, err := w.l.cfg.codec.decode(d.Body)
	if err != nil {
		return channel, nil, &MessageError{Channel: channel, Err: err}
	}
	return channel, m, nil
}

func headerString(h amqp.Table, key string) (string, bool) {
	switch v := h[key].(type) {
	case string:
		return v, true
	case []byte:
		return string(v), true
	}
	return "", false
}

// newChannel is RabbitmqChannelLayer.new_channel: prefix, which must end in
// '?' (one is added if it does not), plus 20 random ASCII letters; the
// queue is declared.
func (w *asgiWire) newChannel(ctx context.Context, prefix string) (string, error) {
	if !strings.HasSuffix(prefix, "?") {
		prefix += "?"
	}
	name := prefix + randomLetters(20)
	if err := w.checkChannel(name, useSend); err != nil || strings.Count(prefix, "?") != 1 {
		return "", &NameError{Kind: "prefix", Name: prefix, Reason: "asgi_rabbitmq's new_channel takes a channel name ending in '?' (and no other '?' or '!'), up to 79 characters"}
	}
	err := w.l.withChannel(ctx, func(ch *amqp.Channel) error {
		_, err := w.declareQueues(ctx, ch, []string{name})
		return err
	})
	if err != nil {
		return "", err
	}
	return name, nil
}

func (w *asgiWire) markerQueue(group, channel string) string {
	return asgiMarkerPrefix + group + "." + channel
}

// groupAdd is Protocol.group_add: the expiry marker first (Python pushes it
// alongside the bindings), then the group's fanout exchange and the
// channel's binding to it: for a process-specific channel a queue of the
// channel's full name, x-max-length 0, which dead-letters every group
// message to "dead-letters" for a dead-letter consumer to forward; for
// other channels an exchange of the channel's name between the group's
// exchange and the channel's queue.
func (w *asgiWire) groupAdd(ctx context.Context, group, channel string) error {
	if n := len(w.markerQueue(group, channel)); n > 255 {
		return &NameError{Kind: "group", Name: group, Reason: fmt.Sprintf("with channel %q its expiry marker queue's name is %d bytes, over AMQP's 255", channel, n)}
	}
	s, ch, err := w.l.channel(ctx)
	if err != nil {
		return err
	}
	defer s.put(ch, true)
	fail := func(err error) error {
		return fmt.Errorf("layer: adding channel %q to group %q: %w", channel, group, err)
	}
	if err := w.pushMarker(ctx, ch, group, channel); err != nil {
		return fail(err)
	}
	if err := ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: group, Type: "fanout"}); err != nil {
		return fail(err)
	}
	if strings.Contains(channel, "!") {
		_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: channel, Arguments: amqp.Table{
			"x-dead-letter-exchange": asgiDeadLetters,
			"x-expires":              pikaInt(w.groupExpirySeconds() * 1000),
			"x-max-length":           pikaInt(0),
		}})
		if err == nil {
			err = ch.QueueBind(ctx, amqp.QueueBind{Queue: channel, Exchange: group, RoutingKey: channel})
		}
		if err != nil {
			return fail(err)
		}
		return nil
	}
	// A '?' channel's queue exists from new_channel in Python, which does
	// not declare it here; declaring it anyway (same arguments) changes
	// nothing the other side sees, and spares a 404 if it expired.
	err = pipelined(
		func() error {
			return ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: channel, Type: "fanout", AutoDelete: true})
		},
		func() error {
			_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: channel, Arguments: w.queueArgs()})
			return err
		},
	)
	if err == nil {
		err = ch.ExchangeBind(ctx, amqp.ExchangeBind{Destination: channel, Source: group})
	}
	if err == nil {
		err = ch.QueueBind(ctx, amqp.QueueBind{Queue: channel, Exchange: channel, RoutingKey: channel})
	}
	if err != nil {
		return fail(err)
	}
	return nil
}

// pushMarker is Protocol.expire_group_member and push_marker: a queue that
// holds one marker message for GroupExpiry; a new marker pushes out the old
// one (x-max-length 1), and when the last one expires it is dead-lettered
// to "dead-letters", where a dead-letter consumer discards the membership.
func (w *asgiWire) pushMarker(ctx context.Context, ch *amqp.Channel, group, channel string) error {
	ttl := w.groupExpirySeconds() * 1000
	q := w.markerQueue(group, channel)
	_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Arguments: amqp.Table{
		"x-dead-letter-exchange": asgiDeadLetters,
		"x-max-length":           pikaInt(1),
		"x-message-ttl":          pikaInt(ttl),
		"x-expires":              pikaInt(ttl + 25),
	}})
	if err != nil {
		return err
	}
	body, err := w.l.cfg.codec.encode(Message{"group": group, "channel": channel})
	if err != nil {
		return err
	}
	return publish(ctx, ch, amqp.Publishing{RoutingKey: q, Body: body})
}

// groupDiscard is Protocol.group_discard: unbind, leaving the marker to
// expire. A membership that does not exist is no error.
func (w *asgiWire) groupDiscard(ctx context.Context, group, channel string) error {
	err := w.l.withChannel(ctx, func(ch *amqp.Channel) error { return w.unbind(ctx, ch, group, channel) })
	if err != nil {
		return fmt.Errorf("layer: discarding channel %q from group %q: %w", channel, group, err)
	}
	return nil
}

func (w *asgiWire) unbind(ctx context.Context, ch *amqp.Channel, group, channel string) error {
	var err error
	if strings.Contains(channel, "!") {
		err = ch.QueueUnbind(ctx, amqp.QueueUnbind{Queue: channel, Exchange: group, RoutingKey: channel})
	} else {
		err = ch.ExchangeUnbind(ctx, amqp.ExchangeUnbind{Destination: channel, Source: group})
	}
	if errors.Is(err, amqp.ErrNotFound) {
		return nil // the queue or an exchange is gone: so is the membership
	}
	return err
}
