package amqp

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Table is an AMQP field table: the arguments of declare, bind and consume
// methods, message headers, and the client and server properties exchanged
// when connecting.
//
// Values have these Go types, following RabbitMQ's reading of the
// specification (its AMQP 0-9-1 errata) where it differs from the 0-9-1 PDF:
//
//	tag  wire type              Go type
//	't'  boolean                bool
//	'b'  signed 8-bit           int8
//	'B'  unsigned 8-bit         uint8 (byte)
//	's'  signed 16-bit          int16 (the PDF's 's' is a short string)
//	'u'  unsigned 16-bit        uint16
//	'I'  signed 32-bit          int32
//	'i'  unsigned 32-bit        uint32
//	'l'  signed 64-bit          int64
//	'f'  32-bit IEEE 754 float  float32
//	'd'  64-bit IEEE 754 float  float64
//	'D'  decimal                Decimal
//	'S'  long string            string
//	'x'  byte array             []byte
//	'A'  field array            []any
//	'T'  timestamp, in seconds  time.Time (UTC)
//	'F'  nested field table     Table
//	'V'  void                   nil
//
// Decoding yields exactly these types, and encoding a decoded table gives
// back its bytes whenever they were written the way this package writes
// them. Encoding also accepts:
//   - int, sent as 'l'; uint and uint64, sent as 'l' when they fit in an
//     int64. Larger ones are an error wrapping [ErrFieldTooLong]: RabbitMQ
//     has no unsigned 64-bit type and reads every 64-bit integer as signed,
//     so they would arrive negative.
//   - map[string]any, sent as 'F'; a nil Table, []any or []byte is sent as
//     an empty one.
//
// Any other Go type, including named types (type Priority int8), structs,
// pointers and slices such as []string, is an error wrapping
// [ErrUnsupportedType]. Encoding errors are [*FieldError] values naming the
// key path, such as "[outer][inner]" or "[x-death][2]".
//
// Decoding also accepts 'L', which the PDF and RabbitMQ both read as a
// signed 64-bit integer: it decodes as int64, re-encoded as 'l'. A boolean
// octet other than 0 is true, as in RabbitMQ. If a table repeats a key, the
// first value wins, as in RabbitMQ's lookups.
//
// Some values do not make the trip unchanged. A time.Time loses everything
// below the second and its location, and decodes in UTC. 'T' is read and
// written as a signed count of seconds, as amqp091-go, amqplib and
// @cloudamqp/amqp-client do, so times before 1970 make the trip; the epoch
// is sent as 0, which decodes as the zero time.Time, as does a zero
// time.Time. An empty table at the top level (a method's
// arguments, a message's headers) decodes as nil, because on the wire an
// absent table and an empty one are the same; nested empty tables, arrays
// and byte arrays decode as empty, non-nil values.
//
// Keys are encoded in sorted order, so equal tables give equal bytes. Tables
// and arrays nest at most 64 deep, counting the outermost table. Decoded
// strings and byte arrays are copies that never share memory with the frame
// they came from.
type Table map[string]any

// Decimal is an AMQP decimal: Value scaled down by Scale decimal places,
// so Decimal{Scale: 2, Value: 1234} is 12.34.
type Decimal struct {
	Scale uint8
	Value int32
}

// String formats d in plain decimal notation, e.g. "12.34" or "-0.05".
func (d Decimal) String() string {
	v := int64(d.Value) // int64 so that negating math.MinInt32 is safe
	sign := ""
	if v < 0 {
		sign, v = "-", -v
	}
	digits := strconv.FormatInt(v, 10)
	scale := int(d.Scale)
	if scale == 0 {
		return sign + digits
	}
	if len(digits) <= scale { // pad so there is a digit before the point
		digits = strings.Repeat("0", scale-len(digits)+1) + digits
	}
	point := len(digits) - scale
	return sign + digits[:point] + "." + digits[point:]
}

// maxTableDepth bounds how deeply tables and arrays nest, counting the
// outermost table. Decoding checks it so hostile input cannot exhaust the
// stack; encoding checks it so that a cycle (a table containing itself) is
// an error instead of a crash, and so that we never send what we would
// refuse to read.
const maxTableDepth = 64

// sortedKeysOnStack is how many keys appendTable sorts without allocating.
const sortedKeysOnStack = 16

