package amqp

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The lead: who reads a link's socket.
//
// The reader goroutine reads the socket and pushes each delivery to its
// consumer's buffer, and a Next that waits is woken once per read
// (wakeList). Each such wake is a hand-off between two goroutines, paid
// per socket read; with a broker that sends a few messages per read, and
// client and broker sharing two cores, it costs more than the delivery.
//
// So when a connection has a single consumer and its Next is waiting, the
// reader lends it the socket: the reader goroutine parks, and the
// consumer's own goroutine, in Next, reads and dispatches frames until its
// buffer has deliveries, then returns with the socket still lent (the
// lease). Its next Next that finds the buffer empty reads again, with no
// goroutine between the application and the socket.
//
// The lease ends, and the reader goroutine reads again, when:
//   - the leader reads a frame it does not handle (anything but deliveries,
//     their content, confirms and heartbeats): it hands that frame back;
//   - a read fails, a frame is malformed, or the leader would have to wait
//     for a consumer's room (backpressure): it hands that back too;
//   - Next's ctx ends or the consumer ends while it reads (a read deadline
//     interrupts the read; the frame reader goes on where it stopped);
//   - anyone else starts waiting for what the reader reads (a call's
//     reply, a confirmation, another consumer's Next, an unblock): they
//     take the lease back (link.needReader) while the application works
//     between two Next calls. No lease is made while a call, a Close, a
//     Confirmation.Wait or a held publish waits (Channel.await), nor with a
//     second consumer;
//   - the lease has lasted leaseMax with nobody reading (the lease timer):
//     server-initiated frames (a channel's close, a cancel, a return) wait
//     at most that long.
//
// The role moves by atomic compare-and-swap on lead.word and by the hand-back
// channel, so whoever holds it may use the frame reader and the reader's
// state (linkReader) alone, as the reader goroutine did.
type leadRole struct {
	on  bool          // the link lends its socket: its conn takes read deadlines (Config.noLend off)
	max time.Duration // leaseMax, or Config.leaseMax in tests

	word     atomic.Uint64 // epoch<<2 | roleState: the epoch changes with each lease
	lessee   atomic.Pointer[Consumer]
	leasedAt atomic.Int64               // unix nanos of the last lease (for the lease timer)
	back     chan handback              // cap 1: the reader goroutine waits here while a consumer holds the role
	rd       atomic.Pointer[linkReader] // the reader's state, for the leader
	leads    atomic.Uint64              // reads a Next did in the leader's role; tests read it
	watch    leadWatch                  // a leading Next's ctx and the consumer's end interrupt its read

	// Held by whoever reads (the reader goroutine, or a leading Next).
	leading  bool            // a Next reads: link.waitForRoom must not wait
	room     <-chan struct{} // a wait for room the leader leaves to the reader goroutine
	roomDone <-chan struct{}

	// The lease timer.
	mu      sync.Mutex // guards timer, armed and stopped
	timer   *time.Timer
	armed   bool
	stopped bool
	ticks   sync.WaitGroup // the armed or running timer function (as heartbeat.ticks)
}

type roleState uint64

const (
	roleReader  roleState = iota // the reader goroutine reads
	roleLeased                   // lent to a consumer that does not read now
	roleLeading                  // a Next of the lessee reads
)

func stateOf(w uint64) roleState { return roleState(w & 3) }

// with returns the word w with state s, in the same lease.
func with(w uint64, s roleState) uint64 { return w&^3 | uint64(s) }

// newLease returns the word of the lease after w's.
func newLease(w uint64) uint64 { return (w>>2+1)<<2 | uint64(roleLeased) }

// leaseMax bounds a lease while nobody reads: the delay of a frame nobody
// waits for in the library (a server's channel.close, a cancel, a return).
const leaseMax = time.Millisecond

// handback is what a leader gives the reader goroutine with the role: the
// work it left (at most one of these), or nothing. A wait for room goes in
// leadRole.room, which comes with the role.
type handback struct {
	frame    Frame // a frame the leader read but does not handle; Type 0: none
	readErr  error // the read failed: the link ends
	protoErr error // the server broke the protocol: the link ends
}

