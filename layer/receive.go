package layer

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/amqp-go/amqp"
)

// Receive takes the next message from any of the channels, waiting for one
// bounded by ctx, and returns the channel it came from with the message.
// When several channels hold messages, which one is taken first is not
// specified; within one channel, messages come in the order they were sent.
//
// Each message is received once, by one Receive of one layer (messages
// are acknowledged before Receive returns them: at most once, as in ASGI).
// A message is never lost to a Receive that gives up: if ctx ends first,
// Receive returns ctx's error and every message it may have been handed
// goes back to its channel.
//
// A message that cannot be read (encrypted with other keys, or not a
// msgpack map) is consumed and reported as a [*MessageError].
//
// In AsgiRabbitMQ mode a process-specific channel is received by its prefix,
// "a!", and the returned channel is the full name the sender used, "a!b".
// In ChannelsRabbitMQ mode only this layer's own channels (from NewChannel)
// can be received, from the buffer its consumer fills; other names fail
// with ErrInvalidName.
func (l *Layer) Receive(ctx context.Context, channels ...string) (channel string, msg Message, err error) {
	if l.wire != nil {
		if channels, err = l.checkWireChannels(channels); err != nil {
			return "", nil, err
		}
		return l.wire.receive(ctx, channels)
	}
	channels, err = checkChannels(channels)
	if err != nil {
		return "", nil, err
	}
	s, ch, err := l.channel(ctx)
	if err != nil {
		return "", nil, err
	}
	fit := true
	defer func() { s.put(ch, fit) }()
	if err := l.ensureChannels(ctx, s, ch, channels); err != nil {
		return "", nil, err
	}

	queues := make([]string, len(channels))
	for i, c := range channels {
		queues[i] = l.queueName(c)
	}
	d, i, fit, err := consumeOne(ctx, ch, queues)
	if d != nil && err != nil { // taken, but its content header could not be decoded
		return channels[i], nil, &MessageError{Channel: channels[i], Err: err}
	}
	if err != nil {
		if errors.Is(err, amqp.ErrNotFound) {
			// A queue was deleted since it was declared; declare it
			// again next time.
			for _, q := range queues {
				s.forgetDeclared(q)
			}
		}
		return "", nil, err
	}
	msg, err = l.cfg.codec.decode(d.Body)
	if err != nil {
		return channels[i], nil, &MessageError{Channel: channels[i], Err: err}
	}
	return channels[i], msg, nil
}

// TryReceive is Receive without the wait: it takes a message that is
// already in one of the channels, trying them in order, or returns ok
// false at once when they are all empty. ctx bounds the round trips to the
// broker (one per channel tried).
func (l *Layer) TryReceive(ctx context.Context, channels ...string) (channel string, msg Message, ok bool, err error) {
	if l.wire != nil {
		if channels, err = l.checkWireChannels(channels); err != nil {
			return "", nil, false, err
		}
		return l.wire.tryReceive(ctx, channels)
	}
	channels, err = checkChannels(channels)
	if err != nil {
		return "", nil, false, err
	}
	s, ch, err := l.channel(ctx)
	if err != nil {
		return "", nil, false, err
	}
	defer s.put(ch, true)
	if err := l.ensureChannels(ctx, s, ch, channels); err != nil {
		return "", nil, false, err
	}
	for _, c := range channels {
		q := l.queueName(c)
		d, err := ch.Get(ctx, amqp.BasicGet{Queue: q})
		d, bad, err := malformed(d, err)
		switch {
		case errors.Is(err, amqp.ErrEmpty):
			continue
		case errors.Is(err, amqp.ErrNotFound):
			s.forgetDeclared(q) // deleted meanwhile: empty
			continue
		case err != nil:
			return "", nil, false, fmt.Errorf("layer: receiving from channel %q: %w", c, err)
		}
		// Acknowledged before decoding, at once: the message is taken
		// whether or not it can be read.
		if err := d.Ack(amqp.AckOptions{}); err != nil {
			return "", nil, false, fmt.Errorf("layer: receiving from channel %q: %w", c, err)
		}
		if bad != nil {
			return c, nil, true, &MessageError{Channel: c, Err: bad}
		}
		msg, err := l.cfg.codec.decode(d.Body)
		if err != nil {
			return c, nil, true, &MessageError{Channel: c, Err: err}
		}
		return c, msg, true, nil
	}
	return "", nil, false, nil
}

