package amqp

import "time"

// Internals that the external tests (package amqp_test) read.

// SignalsForTest returns how many wake-ups were handed to the consumer's
// Next (tokens sent on its ready channel).
func (c *Consumer) SignalsForTest() uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.signals
}

// WaitingForTest returns how many Next calls are blocked waiting for a delivery.
func (c *Consumer) WaitingForTest() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiting
}

// WithoutLending returns cfg with lending off: the reader goroutine reads
// everything, as before lead.go.
func WithoutLending(cfg Config) Config {
	cfg.noLend = true
	return cfg
}

// WithLeaseMax returns cfg with the lease timer's bound set to d.
func WithLeaseMax(cfg Config, d time.Duration) Config {
	cfg.leaseMax = d
	return cfg
}

// WithBeforeLease returns cfg with f run on the reader goroutine after it
// decides to lend the socket and before it stores the lease.
func WithBeforeLease(cfg Config, f func()) Config {
	cfg.beforeLease = f
	return cfg
}

// LeadingForTest reports whether a Next of c reads the socket now.
func (c *Consumer) LeadingForTest() bool {
	l := c.ch.link.Load()
	return l != nil && stateOf(l.lead.word.Load()) == roleLeading && l.lead.lessee.Load() == c
}

// LeasedForTest reports whether the socket is lent to c and nobody reads it.
func (c *Consumer) LeasedForTest() bool {
	l := c.ch.link.Load()
	return l != nil && stateOf(l.lead.word.Load()) == roleLeased && l.lead.lessee.Load() == c
}

// LeadsForTest returns how many times a Next took the role of reader on the
// connection's current link.
func (c *Connection) LeadsForTest() uint64 {
	l := c.cur.Load()
	if l == nil {
		return 0
	}
	return l.lead.leads.Load()
}

// ReaderWaitersForTest returns how many callers wait for what a reader
// reads (Channel.await).
func (c *Connection) ReaderWaitersForTest() int32 { return c.readerWaiters.Load() }

// BufferedForTest returns how many deliveries wait in the consumer's buffer.
func (c *Consumer) BufferedForTest() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue) - c.head
}

// ReaderPausedForTest reports whether the reader waits for a consumer's
// room (backpressure).
func (c *Connection) ReaderPausedForTest() bool {
	l := c.cur.Load()
	return l != nil && l.paused.Load()
}
