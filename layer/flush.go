package layer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/amqp-go/amqp"
)

// Flush removes everything of the layer's namespace from the broker, bounded
// by ctx: every channel with its messages, every group and every
// membership, whichever layer made them. It is for tests and resets: a
// layer that is in use meanwhile may recreate what it uses (a Receive
// waiting on a flushed channel fails with its queue's 404 and the next call
// declares it again), and what is created while Flush runs may survive it.
//
// Native mode only. Neither Python layer has flush (asgi_rabbitmq 0.5.5
// and channels_rabbitmq raise NotImplementedError), so in their modes Flush
// fails with an [*UnsupportedError] and removes nothing.
//
// AMQP cannot list queues and exchanges, so the native layer keeps a
// registry on the broker: the queue "<ns>:registry", where each declaration
// of a channel and each GroupAdd leaves the names of what it declared (an
// unconfirmed publish, after the declaration: no added wait), for as long as
// those objects can live (3 × Expiry, or GroupExpiry, and a minute more).
// Flush reads it and deletes what it names.
func (l *Layer) Flush(ctx context.Context) error {
	if l.cfg.Mode != Native {
		return &UnsupportedError{Mode: l.cfg.Mode, Feature: "Flush", Reason: "the Python layer has no flush"}
	}
	s, ch, err := l.channel(ctx)
	if err != nil {
		return err
	}
	fit := false
	defer func() { s.put(ch, fit) }()
	if err := l.declareRegistry(ctx, s, ch); err != nil {
		return err
	}
	queues, exchanges := map[string]bool{}, map[string]bool{}
	for {
		d, err := ch.Get(ctx, amqp.BasicGet{Queue: l.registryName(), NoAck: true})
		d, _, err = malformed(d, err) // the registry is read from the body alone
		if errors.Is(err, amqp.ErrEmpty) {
			break
		}
		if err != nil {
			return fmt.Errorf("layer: flush: reading the registry: %w", err)
		}
		for line := range strings.SplitSeq(string(d.Body), "\n") {
			kind, name, _ := strings.Cut(line, " ")
			// Only names of this namespace: the registry is a queue
			// anyone may publish to.
			if !strings.HasPrefix(name, l.cfg.Namespace+":") {
				continue
			}
			switch kind {
			case "queue":
				queues[name] = true
			case "exchange":
				exchanges[name] = true
			}
		}
	}
	var calls []func() error
	for q := range queues {
		calls = append(calls, func() error {
			_, err := ch.QueueDelete(ctx, amqp.QueueDelete{Queue: q})
			return err
		})
	}
	for x := range exchanges {
		calls = append(calls, func() error { return ch.ExchangeDelete(ctx, amqp.ExchangeDelete{Exchange: x}) })
	}
	// RabbitMQ answers ok for what is already gone.
	if err := pipelined(calls...); err != nil && !errors.Is(err, amqp.ErrNotFound) {
		return fmt.Errorf("layer: flush: %w", err)
	}
	s.mu.Lock()
	clear(s.declared)
	s.mu.Unlock()
	fit = true
	return nil
}

func (l *Layer) registryName() string { return l.cfg.Namespace + ":registry" }

// registryTTL is how long an entry stays: as long as what it names can
// live. A channel's queue is declared again at least every Expiry while it
// is used, and goes 2 × Expiry after its last use; a membership lasts
// GroupExpiry after its last GroupAdd.
func (l *Layer) registryTTL() int64 {
	return millis(max(3*l.cfg.Expiry, l.cfg.GroupExpiry) + time.Minute)
}

func (l *Layer) declareRegistry(ctx context.Context, s *session, ch *amqp.Channel) error {
	q := l.registryName()
	s.mu.Lock()
	until, ok := s.declared[q]
	s.mu.Unlock()
	if ok && time.Now().Before(until) {
		return nil
	}
	ttl := l.registryTTL()
	_, err := ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Arguments: amqp.Table{
		"x-message-ttl": ttl,
		"x-expires":     ttl, // a declaration renews it; publishes do not
	}})
	if errors.Is(err, amqp.ErrPreconditionFailed) {
		// Declared by a layer of the namespace with another Expiry or
		// GroupExpiry: use it as it is, rather than fail every call.
		_, err = ch.QueueDeclare(ctx, amqp.QueueDeclare{Queue: q, Passive: true})
	}
	if err != nil {
		return fmt.Errorf("layer: declaring the registry %q: %w", q, err)
	}
	s.noteDeclared(q, time.Now().Add(time.Duration(ttl)*time.Millisecond/2))
	return nil
}

// register notes in the registry what a call declared, as "queue <name>"
// and "exchange <name>" lines. A name this session noted within half the
// registry's TTL is not noted again: its entry still lives, and a site that
// adds the same channel to a group on every websocket connect must not grow
// the registry with every call.
func (l *Layer) register(ctx context.Context, s *session, ch *amqp.Channel, entries ...string) error {
	now := time.Now()
	fresh := entries[:0:0]
	s.mu.Lock()
	for _, e := range entries {
		if until, ok := s.declared["registered "+e]; !ok || now.After(until) {
			fresh = append(fresh, e)
		}
	}
	s.mu.Unlock()
	if len(fresh) == 0 {
		return nil
	}
	if err := l.declareRegistry(ctx, s, ch); err != nil {
		return err
	}
	// Not confirmed: the call does not wait for it.
	_, err := ch.Publish(ctx, amqp.Publishing{RoutingKey: l.registryName(), Body: []byte(strings.Join(fresh, "\n"))})
	if err != nil {
		return fmt.Errorf("layer: noting %q in the registry: %w", fresh, err)
	}
	until := now.Add(time.Duration(l.registryTTL()) * time.Millisecond / 2)
	for _, e := range fresh {
		s.noteDeclared("registered "+e, until)
	}
	return nil
}