// consumeOne starts a consumer on each queue and waits, bounded by ctx, for
// the first delivery; it then cancels the consumers, requeues any other
// delivery that arrived meanwhile, acknowledges the first and returns it
// with its queue's index (and, if its content header could not be decoded,
// its amqp.ContentError). fit reports whether the channel is clean for the
// next call (no consumer left on it); when it is not, closing it requeues
// whatever it still holds.
func consumeOne(ctx context.Context, ch *amqp.Channel, queues []string) (d *amqp.Delivery, index int, fit bool, err error) {
	consumers := make([]*amqp.Consumer, len(queues))
	errs := make([]error, len(queues))
	var wg sync.WaitGroup
	for i, q := range queues {
		// Concurrent calls on one channel are pipelined: one round trip
		// for all of them.
		wg.Go(func() { consumers[i], errs[i] = ch.Consume(ctx, amqp.BasicConsume{Queue: q}) })
	}
	wg.Wait()
	err = errors.Join(errs...)

	first := -1
	var extra []*amqp.Delivery // deliveries to hand back
	if err == nil {
		type result struct {
			i   int
			d   *amqp.Delivery
			err error
		}
		waitCtx, stop := context.WithCancel(ctx)
		results := make(chan result, len(consumers))
		for i, c := range consumers {
			wg.Go(func() {
				d, err := c.Next(waitCtx)
				results <- result{i, d, err}
			})
		}
		r := <-results
		stop()
		wg.Wait()
		close(results)
		if r.d != nil { // with an error only if its content header could not be decoded
			first, d = r.i, r.d
		}
		err = r.err
		for r := range results {
			if r.d != nil {
				extra = append(extra, r.d)
			}
		}
	}

	// Cancel every consumer, even if ctx ended: until cancel-ok the broker
	// may deliver more, and those go back too.
	cctx, cancel := cleanupContext(ctx)
	defer cancel()
	fit = true
	var mu sync.Mutex
	for _, c := range consumers {
		if c == nil {
			continue
		}
		wg.Go(func() {
			if err := c.Cancel(cctx); err != nil {
				mu.Lock()
				fit = false
				mu.Unlock()
				return
			}
			for {
				d, _ := c.Next(cctx)
				if d == nil {
					break // ended (err); a delivery comes with an error only if malformed
				}
				mu.Lock()
				extra = append(extra, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, x := range extra {
		if x.Reject(amqp.RejectOptions{Requeue: true}) != nil {
			fit = false // closing the channel requeues it
		}
	}
	if first < 0 {
		if err == nil {
			err = errors.New("layer: no delivery") // not reached
		}
		return nil, -1, fit, fmt.Errorf("layer: receiving: %w", err)
	}
	if err := d.Ack(amqp.AckOptions{}); err != nil {
		// The connection is gone; the broker requeues the message.
		return nil, -1, false, fmt.Errorf("layer: receiving: %w", err)
	}
	return d, first, fit, err // nil, or the delivery's amqp.ContentError
}

// malformed sorts out what Get returned: a message whose content header
// could not be decoded (amqp.ErrMalformedContent) was still taken, and is
// to be settled and reported as a MessageError rather than treated as a
// failed call. It returns the delivery, that error (bad), and the error
// left for the caller.
func malformed(d *amqp.Delivery, err error) (_ *amqp.Delivery, bad, rest error) {
	if d != nil && errors.Is(err, amqp.ErrMalformedContent) {
		return d, err, nil
	}
	return d, nil, err
}