// appendTable appends t as a field table: a four-octet length, then its
// fields in key order. On error b is returned at its original length, so a
// caller never sends a half-written table.
func appendTable(b []byte, t Table) ([]byte, error) {
	return appendTableAt(b, t, 1)
}

// appendTableAt appends t, nested depth deep (1 for the outermost table).
func appendTableAt(b []byte, t Table, depth int) ([]byte, error) {
	orig := len(b)
	if depth > maxTableDepth {
		return b, errTooDeepToEncode
	}
	b = append(b, 0, 0, 0, 0) // the length, filled in once known
	var stack [sortedKeysOnStack]string
	keys := stack[:0]
	if len(t) > len(stack) {
		keys = make([]string, 0, len(t))
	}
	for k := range t {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var err error
		if b, err = appendShortstr(b, k); err == nil {
			b, err = appendFieldValue(b, t[k], depth)
		}
		if err != nil {
			return b[:orig], fieldError("["+pathKey(k)+"]", err)
		}
	}
	return finishBlock(b, orig)
}

// appendArray appends a as a field array: a four-octet length, then the values.
func appendArray(b []byte, a []any, depth int) ([]byte, error) {
	orig := len(b)
	if depth > maxTableDepth {
		return b, errTooDeepToEncode
	}
	b = append(b, 0, 0, 0, 0)
	for i, v := range a {
		var err error
		if b, err = appendFieldValue(b, v, depth); err != nil {
			return b[:orig], fieldError("["+strconv.Itoa(i)+"]", err)
		}
	}
	return finishBlock(b, orig)
}

// finishBlock writes the length of the table or array that starts with a
// placeholder length at b[start:].
func finishBlock(b []byte, start int) ([]byte, error) {
	n := len(b) - start - 4
	if uint64(n) > math.MaxUint32 {
		return b[:start], fmt.Errorf("%w: table or array of %d bytes", ErrFieldTooLong, n)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	return b, nil
}

var errTooDeepToEncode = fmt.Errorf("%w: tables and arrays nested more than %d deep (does a table contain itself?)", ErrFieldTooLong, maxTableDepth)

// appendFieldValue appends v's type tag and value. depth is that of the
// table or array holding v. On error the caller truncates b.
func appendFieldValue(b []byte, v any, depth int) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, 'V'), nil
	case bool:
		if v {
			return append(b, 't', 1), nil
		}
		return append(b, 't', 0), nil
	case int8:
		return append(b, 'b', byte(v)), nil
	case uint8:
		return append(b, 'B', v), nil
	case int16:
		return appendShort(append(b, 's'), uint16(v)), nil
	case uint16:
		return appendShort(append(b, 'u'), v), nil
	case int32:
		return appendLong(append(b, 'I'), uint32(v)), nil
	case uint32:
		return appendLong(append(b, 'i'), v), nil
	case int64:
		return appendLonglong(append(b, 'l'), uint64(v)), nil
	case int:
		return appendLonglong(append(b, 'l'), uint64(int64(v))), nil
	case uint:
		return appendUint64(b, uint64(v))
	case uint64:
		return appendUint64(b, v)
	case float32:
		return appendLong(append(b, 'f'), math.Float32bits(v)), nil
	case float64:
		return appendLonglong(append(b, 'd'), math.Float64bits(v)), nil
	case Decimal:
		return appendLong(append(b, 'D', v.Scale), uint32(v.Value)), nil
	case string:
		return appendLongstr(append(b, 'S'), v)
	case []byte:
		if uint64(len(v)) > math.MaxUint32 {
			return b, fmt.Errorf("%w: byte array of %d bytes", ErrFieldTooLong, len(v))
		}
		b = appendLong(append(b, 'x'), uint32(len(v)))
		return append(b, v...), nil
	case []any:
		return appendArray(append(b, 'A'), v, depth+1)
	case time.Time:
		return appendTimestamp(append(b, 'T'), v), nil
	case Table:
		return appendTableAt(append(b, 'F'), v, depth+1)
	case map[string]any:
		return appendTableAt(append(b, 'F'), Table(v), depth+1)
	default:
		return b, fmt.Errorf("%w: %T", ErrUnsupportedType, v)
	}
}

