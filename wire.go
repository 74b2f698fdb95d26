package amqp

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
)

// This file holds the AMQP primitive types: the append-style encoders used by
// the generated method code and the sticky-error decoder that reads them back.
// Encoders append to a caller's buffer so a whole frame can be built in one
// reused slice without allocating; the decoder reads from a slice that already
// holds a complete, size-checked frame payload.

// maxShortstr is the longest string a shortstr can carry: its length is one octet.
const maxShortstr = 255

func appendOctet(b []byte, v uint8) []byte { return append(b, v) }

func appendShort(b []byte, v uint16) []byte { return binary.BigEndian.AppendUint16(b, v) }

func appendLong(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

func appendLonglong(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

// appendShortstr appends s with a one-octet length. A string longer than 255
// bytes cannot be represented and is reported instead of being truncated.
func appendShortstr(b []byte, s string) ([]byte, error) {
	if len(s) > maxShortstr {
		return b, fmt.Errorf("%w: %d bytes", ErrShortstrTooLong, len(s))
	}
	b = append(b, byte(len(s)))
	return append(b, s...), nil
}

// appendLongstr appends s with a four-octet length.
func appendLongstr(b []byte, s string) ([]byte, error) {
	if uint64(len(s)) > math.MaxUint32 {
		return b, fmt.Errorf("%w: longstr of %d bytes", ErrFieldTooLong, len(s))
	}
	b = appendLong(b, uint32(len(s)))
	return append(b, s...), nil
}

// appendTimestamp appends t as a signed count of seconds since the Unix
// epoch, the only precision AMQP carries. The spec calls 'T' unsigned, but
// other clients (amqp091-go, @cloudamqp/amqp-client, amqplib) read and write
// it as two's-complement, so times before 1970 go out negative and come back
// the same. The zero time encodes as 0.
func appendTimestamp(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return appendLonglong(b, 0)
	}
	return appendLonglong(b, uint64(t.Unix()))
}

// decoder reads AMQP primitives from a byte slice. The first failure is
// sticky: every later read returns a zero value and err reports the first
// problem, so generated decoders are straight-line code with one check at the end.
type decoder struct {
	buf     []byte
	off     int
	err     error
	strings *stringCache // optional: interns shortstrs (the reader's hot path)
}

func newDecoder(b []byte) decoder { return decoder{buf: b} }

// fail records err (keeping the first) and makes every later read fail.
func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
	d.off = len(d.buf)
}

// take returns the next n bytes, or nil after recording a short-read error.
// The result aliases the decoder's buffer.
func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.buf)-d.off < n {
		d.fail(fmt.Errorf("%w: need %d bytes at offset %d, have %d", ErrMalformedFrame, n, d.off, len(d.buf)-d.off))
		return nil
	}
	p := d.buf[d.off : d.off+n]
	d.off += n
	return p
}

func (d *decoder) remaining() int { return len(d.buf) - d.off }

func (d *decoder) octet() uint8 {
	p := d.take(1)
	if p == nil {
		return 0
	}
	return p[0]
}

func (d *decoder) short() uint16 {
	p := d.take(2)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint16(p)
}

func (d *decoder) long() uint32 {
	p := d.take(4)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint32(p)
}

func (d *decoder) longlong() uint64 {
	p := d.take(8)
	if p == nil {
		return 0
	}
	return binary.BigEndian.Uint64(p)
}

// shortstr returns a copy of the next shortstr: the result outlives the frame buffer.
func (d *decoder) shortstr() string {
	n := int(d.octet())
	b := d.take(n)
	if d.strings != nil {
		return d.strings.get(b)
	}
	return string(b)
}

// stringCache interns the short strings a connection's reader sees again and
// again (consumer tags, exchange names, routing keys, content types), so
// decoding a delivery does not allocate them each time. It is bounded: once
// full, new strings are allocated as usual. Reader-owned; not synchronized.
type stringCache struct {
	m      map[string]string
	recent [4]string // the last strings returned: compared before hashing
	next   int
}

const (
	stringCacheEntries = 512
	stringCacheMaxLen  = 128
)

func (c *stringCache) get(b []byte) string {
	// A delivery's consumer tag, exchange and routing key are usually the
	// previous delivery's: comparing is cheaper than hashing.
	for _, r := range c.recent {
		if len(r) == len(b) && r == string(b) {
			return r
		}
	}
	s, ok := c.m[string(b)] // the conversion in a map index does not allocate
	if !ok {
		s = c.add(b)
	}
	c.recent[c.next] = s
	c.next = (c.next + 1) % len(c.recent)
	return s
}

func (c *stringCache) add(b []byte) string {
	s := string(b)
	if len(b) <= stringCacheMaxLen && len(c.m) < stringCacheEntries {
		if c.m == nil {
			c.m = make(map[string]string)
		}
		c.m[s] = s
	}
	return s
}

// longstrBytes returns the next longstr without copying; it aliases the buffer.
func (d *decoder) longstrBytes() []byte {
	n := d.long()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(d.remaining()) {
		d.fail(fmt.Errorf("%w: longstr of %d bytes with %d left", ErrMalformedFrame, n, d.remaining()))
		return nil
	}
	return d.take(int(n))
}

// longstr returns a copy of the next longstr.
func (d *decoder) longstr() string { return string(d.longstrBytes()) }

// timestamp reads a signed count of seconds (see appendTimestamp). Every
// int64 is a valid time.Time, so no value is refused: a peer that wrote a
// date before 1970 gets it back, and a garbage value is the application's
// to judge rather than a reason to drop the message.
func (d *decoder) timestamp() time.Time {
	v := int64(d.longlong())
	if d.err != nil || v == 0 {
		return time.Time{}
	}
	return time.Unix(v, 0).UTC()
}

// finish reports the sticky error, or an error if bytes are left over: a
// method or property list that does not consume its whole payload is malformed.
func (d *decoder) finish() error {
	if d.err != nil {
		return d.err
	}
	if d.off != len(d.buf) {
		return fmt.Errorf("%w: %d trailing bytes", ErrMalformedFrame, len(d.buf)-d.off)
	}
	return nil
}
