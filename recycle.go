package amqp

import (
	"sync"
	"sync/atomic"
)

// Recycling: a delivery handed back with Release waits in its channel's
// deliveryBin until the reader's assembly reuses it (assembly.newDelivery).
// This is the one place an application goroutine and the reader share a
// delivery's memory; the assembly itself runs on the reader alone.

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