// initLead decides whether the link lends its socket: only when a read
// deadline can interrupt a leader's read (net.Conn implementations may
// refuse deadlines).
func (l *link) initLead() {
	l.lead.back = make(chan handback, 1)
	l.lead.on = !l.c.cfg.noLend && l.conn.SetReadDeadline(time.Time{}) == nil
	l.lead.max = cmp.Or(l.c.cfg.leaseMax, leaseMax)
}

// lendTo lends the socket to c, whose Next waits for what was just read. The
// reader goroutine calls it, then wakes c and waits for the role's return.
func (l *link) lendTo(c *Consumer) {
	r := &l.lead
	r.lessee.Store(c)
	r.leasedAt.Store(nowNano())
	r.word.Store(newLease(r.word.Load()))
	l.armLease()
	l.recheckLease()
}

// takeLead makes c's Next the leader, if c holds the lease.
func (l *link) takeLead(c *Consumer) bool {
	r := &l.lead
	w := r.word.Load()
	return stateOf(w) == roleLeased && r.lessee.Load() == c && r.word.CompareAndSwap(w, with(w, roleLeading))
}

// keepLease ends a leader's reading with the socket still lent to it.
func (l *link) keepLease() {
	r := &l.lead
	r.leading = false
	r.leasedAt.Store(nowNano())
	r.word.Store(newLease(r.word.Load()))
	l.armLease()
	l.recheckLease()
}

// recheckLease takes back the lease just stored if someone waits for the
// reader: a waiter that came while the role was the reader's or a
// leader's found no lease to take back (its needReader did nothing), and
// a second consumer's Next may wait for deliveries nobody would read. The
// lease is stored before the loads here and the waiters count before their
// needReader loads the word, so one of the two sides sees the other.
func (l *link) recheckLease() {
	if l.c.readerWaiters.Load() > 0 || l.c.consumerCount.Load() != 1 {
		l.needReader()
	}
}

// handBack ends a leader's reading and gives the role to the reader goroutine.
func (l *link) handBack(h handback) {
	r := &l.lead
	r.leading = false
	r.word.Store(with(r.word.Load(), roleReader))
	r.back <- h
}

// needReader takes the lease back for the reader goroutine, if the socket
// is lent to a consumer that is not reading: whoever is about to wait for
// something the reader reads calls it. Otherwise it costs one atomic load.
func (l *link) needReader() {
	r := &l.lead
	w := r.word.Load()
	if stateOf(w) == roleLeased && r.word.CompareAndSwap(w, with(w, roleReader)) {
		r.back <- handback{}
	}
}

// needReader is link.needReader for the connection's current link: the
// only one that can hold a lease (a link is current before its reader
// starts, and stops being current only after its reader has exited).
func (c *Connection) needReader() {
	if l := c.cur.Load(); l != nil {
		l.needReader()
	}
}

// await marks the caller as waiting for what the reader reads, until it
// calls awaited: a lease held now is taken back, and none is made meanwhile
// (recheckLease). The count is the connection's, not a link's, so a waiter
// that began while the channel had no link (a recovery) counts on the link
// that comes; and the lease is taken back from the connection's current
// link, which is stored before its reader starts (so before any lease on
// it): a lease this claim misses was stored after the count went up, and
// its recheck sees the count.
func (ch *Channel) await() {
	ch.conn.readerWaiters.Add(1)
	ch.conn.needReader()
}

// awaited ends an await.
func (ch *Channel) awaited() { ch.conn.readerWaiters.Add(-1) }

// armLease arms the lease timer unless it is armed already, for the lease
// just stored. Once the link's closer has stopped the timer, it takes the
// lease back at once instead: the closer's own claim may have come before
// the lease, and the reader goroutine must read, fail and exit.
func (l *link) armLease() {
	r := &l.lead
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		l.needReader()
		return
	}
	if !r.armed {
		r.armed = true
		r.ticks.Add(1)
		if r.timer == nil {
			r.timer = time.AfterFunc(r.max, l.leaseTick)
		} else {
			r.timer.Reset(r.max)
		}
	}
	r.mu.Unlock()
}

