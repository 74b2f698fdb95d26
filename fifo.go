package amqp

// fifo is a first-in first-out queue on a slice: pop advances a head index
// and clears the slot, and the array is reused from the start once the
// queue is empty, or slid down when it is full with read slots at its front,
// so a queue that is never quite empty does not grow for ever. The zero
// value is an empty queue. It is not synchronized: its owner's mutex guards
// it.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) push(v T) {
	if len(q.items) == cap(q.items) && q.head > 0 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, v)
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }

// peek returns the oldest item, or the zero value when the queue is empty.
func (q *fifo[T]) peek() T {
	var zero T
	if q.head == len(q.items) {
		return zero
	}
	return q.items[q.head]
}

// pop removes and returns the oldest item, or the zero value when the
// queue is empty.
func (q *fifo[T]) pop() T {
	var zero T
	if q.head == len(q.items) {
		return zero
	}
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) { // empty: reuse the array from the start
		q.items, q.head = q.items[:0], 0
	}
	return v
}

// drain removes and returns every item, in order; the queue lets its array go.
func (q *fifo[T]) drain() []T {
	out := q.items[q.head:]
	q.items, q.head = nil, 0
	return out
}
