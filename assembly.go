package amqp

import (
	"bytes"
	"fmt"
)

// assembly collects a content-bearing method's header and body frames.
type assembly struct {
	method Method      // basic.deliver, basic.return or basic.get-ok; nil when idle
	msg    *Delivery   // created when the header arrives
	size   uint64      // body size the header announced
	spare  []*Delivery // released deliveries taken from the channel's bin, reused before allocating
}

func (a *assembly) active() bool { return a.method != nil }

func (a *assembly) begin(m Method) { a.method, a.msg, a.size = m, nil, 0 }

type deliveryWithTinyBody struct {
	d   Delivery
	buf [tinyBody]byte
}

type deliveryWithShortBody struct {
	d   Delivery
	buf [shortBody]byte
}

type deliveryWithBody struct {
	d   Delivery
	buf [smallBody]byte
}

// header takes the content header frame. It refuses a body larger than
// maxBody before allocating anything for it. Released deliveries in bin are
// reused before anything is allocated.
func (a *assembly) header(payload []byte, maxBody uint64, strings *stringCache, bin *deliveryBin) (done bool, err error) {
	if a.method == nil || a.msg != nil {
		return false, unexpectedFrame(0, "content header frame without a content method")
	}
	d := decoder{buf: payload, strings: strings}
	d.short() // class id
	d.short() // weight: unused, always 0
	size := d.longlong()
	if d.err != nil {
		return false, fmt.Errorf("decoding content header: %w", d.err)
	}
	if size > maxBody {
		return false, fmt.Errorf("%w: %s announced a %d-byte body, the limit is %d (Config.MaxBodySize)",
			ErrBodyTooLarge, a.method.MethodName(), size, maxBody)
	}
	a.msg = a.newDelivery(size, bin)
	// Straight into the delivery: no intermediate Properties to copy.
	a.msg.Properties.decode(&d)
	if err := d.finish(); err != nil {
		// The body size is known and the frames around it are intact, so
		// this costs the message, not the connection: it is assembled as
		// usual and handed over with the error.
		a.msg.err = &ContentError{Method: a.method.MethodName(), Header: bytes.Clone(payload), Err: err}
	}
	a.size = size
	return size == 0, nil
}

// newDelivery returns an empty Delivery whose Body has room for size bytes:
// a released one if there is one, else a new allocation.
func (a *assembly) newDelivery(size uint64, bin *deliveryBin) *Delivery {
	if len(a.spare) == 0 {
		a.spare = bin.takeAll(a.spare)
	}
	if n := len(a.spare); n > 0 {
		d := a.spare[n-1]
		a.spare[n-1] = nil
		a.spare = a.spare[:n-1]
		body := d.Body[:0] // the array Release handed back with it
		if uint64(cap(body)) < size {
			body = make([]byte, 0, size)
		}
		*d = Delivery{Body: body}
		return d
	}
	switch {
	case size <= tinyBody:
		x := &deliveryWithTinyBody{}
		x.d.Body = x.buf[:0:size]
		return &x.d
	case size <= shortBody:
		x := &deliveryWithShortBody{}
		x.d.Body = x.buf[:0:size]
		return &x.d
	case size <= smallBody:
		x := &deliveryWithBody{}
		x.d.Body = x.buf[:0:size]
		return &x.d
	}
	return &Delivery{Body: make([]byte, 0, size)}
}

// body appends a body frame, reporting when the body is complete.
func (a *assembly) body(payload []byte) (done bool, err error) {
	if a.msg == nil {
		return false, unexpectedFrame(0, "body frame without a content header")
	}
	if uint64(len(a.msg.Body))+uint64(len(payload)) > a.size {
		return false, &Error{Code: CodeFrameError, Connection: true,
			Reason: fmt.Sprintf("body frames exceed the %d bytes the content header announced", a.size)}
	}
	a.msg.Body = append(a.msg.Body, payload...)
	return uint64(len(a.msg.Body)) == a.size, nil
}

// take returns the completed method and message and resets the assembly.
func (a *assembly) take() (Method, *Delivery) {
	m, msg := a.method, a.msg
	a.method, a.msg, a.size = nil, nil, 0
	return m, msg
}

// Bodies up to smallBody bytes are allocated together with their Delivery,
// in one allocation, in one of three sizes so that a tiny body does not pay
// for a large inline buffer. Each size fills an allocation size class with
// the 304-byte Delivery: 320, 352 and 448 bytes.
const (
	tinyBody  = 16
	shortBody = 48
	smallBody = 144
)

// unexpectedFrame is the connection error for a frame out of place on a
// channel: one the content assembly or the channel's reader did not expect.
func unexpectedFrame(id uint16, what string) error {
	return &Error{Code: CodeUnexpectedFrame, Connection: true, Reason: fmt.Sprintf("%s on channel %d", what, id)}
}