// leaseTick takes back a lease that lasted leaseMax, re-arms for a younger
// one, and otherwise leaves the timer disarmed (the next lease arms it).
func (l *link) leaseTick() {
	r := &l.lead
	defer r.ticks.Done()
	r.mu.Lock()
	r.armed = false
	w := r.word.Load()
	if r.stopped || stateOf(w) != roleLeased {
		r.mu.Unlock()
		return
	}
	// leasedAt is stored before word: it is this lease's start or later.
	if age := time.Duration(nowNano() - r.leasedAt.Load()); age < r.max {
		r.armed = true
		r.ticks.Add(1)
		r.timer.Reset(r.max - age)
		r.mu.Unlock()
		return
	}
	r.mu.Unlock()
	if r.word.CompareAndSwap(w, with(w, roleReader)) {
		r.back <- handback{}
	}
}

// stopLead is the link closer's part: the socket is closed, so a leader's
// read fails and hands the role back; a lease is taken back, so the reader
// goroutine reads, fails and exits. When it returns no lease timer runs.
func (l *link) stopLead() {
	r := &l.lead
	r.mu.Lock()
	r.stopped = true
	if r.timer != nil && r.timer.Stop() {
		r.ticks.Done()
	}
	r.mu.Unlock()
	r.ticks.Wait()
	l.needReader()
	l.releaseWatch()
}

// lendable returns the consumer to lend the socket to before the reader
// goroutine reads again, or nil: the one consumer a delivery of this read
// was for, whose Next waits, when it is the connection's only consumer.
func (r *linkReader) lendable() *Consumer {
	l := r.l
	if !l.lead.on || len(l.wake.pending) != 1 || l.c.consumerCount.Load() != 1 || l.c.readerWaiters.Load() > 0 || r.fr.buffered() || l.ended() {
		return nil
	}
	c := l.wake.pending[0]
	if c.Err() != nil { // it ended within this read (its cancel-ok came after the delivery)
		return nil
	}
	return c
}

// lend lends the socket to c and waits for the role to come back, then does
// what the leader left. It reports false when the link has ended.
func (r *linkReader) lend(c *Consumer) bool {
	l := r.l
	// c is the wake list's only entry: take it off before the lease starts,
	// since from then on the list is the leader's.
	l.wake.pending[0] = nil
	l.wake.pending, l.wake.batched = l.wake.pending[:0], 0
	if f := l.c.cfg.beforeLease; f != nil {
		f()
	}
	l.lendTo(c)
	c.wake()
	h := <-l.lead.back
	switch {
	case h.readErr != nil:
		r.readFailed(h.readErr)
		return false
	case h.protoErr != nil:
		r.protocolFailure(h.protoErr)
		return false
	case h.frame.Type != 0:
		return r.handle(h.frame)
	case l.lead.room != nil:
		room, done := l.lead.room, l.lead.roomDone
		l.lead.room, l.lead.roomDone = nil, nil
		l.waitForRoom(room, done)
	}
	return true
}

// lead reads the socket for c's Next, which took the lease (link.takeLead),
// and dispatches what it reads as the reader goroutine would, until c has
// deliveries (it returns true, the socket still lent to c) or it must hand
// the role back (false: Next then waits as usual). ctx ending, or c ending,
// interrupts a read; ctx's error is returned.
func (r *linkReader) lead(ctx context.Context, c *Consumer) (bool, error) {
	l := r.l
	l.lead.leading = true
	l.lead.leads.Add(1)
	l.watchLead(ctx)
	keep, h, err := r.readFor(ctx, c)
	l.unwatchLead() // before anyone else reads the socket
	if keep {
		l.keepLease()
	} else {
		l.handBack(h)
	}
	return keep, err
}

