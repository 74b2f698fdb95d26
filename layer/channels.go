package layer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"sync"

	"github.com/amqp-go/amqp"
)

// channelsWire is channels_rabbitmq's mapping (core.py,
// RabbitmqChannelLayer; reader.py; util.py; multiqueue.py): see
// ../shared/research/django-channels-wire.md §2.
//
// The layer owns one exclusive queue, "channels_" + 12 letters, kept
// across reconnects; its channels are "<queue>!" + 12 letters. A consumer
// with a prefetch of LocalCapacity moves messages into a buffer per
// channel, in memory; a message is acknowledged once every local recipient
// has taken it (or it expired locally), so the prefetch bounds the memory.
// Groups are bindings of the queue to the direct exchange GroupsExchange,
// with the group's name as routing key, made for the first local member
// and removed with the last.
type channelsWire struct {
	l     *Layer
	queue string

	groupMu sync.Mutex // serializes GroupAdd and GroupDiscard, bind and unbind included

	mu     sync.Mutex
	local  map[string][]*localItem    // channel -> messages waiting for a Receive, oldest first
	groups map[string]map[string]bool // group -> its local members
	notify chan struct{}              // closed (and replaced) when a message is buffered
	stop   chan struct{}              // closed by close: ends the local expiry sweeper
	closed sync.Once
}

// The reserved keys channels_rabbitmq adds to a message body
// (util.py, serialize_message).
const (
	channelKey = "__asgi_channel__"
	groupKey   = "__asgi_group__"
)

func newChannelsWire(l *Layer) *channelsWire {
	w := &channelsWire{
		l:      l,
		queue:  "channels_" + randomLetters(12),
		local:  map[string][]*localItem{},
		groups: map[string]map[string]bool{},
		notify: make(chan struct{}),
		stop:   make(chan struct{}),
	}
	if l.cfg.LocalExpiry > 0 {
		l.goBackground(w.expireLocally)
	}
	return w
}

func (w *channelsWire) close() { w.closed.Do(func() { close(w.stop) }) }

// pamqpInt is an integer as pamqp (carehare's encoder) writes it in a
// table: the smallest type that holds it.
func pamqpInt(v int64) any {
	switch {
	case v >= math.MinInt8 && v <= math.MaxInt8:
		return int8(v)
	case v >= math.MinInt16 && v <= math.MaxInt16:
		return int16(v)
	case v >= 0 && v <= math.MaxUint16:
		return uint16(v)
	case v >= math.MinInt32 && v <= math.MaxInt32:
		return int32(v)
	case v >= 0 && v <= math.MaxUint32:
		return uint32(v)
	}
	return v
}

// setUp is _setup_connection, _setup_subscriptions and the consumer of
// consume_into_multi_queue_until_connection_close.
func (w *channelsWire) setUp(ctx context.Context, conn *amqp.Connection) error {
	ch, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	defer ch.Close(ctx)
	if err := ch.ExchangeDeclare(ctx, amqp.ExchangeDeclare{Exchange: w.l.cfg.GroupsExchange, Type: "direct"}); err != nil {
		return err
	}
	// The queue of a connection just lost may linger a moment: its
	// messages would be lost with it, and declaring an exclusive queue
	// another connection holds fails anyway.
	if _, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: w.queue, Passive: true}); err == nil {
		return fmt.Errorf("queue %q still exists (a previous connection's): try again", w.queue)
	} else if !errors.Is(err, amqp.ErrNotFound) {
		return err
	}
	_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: w.queue, Exclusive: true, Arguments: amqp.Table{
		"x-max-length":  pamqpInt(int64(w.l.cfg.Capacity)),
		"x-overflow":    "reject-publish",
		"x-message-ttl": pamqpInt(w.l.cfg.expiryMS),
	}})
	if err != nil {
		return err
	}
	w.mu.Lock()
	groups := make([]string, 0, len(w.groups))
	for g := range w.groups {
		groups = append(groups, g)
	}
	w.mu.Unlock()
	for _, g := range groups {
		if err := ch.QueueBind(ctx, amqp.QueueBind{Queue: w.queue, Exchange: w.l.cfg.GroupsExchange, RoutingKey: g}); err != nil {
			return err
		}
	}
	cc, err := conn.Channel(ctx)
	if err != nil {
		return err
	}
	err = cc.Qos(ctx, amqp.BasicQos{PrefetchCount: uint16(w.l.cfg.LocalCapacity)})
	var c *amqp.Consumer
	if err == nil {
		c, err = cc.Consume(ctx, amqp.BasicConsume{Queue: w.queue, ConsumerTag: "carehare"})
	}
	if err != nil {
		return err
	}
	w.l.goBackground(func() {
		for {
			d, err := c.Next(context.Background())
			if d == nil {
				backgroundConsumerEnded(conn, err)
				return
			}
			// A delivery whose content header could not be decoded still
			// carries its whole body, which is all this protocol reads.
			w.deliver(d)
		}
	})
	return nil
}