// appendUint64 sends v as the signed 'l': RabbitMQ has no unsigned 64-bit
// field, and reads even the PDF's 'L' as signed, so a value past MaxInt64
// would arrive negative. That is refused rather than sent.
func appendUint64(b []byte, v uint64) ([]byte, error) {
	if v > math.MaxInt64 {
		return b, fmt.Errorf("%w: %d does not fit in a signed 64-bit integer, the widest AMQP field RabbitMQ reads", ErrFieldTooLong, v)
	}
	return appendLonglong(append(b, 'l'), v), nil
}

// pathKey shortens a key for an error path, so a huge key (itself perhaps
// the error) does not make a huge message.
func pathKey(k string) string {
	const max = 64
	if len(k) <= max {
		return k
	}
	return k[:max] + "..."
}

// table reads a field table. An empty table decodes as nil: on the wire an
// absent table and an empty one are the same, and nil keeps a decoded method
// equal to one whose table was never set. Malformed input fails d and
// returns nil.
func (d *decoder) table() Table {
	t := d.tableAt(1)
	if len(t) == 0 {
		return nil
	}
	return t
}

// tableAt reads a field table nested depth deep (1 for the outermost).
func (d *decoder) tableAt(depth int) Table {
	if depth > maxTableDepth {
		d.fail(errTooDeepToDecode)
		return nil
	}
	s := d.block("field table")
	if d.err != nil {
		return nil
	}
	t := make(Table)
	for s.remaining() > 0 {
		k := s.shortstr()
		v := s.fieldValue(depth)
		if s.err != nil {
			d.fail(s.err)
			return nil
		}
		if _, seen := t[k]; !seen {
			t[k] = v
		}
	}
	return t
}

// array reads a field array nested depth deep.
func (d *decoder) array(depth int) []any {
	if depth > maxTableDepth {
		d.fail(errTooDeepToDecode)
		return nil
	}
	s := d.block("field array")
	if d.err != nil {
		return nil
	}
	a := []any{} // empty, not nil: the array was there
	for s.remaining() > 0 {
		v := s.fieldValue(depth)
		if s.err != nil {
			d.fail(s.err)
			return nil
		}
		a = append(a, v)
	}
	return a
}

var errTooDeepToDecode = fmt.Errorf("%w: tables and arrays nested more than %d deep", ErrMalformedFrame, maxTableDepth)

// block reads a four-octet length and returns a decoder over that many
// following bytes, moving d past them. Reads through the result stop at the
// block's end, so a field that claims to run past it fails instead of
// reading what follows. A length longer than what is left fails at once,
// before anything is allocated for it.
func (d *decoder) block(what string) decoder {
	n := d.long()
	if d.err != nil {
		return decoder{err: d.err}
	}
	if uint64(n) > uint64(d.remaining()) {
		d.fail(fmt.Errorf("%w: %s of %d bytes with %d left", ErrMalformedFrame, what, n, d.remaining()))
		return decoder{err: d.err}
	}
	end := d.off + int(n)
	s := decoder{buf: d.buf[:end], off: d.off} // offsets in errors stay frame-relative
	d.off = end
	return s
}

// fieldValue reads a type tag and its value. depth is that of the table or
// array holding the value.
func (d *decoder) fieldValue(depth int) any {
	off := d.off
	switch tag := d.octet(); tag {
	case 't':
		return d.octet() != 0
	case 'b':
		return int8(d.octet())
	case 'B':
		return d.octet()
	case 's':
		return int16(d.short())
	case 'u':
		return d.short()
	case 'I':
		return int32(d.long())
	case 'i':
		return d.long()
	case 'l', 'L':
		return int64(d.longlong())
	case 'f':
		return math.Float32frombits(d.long())
	case 'd':
		return math.Float64frombits(d.longlong())
	case 'D':
		scale := d.octet()
		return Decimal{Scale: scale, Value: int32(d.long())}
	case 'S':
		return d.longstr()
	case 'x':
		p := d.longstrBytes()
		if d.err != nil {
			return nil
		}
		return append([]byte{}, p...) // a copy: the frame buffer is reused
	case 'A':
		return d.array(depth + 1)
	case 'T':
		return d.timestamp()
	case 'F':
		return d.tableAt(depth + 1)
	case 'V':
		return nil
	default:
		if d.err == nil { // else the tag itself was missing
			d.fail(fmt.Errorf("%w: unknown field type %q at offset %d", ErrMalformedFrame, tag, off))
		}
		return nil
	}
}