// readFor is lead's loop: it reports keep when c has deliveries, and
// otherwise what to hand back, with ctx's error if a read was interrupted.
func (r *linkReader) readFor(ctx context.Context, c *Consumer) (keep bool, h handback, err error) {
	l := r.l
	for {
		if !r.fr.buffered() {
			l.wake.wakeAll()
			if c.hasBuffered() {
				return true, handback{}, nil
			}
			if err := ctx.Err(); err != nil {
				return false, handback{}, err
			}
		}
		f, err := r.fr.ReadFrame()
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded): // interrupted: the frame reader goes on later
			return false, handback{}, ctx.Err()
		case err != nil:
			return false, handback{readErr: err}, nil
		case !leaderHandles(f):
			return false, handback{frame: f}, nil
		}
		if err := r.dispatch(f); err != nil {
			return false, handback{protoErr: err}, nil
		}
		l.wake.dispatched()
		if l.lead.room != nil { // handed back with the role (see lend)
			return false, handback{}, nil
		}
	}
}

// leaderHandles reports whether a leader dispatches f itself: heartbeats,
// content frames, and the methods that come at message rate (deliveries,
// confirms). Other methods are handed back: a channel's close, a reply and
// its hook, a cancel are the reader goroutine's work. Content frames are
// the leader's whatever method they complete: the get-ok or return they
// belong to went through the reader, and completing one resolves the call
// (a get's hook may requeue under ch.mu) or queues the listeners
// (channelReader.handleContent): nothing that waits, and nothing a
// goroutine does differently.
func leaderHandles(f Frame) bool {
	switch f.Type {
	case FrameHeartbeat, FrameHeader, FrameBody:
		return true
	case FrameMethod:
		if f.Channel == 0 || len(f.Payload) < 4 {
			return false
		}
		switch keyOf(binary.BigEndian.Uint16(f.Payload), binary.BigEndian.Uint16(f.Payload[2:])) {
		case keyBasicDeliver, keyBasicAck, keyBasicNack:
			return true
		}
	}
	return false
}

// leadWatch lets a leading Next's ctx, or its consumer's end, interrupt
// the Next's read with a read deadline. It is the link's (one leader at a
// time), and the ctx's hook is kept between leads while the ctx stays the
// same (the same Done channel), so a Next loop on one ctx registers it once.
type leadWatch struct {
	mu          sync.Mutex
	done        <-chan struct{} // the ctx's Done: ctxs are compared by it (a ctx value may not be comparable)
	stop        func() bool
	leading     bool // a Next reads: an interrupt sets the deadline
	interrupted bool // a deadline is set on the socket
	released    bool // the link ended: no hook is registered any more
}

// watchLead arms the interruption of a lead by ctx (or the consumer's end).
func (l *link) watchLead(ctx context.Context) {
	w := &l.lead.watch
	w.mu.Lock()
	w.leading = true
	if done := ctx.Done(); w.done != done {
		if w.stop != nil {
			w.stop() // (one that fired already interrupts this lead at worst: Next then waits as usual)
			w.stop = nil
		}
		w.done = done
		if done != nil && !w.released { // (a lead after the link's end reads a closed socket and fails)
			w.stop = context.AfterFunc(ctx, l.interruptLead)
		}
	}
	w.mu.Unlock()
}

// interruptLead ends the read of a leading Next: its ctx ended, or its
// consumer did.
func (l *link) interruptLead() {
	w := &l.lead.watch
	w.mu.Lock()
	if w.leading && !w.interrupted {
		w.interrupted = true
		_ = l.conn.SetReadDeadline(time.Unix(1, 0))
	}
	w.mu.Unlock()
}

// unwatchLead ends a lead's watch; a deadline it set is cleared, before
// anyone else reads the socket.
func (l *link) unwatchLead() {
	w := &l.lead.watch
	w.mu.Lock()
	if w.interrupted {
		w.interrupted = false
		_ = l.conn.SetReadDeadline(time.Time{})
	}
	w.leading = false
	w.mu.Unlock()
}

// releaseWatch drops the ctx hook when the link ends.
func (l *link) releaseWatch() {
	w := &l.lead.watch
	w.mu.Lock()
	if w.stop != nil {
		w.stop()
	}
	w.done, w.stop, w.released = nil, nil, true
	w.mu.Unlock()
}

// hasBuffered reports whether Next would return without waiting.
func (c *Consumer) hasBuffered() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.head < len(c.queue) || c.err != nil
}