func (w *channelsWire) receive(ctx context.Context, channels []string) (string, Message, error) {
	for {
		// A session: after a lost connection this dials again and sets
		// up the queue, its bindings and the consumer.
		s, err := w.l.session(ctx)
		if err != nil {
			return "", nil, err
		}
		w.mu.Lock()
		c, it, done := w.take(channels)
		notify := w.notify
		w.mu.Unlock()
		ackAll(done)
		if it != nil {
			return c, it.msg, nil
		}
		select {
		case <-notify:
		case <-s.conn.Done():
		case <-ctx.Done():
			return "", nil, fmt.Errorf("layer: receiving: %w", ctx.Err())
		}
	}
}

func (w *channelsWire) tryReceive(ctx context.Context, channels []string) (string, Message, bool, error) {
	if _, err := w.l.session(ctx); err != nil {
		return "", nil, false, err
	}
	w.mu.Lock()
	c, it, done := w.take(channels)
	w.mu.Unlock()
	ackAll(done)
	if it == nil {
		return "", nil, false, nil
	}
	return c, it.msg, true, nil
}

// encode is serialize_message: the message plus the reserved key that says
// whom it is for.
func (w *channelsWire) encode(msg Message, key, value string) ([]byte, error) {
	if _, ok := msg[channelKey]; ok {
		return nil, fmt.Errorf("layer: the message has key %q, which channels_rabbitmq reserves", channelKey)
	}
	if _, ok := msg[groupKey]; ok {
		return nil, fmt.Errorf("layer: the message has key %q, which channels_rabbitmq reserves", groupKey)
	}
	m := make(Message, len(msg)+1)
	maps.Copy(m, msg)
	m[key] = value
	return w.l.cfg.codec.encode(m)
}

// send publishes to the default exchange, routing key the channel's queue,
// in confirm mode, without properties; a nack (the queue at
// remote_capacity, reject-publish) is ChannelFull. A channel whose queue
// does not exist takes the message and drops it, as in Python.
func (w *channelsWire) send(ctx context.Context, channel string, msg Message) error {
	body, err := w.encode(msg, channelKey, channel)
	if err != nil {
		return err
	}
	queue, _, _ := strings.Cut(channel, "!")
	err = w.l.withChannel(ctx, func(ch *amqp.Channel) error {
		return publish(ctx, ch, amqp.Publishing{RoutingKey: queue, Body: body})
	})
	if errors.Is(err, amqp.ErrNacked) {
		return &ChannelFullError{Channel: channel} // the receiver's capacity, not ours
	}
	if err != nil {
		return fmt.Errorf("layer: sending to channel %q: %w", channel, err)
	}
	return nil
}

