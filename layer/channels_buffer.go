package layer

import (
	"maps"
	"time"

	"github.com/amqp-go/amqp"
)

// The buffer of a channels_rabbitmq-mode layer (multiqueue.py, MultiQueue):
// its consumer puts each delivery there for its local recipients, Receive
// takes from it, and a delivery is acknowledged once every recipient took
// its copy or the copy expired locally.

// localItem is one recipient's copy of a message.
type localItem struct {
	msg Message
	at  time.Time
	ack *pendingAck
}

// pendingAck acknowledges a delivery once its last local recipient took its
// copy (guarded by channelsWire.mu).
type pendingAck struct {
	d    *amqp.Delivery
	left int
}

// deliver buffers a delivery for its local recipients (MultiQueue.put_nowait):
// the channel it names, or the group's local members at this moment. One
// that has none, or that is not a channels_rabbitmq message, is
// acknowledged and dropped.
func (w *channelsWire) deliver(d *amqp.Delivery) {
	m, err := w.l.cfg.codec.decode(d.Body)
	var recipients []string
	if err == nil {
		channel, isChannel := m[channelKey].(string)
		group, isGroup := m[groupKey].(string)
		delete(m, channelKey)
		delete(m, groupKey)
		w.mu.Lock()
		switch {
		case isChannel && !isGroup:
			recipients = []string{channel}
		case isGroup && !isChannel:
			for c := range w.groups[group] {
				recipients = append(recipients, c)
			}
		}
		if len(recipients) > 0 {
			p := &pendingAck{d: d, left: len(recipients)}
			now := time.Now()
			for i, c := range recipients {
				msg := m
				if i > 0 {
					msg = maps.Clone(m) // each recipient may change its own
				}
				w.local[c] = append(w.local[c], &localItem{msg: msg, at: now, ack: p})
			}
			close(w.notify)
			w.notify = make(chan struct{})
		}
		w.mu.Unlock()
	}
	if len(recipients) == 0 {
		d.Ack(amqp.AckOptions{}) // settling never waits: no ctx to bound it
	}
}

// take pops the oldest message of the first channel that has one, dropping
// messages past LocalExpiry, and returns the delivery to acknowledge if it
// was the last copy. Called with w.mu held.
func (w *channelsWire) take(channels []string) (channel string, item *localItem, done []*amqp.Delivery) {
	expiry := w.l.cfg.LocalExpiry
	now := time.Now()
	for _, c := range channels {
		q := w.local[c]
		for len(q) > 0 {
			it := q[0]
			q[0] = nil
			q = q[1:]
			if it.ack.left--; it.ack.left == 0 {
				done = append(done, it.ack.d)
			}
			if expiry > 0 && now.Sub(it.at) > expiry {
				continue
			}
			item, channel = it, c
			break
		}
		if len(q) == 0 {
			delete(w.local, c)
		} else {
			w.local[c] = q
		}
		if item != nil {
			return channel, item, done
		}
	}
	return "", nil, done
}

func ackAll(ds []*amqp.Delivery) {
	if len(ds) == 0 {
		return
	}
	for _, d := range ds {
		// A delivery from a lost connection cannot be acknowledged: its
		// queue went with the connection, as in Python.
		d.Ack(amqp.AckOptions{})
	}
}

// expireLocally drops buffered messages older than LocalExpiry
// (MultiQueue.expire_locally_until_closed), which frees their prefetch.
func (w *channelsWire) expireLocally() {
	t := time.NewTicker(max(w.l.cfg.LocalExpiry/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-w.stop:
			return
		case <-t.C:
		}
		var done []*amqp.Delivery
		cutoff := time.Now().Add(-w.l.cfg.LocalExpiry)
		w.mu.Lock()
		for c, q := range w.local {
			n := 0
			for n < len(q) && q[n].at.Before(cutoff) {
				if q[n].ack.left--; q[n].ack.left == 0 {
					done = append(done, q[n].ack.d)
				}
				n++
			}
			if n == len(q) {
				delete(w.local, c)
			} else if n > 0 {
				w.local[c] = q[n:]
			}
		}
		w.mu.Unlock()
		ackAll(done)
	}
}
