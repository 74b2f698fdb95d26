package amqp

import "sync/atomic"

// chanTable maps channel ids to channels. The reader looks ids up without a
// lock; writers hold the connection's chMu. It grows with the highest id in
// use rather than being sized for channel_max up front: 2047 empty slots
// were 16 KiB of every idle connection.
type chanTable struct {
	slots atomic.Pointer[[]atomic.Pointer[Channel]]
	limit int // the highest id: the first link's channel_max
}

func (t *chanTable) init(limit int) { t.limit = limit }

func (t *chanTable) get(id uint16) *Channel {
	s := t.slots.Load()
	if s == nil || int(id) >= len(*s) {
		return nil
	}
	return (*s)[id].Load()
}

// all returns the slots, to look through under chMu.
func (t *chanTable) all() []atomic.Pointer[Channel] {
	if s := t.slots.Load(); s != nil {
		return *s
	}
	return nil
}

// set stores ch (nil to clear) at id; the caller holds chMu.
func (t *chanTable) set(id uint16, ch *Channel) {
	s := t.all()
	if int(id) >= len(s) {
		if ch == nil {
			return
		}
		grown := make([]atomic.Pointer[Channel], min(max(2*len(s), int(id)+1, 8), t.limit+1))
		for i := range s {
			grown[i].Store(s[i].Load())
		}
		s = grown
		// Filled before it is published: the reader sees the old table or
		// a complete new one.
		defer t.slots.Store(&grown)
	}
	s[id].Store(ch)
}
