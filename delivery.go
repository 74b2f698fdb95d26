package amqp

import (
	"sync"
	"sync/atomic"
)

// Delivery is a message received from the server: pushed to a consumer
// (basic.deliver) or fetched with [Channel.Get] (basic.get-ok).
type Delivery struct {
	ConsumerTag string // the consumer it was delivered to; "" for Get
	DeliveryTag uint64 // the channel-scoped tag that acknowledges it
	Exchange    string // the exchange it was published to
	RoutingKey  string // the routing key it was published with

	// MessageCount is, for Get, how many messages remained in the queue.
	MessageCount uint32
	Redelivered  bool // it was delivered before and not acknowledged

	// Packed next to the two fields above, so that a Delivery with a small
	// body fits a smaller allocation size class.
	noAck    bool // the server considers it acknowledged already
	reusable bool // its consumer has ConsumerOptions.Recycle: Release hands it back
	released bool // Release handed it back; set until the reader reuses it

	Properties
	Body []byte

	// epoch names the channel and the span of delivery tags the delivery
	// arrived in; acknowledgements from an older one are stale. One pointer
	// rather than a channel and a counter keeps room for err in the same
	// allocation size classes.
	epoch *epoch
	err   *ContentError // the content header could not be decoded; see Err
}

// epoch is one span of a channel's delivery tags. The server numbers
// deliveries afresh after a reopen, a basic.recover or a requeueing
// tx.rollback, and the channel then starts a new epoch.
type epoch struct{ ch *Channel }

// newEpochLocked starts a new span of delivery tags: deliveries from before
// become stale. ch.mu must be held (or ch not yet shared).
func (ch *Channel) newEpochLocked() {
	e := &epoch{ch: ch}
	ch.epoch.Store(e)
	if ch.traces != nil {
		ch.traceEpochEnded(e)
	}
}

// Err returns nil for a normal delivery, and a [*ContentError] when the
// message's content header could not be decoded: the delivery then holds the
// properties that came before the fault and the whole body, and must still
// be settled. Next and Get return the same error alongside the delivery.
func (d *Delivery) Err() error {
	if d.err == nil {
		return nil
	}
	return d.err
}

// Release hands the delivery back to the library, which reuses its memory
// (the Delivery and the array under Body) for a later message on the same
// channel instead of allocating. It only does so for deliveries of a
// consumer started with [ConsumerOptions.Recycle]; for any other delivery
// it does nothing, so it is always safe to call.
//
// After Release, the delivery must not be used any more, nor any slice of
// Body: the next message may overwrite them at any moment. Copy what you keep
// first. Acknowledge before releasing: Ack, Nack and Reject of a released
// delivery return ErrReleased until the delivery is reused; after that the
// same pointer is a different message, so releasing and then acknowledging
// can acknowledge the wrong message. A multiple acknowledgement of a later
// delivery still settles a released one. A second Release is ignored until
// the delivery is reused. Release must not be called concurrently with other
// use of the delivery. The race detector reports a use after Release as a
// data race with the reader goroutine once the delivery is reused.
//
// What a channel keeps for reuse is bounded (4096 deliveries, 4 MiB of
// bodies); past that, released deliveries or their bodies are left to the
// garbage collector.
func (d *Delivery) Release() {
	if !d.reusable || d.released {
		return
	}
	if d.epoch.ch.traces != nil {
		d.epoch.ch.traceReleased(d)
	}
	d.released = true
	d.epoch.ch.reader.bin.put(d)
}

// deliveryBin holds a channel's released deliveries until the reader reuses
// them. The reader takes the whole bin at once into its own stash
// (assembly.spare), so it locks the bin once per batch, not per message.
type deliveryBin struct {
	n     atomic.Int32 // len(free): the reader skips the lock while the bin is empty
	mu    sync.Mutex
	free  []*Delivery
	bytes int // body capacity held by free
}

// What a bin keeps after a burst is bounded: at most maxBinned deliveries
// and maxBinnedBytes of body arrays. A delivery released past the byte bound
// is kept without its body array.
const (
	maxBinned      = DefaultBufferLimit // a consumer buffers this many by default: as many may be in flight
	maxBinnedBytes = 4 << 20
)

func (b *deliveryBin) put(d *Delivery) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.free) >= maxBinned {
		return
	}
	if c := cap(d.Body); b.bytes+c > maxBinnedBytes {
		d.Body = nil
	} else {
		b.bytes += c
	}
	b.free = append(b.free, d)
	b.n.Store(int32(len(b.free)))
}

// takeAll moves the bin's deliveries into stash, which must be empty, and
// gives the bin stash's array to fill next.
func (b *deliveryBin) takeAll(stash []*Delivery) []*Delivery {
	if b.n.Load() == 0 {
		return stash
	}
	b.mu.Lock()
	stash, b.free = b.free, stash[:0]
	b.n.Store(0)
	b.bytes = 0
	b.mu.Unlock()
	return stash
}