// sendGroup publishes to GroupsExchange with the group as routing key. A
// member's full queue nacks the message; like channels_rabbitmq (which logs
// it) and ASGI, that is not an error: delivery to groups is best effort.
func (w *channelsWire) sendGroup(ctx context.Context, group string, msg Message) error {
	body, err := w.encode(msg, groupKey, group)
	if err != nil {
		return err
	}
	err = w.l.withChannel(ctx, func(ch *amqp.Channel) error {
		return publish(ctx, ch, amqp.Publishing{Exchange: w.l.cfg.GroupsExchange, RoutingKey: group, Body: body})
	})
	if err != nil && !errors.Is(err, amqp.ErrNacked) {
		return fmt.Errorf("layer: sending to group %q: %w", group, err)
	}
	return nil
}

// newChannel is new_channel: the layer's queue, '!', 12 letters; prefix is
// ignored, as channels_rabbitmq does. Nothing is declared.
func (w *channelsWire) newChannel(ctx context.Context, prefix string) (string, error) {
	if _, err := w.l.session(ctx); err != nil {
		return "", err
	}
	return w.queue + "!" + randomLetters(12), nil
}

func (w *channelsWire) groupAdd(ctx context.Context, group, channel string) error {
	w.groupMu.Lock()
	defer w.groupMu.Unlock()
	w.mu.Lock()
	members := w.groups[group]
	first := len(members) == 0
	w.mu.Unlock()
	if first {
		if err := w.bind(ctx, group); err != nil {
			return fmt.Errorf("layer: adding channel %q to group %q: %w", channel, group, err)
		}
	}
	w.mu.Lock()
	if w.groups[group] == nil {
		w.groups[group] = map[string]bool{}
	}
	w.groups[group][channel] = true
	w.mu.Unlock()
	return nil
}

func (w *channelsWire) groupDiscard(ctx context.Context, group, channel string) error {
	w.groupMu.Lock()
	defer w.groupMu.Unlock()
	w.mu.Lock()
	members := w.groups[group]
	if !members[channel] {
		w.mu.Unlock()
		return nil
	}
	delete(members, channel)
	last := len(members) == 0
	if last {
		delete(w.groups, group)
	}
	w.mu.Unlock()
	if last {
		if err := w.unbind(ctx, group); err != nil {
			return fmt.Errorf("layer: discarding channel %q from group %q: %w", channel, group, err)
		}
	}
	return nil
}

// bind binds the layer's queue to GroupsExchange with the group as
// routing key.
func (w *channelsWire) bind(ctx context.Context, group string) error {
	return w.l.withChannel(ctx, func(ch *amqp.Channel) error {
		return ch.QueueBind(ctx, amqp.QueueBind{Queue: w.queue, Exchange: w.l.cfg.GroupsExchange, RoutingKey: group})
	})
}

// unbind undoes bind.
func (w *channelsWire) unbind(ctx context.Context, group string) error {
	return w.l.withChannel(ctx, func(ch *amqp.Channel) error {
		return ch.QueueUnbind(ctx, amqp.QueueUnbind{Queue: w.queue, Exchange: w.l.cfg.GroupsExchange, RoutingKey: group})
	})
}

func (w *channelsWire) checkChannel(name string, use nameUse) error {
	if err := checkLength("channel", name); err != nil {
		return err
	}
	if !channelsChannelRE.MatchString(name) {
		return &NameError{Kind: "channel", Name: name, Reason: "Django Channels' rule: ASCII letters, digits, hyphens, underscores and periods, then optionally '!' and letters, digits, hyphens, underscores and periods"}
	}
	if !strings.Contains(name, "!") {
		return &UnsupportedError{Mode: ChannelsRabbitMQ, Feature: fmt.Sprintf("normal channel %q", name), Reason: "channels_rabbitmq has only process-specific channels, named <queue>!<local> (NewChannel makes them)"}
	}
	if use != useSend && !strings.HasPrefix(name, w.queue+"!") {
		return &NameError{Kind: "channel", Name: name, Reason: fmt.Sprintf("not this layer's: in channels_rabbitmq mode a layer receives, and adds to groups, only channels of its own queue, %s!...", w.queue)}
	}
	return nil
}
