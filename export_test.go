package amqp

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
