package amqp

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"sync"
)

// topology records the exchanges, queues and bindings the application
// declared through a connection with recovery on, so that a recovery can
// declare them again. Deleting an entity forgets it, with its bindings.
type topology struct {
	mu        sync.Mutex
	seq       uint64 // declaration order
	exchanges map[string]recordedExchange
	queues    map[string]recordedQueue
	bindings  map[string]recordedBinding // by bindingKey
}

type recordedExchange struct {
	seq  uint64
	args ExchangeDeclare
}

type recordedQueue struct {
	seq         uint64
	args        QueueDeclare // Queue is the current name
	serverNamed bool         // declared with an empty name: a recovery asks for a new one
}

type recordedBinding struct {
	seq      uint64
	queue    *QueueBind    // a queue binding, or
	exchange *ExchangeBind // an exchange-to-exchange binding
}

func (t *topology) init() {
	t.exchanges = map[string]recordedExchange{}
	t.queues = map[string]recordedQueue{}
	t.bindings = map[string]recordedBinding{}
}

func (t *topology) next() uint64 { t.seq++; return t.seq }

// bindingKey identifies a binding as the server does: kind, source,
// destination, routing key and arguments.
func bindingKey(kind, source, destination, key string, args Table) string {
	enc, _ := appendTable(nil, args) // it was encoded once already to be sent
	return strings.Join([]string{kind, source, destination, key, string(enc)}, "\x00")
}

// recording reports whether declarations on ch are to be recorded.
func (ch *Channel) recording() bool {
	rc := ch.conn.cfg.Recovery
	return rc != nil && !rc.SkipTopology && ch.owner == appChannel
}

// recordTopology runs, on the reader as the reply arrives (or as a no-wait
// request is sent), the bookkeeping for a successful topology method.
func (ch *Channel) recordTopology(req Method, reply Method) {
	t := &ch.conn.rec.topo
	t.mu.Lock()
	defer t.mu.Unlock()
	switch m := req.(type) {
	case *ExchangeDeclare:
		if m.Passive || m.Exchange == "" || strings.HasPrefix(m.Exchange, "amq.") {
			return
		}
		seq := t.next()
		if old, ok := t.exchanges[m.Exchange]; ok {
			seq = old.seq
		}
		t.exchanges[m.Exchange] = recordedExchange{seq: seq, args: *m}
	case *ExchangeDelete:
		delete(t.exchanges, m.Exchange)
		for k, b := range t.bindings {
			if b.queue != nil && b.queue.Exchange == m.Exchange ||
				b.exchange != nil && (b.exchange.Source == m.Exchange || b.exchange.Destination == m.Exchange) {
				delete(t.bindings, k)
			}
		}
	case *QueueDeclare:
		if m.Passive {
			return
		}
		args, serverNamed := *m, m.Queue == ""
		if ok, isOk := reply.(*QueueDeclareOk); isOk {
			args.Queue = ok.Queue
		}
		if args.Queue == "" {
			return // server-named with no-wait: the name is unknown
		}
		args.NoWait = false
		seq := t.next()
		if old, ok := t.queues[args.Queue]; ok {
			seq, serverNamed = old.seq, old.serverNamed
		}
		t.queues[args.Queue] = recordedQueue{seq: seq, args: args, serverNamed: serverNamed}
	case *QueueDelete:
		t.forgetQueueLocked(m.Queue)
	case *QueueBind:
		b := *m
		b.NoWait = false
		t.bindings[bindingKey("q", m.Exchange, m.Queue, m.RoutingKey, m.Arguments)] = recordedBinding{seq: t.next(), queue: &b}
	case *QueueUnbind:
		delete(t.bindings, bindingKey("q", m.Exchange, m.Queue, m.RoutingKey, m.Arguments))
	case *ExchangeBind:
		b := *m
		b.NoWait = false
		t.bindings[bindingKey("e", m.Source, m.Destination, m.RoutingKey, m.Arguments)] = recordedBinding{seq: t.next(), exchange: &b}
	case *ExchangeUnbind:
		delete(t.bindings, bindingKey("e", m.Source, m.Destination, m.RoutingKey, m.Arguments))
	}
}

// forgetQueueLocked forgets a queue and its bindings. t.mu must be held.
func (t *topology) forgetQueueLocked(name string) {
	delete(t.queues, name)
	for k, b := range t.bindings {
		if b.queue != nil && b.queue.Queue == name {
			delete(t.bindings, k)
		}
	}
}

// consumerCancelled forgets a recorded auto-delete queue once the last
// consumer of it on this connection is cancelled: the broker deletes the
// queue then, and declaring it again on recovery would leave an orphan.
func (c *Connection) consumerCancelled(queue string) {
	t := &c.rec.topo
	t.mu.Lock()
	q, ok := t.queues[queue]
	t.mu.Unlock()
	if !ok || !q.args.AutoDelete {
		return
	}
	for _, ch := range c.channelList() {
		ch.mu.Lock()
		for _, cons := range ch.consumers {
			cons.mu.Lock()
			same := cons.args.Queue == queue
			cons.mu.Unlock()
			if same {
				ch.mu.Unlock()
				return
			}
		}
		ch.mu.Unlock()
	}
	t.mu.Lock()
	t.forgetQueueLocked(queue)
	t.mu.Unlock()
}

// snapshot returns the recorded topology in declaration order.
func (t *topology) snapshot() ([]recordedExchange, []recordedQueue, []recordedBinding) {
	t.mu.Lock()
	defer t.mu.Unlock()
	bySeq := func(a, b uint64) int { return cmp.Compare(a, b) }
	ex := slices.SortedFunc(maps.Values(t.exchanges), func(a, b recordedExchange) int { return bySeq(a.seq, b.seq) })
	qs := slices.SortedFunc(maps.Values(t.queues), func(a, b recordedQueue) int { return bySeq(a.seq, b.seq) })
	bs := slices.SortedFunc(maps.Values(t.bindings), func(a, b recordedBinding) int { return bySeq(a.seq, b.seq) })
	return ex, qs, bs
}

// rename moves a server-named queue's record, and its bindings, to the name
// the server gave it on recovery.
func (t *topology) rename(oldName, newName string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q, ok := t.queues[oldName]
	if !ok {
		return
	}
	delete(t.queues, oldName)
	q.args.Queue = newName
	t.queues[newName] = q
	for k, b := range t.bindings {
		if b.queue != nil && b.queue.Queue == oldName {
			nb := *b.queue
			nb.Queue = newName
			delete(t.bindings, k)
			t.bindings[bindingKey("q", nb.Exchange, nb.Queue, nb.RoutingKey, nb.Arguments)] = recordedBinding{seq: b.seq, queue: &nb}
		}
	}
}
