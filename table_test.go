package amqp

import (
	"bytes"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// decodeTable decodes b, which must hold exactly one table.
func decodeTable(b []byte) (Table, error) {
	d := newDecoder(b)
	t := d.table()
	return t, d.finish()
}

func encodeTable(tb testing.TB, t Table) []byte {
	tb.Helper()
	b, err := appendTable(nil, t)
	require.NoError(tb, err)
	return b
}

// withLength prefixes fields with their four-octet length, making a table
// or array body.
func withLength(fields ...byte) []byte {
	n := len(fields)
	return append([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, fields...)
}

// oneField is the table {"k": value} where value is the given tag and payload.
func oneField(value ...byte) []byte {
	return withLength(append([]byte{1, 'k'}, value...)...)
}

// The wire bytes below are written out from the 0-9-1 grammar with
// RabbitMQ's errata types: tag, then the value in network byte order.
var fieldCases = []struct {
	name  string
	wire  []byte // tag and value
	value any
}{
	{"bool true", []byte{'t', 1}, true},
	{"bool false", []byte{'t', 0}, false},
	{"int8", []byte{'b', 0xFF}, int8(-1)},
	{"int8 min", []byte{'b', 0x80}, int8(math.MinInt8)},
	{"uint8", []byte{'B', 0xFF}, uint8(255)},
	{"int16", []byte{'s', 0xFF, 0xFE}, int16(-2)},
	{"int16 max", []byte{'s', 0x7F, 0xFF}, int16(math.MaxInt16)},
	{"uint16", []byte{'u', 0xFF, 0xFF}, uint16(math.MaxUint16)},
	{"int32", []byte{'I', 0xFF, 0xFF, 0xFF, 0xFD}, int32(-3)},
	{"int32 positive", []byte{'I', 0x00, 0x01, 0x00, 0x00}, int32(65536)},
	{"uint32", []byte{'i', 0xFF, 0xFF, 0xFF, 0xFF}, uint32(math.MaxUint32)},
	{"int64", []byte{'l', 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFC}, int64(-4)},
	{"int64 max", []byte{'l', 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, int64(math.MaxInt64)},
	{"int64 min", []byte{'l', 0x80, 0, 0, 0, 0, 0, 0, 0}, int64(math.MinInt64)},
	{"float32", []byte{'f', 0x3F, 0xC0, 0x00, 0x00}, float32(1.5)},
	{"float32 negative zero", []byte{'f', 0x80, 0, 0, 0}, float32(math.Copysign(0, -1))},
	{"float64", []byte{'d', 0xC0, 0x04, 0, 0, 0, 0, 0, 0}, float64(-2.5)},
	{"float64 infinity", []byte{'d', 0x7F, 0xF0, 0, 0, 0, 0, 0, 0}, math.Inf(1)},
	{"decimal", []byte{'D', 2, 0x00, 0x00, 0x04, 0xD2}, Decimal{Scale: 2, Value: 1234}},
	{"decimal negative", []byte{'D', 3, 0xFF, 0xFF, 0xFF, 0xFF}, Decimal{Scale: 3, Value: -1}},
	{"string", []byte{'S', 0, 0, 0, 6, 'h', 0xC3, 0xA9, 'l', 'l', 'o'}, "héllo"},
	{"string empty", []byte{'S', 0, 0, 0, 0}, ""},
	{"bytes", []byte{'x', 0, 0, 0, 3, 0x00, 0x01, 0xFF}, []byte{0x00, 0x01, 0xFF}},
	{"bytes empty", []byte{'x', 0, 0, 0, 0}, []byte{}},
	{"array", []byte{'A', 0, 0, 0, 12,
		'I', 0, 0, 0, 1,
		'S', 0, 0, 0, 1, 'a',
		'V'}, []any{int32(1), "a", nil}},
	{"array empty", []byte{'A', 0, 0, 0, 0}, []any{}},
	{"array nested", []byte{'A', 0, 0, 0, 15,
		'A', 0, 0, 0, 2, 't', 1,
		'F', 0, 0, 0, 3, 1, 'z', 'V'}, []any{[]any{true}, Table{"z": nil}}},
	{"timestamp", []byte{'T', 0, 0, 0, 0, 0x65, 0x53, 0xF1, 0x00}, time.Unix(1700000000, 0).UTC()},
	{"timestamp zero", []byte{'T', 0, 0, 0, 0, 0, 0, 0, 0}, time.Time{}},
	// Signed, as amqp091-go, amqplib and @cloudamqp/amqp-client write it:
	// a JavaScript Date before 1970 arrives negative.
	{"timestamp before 1970", []byte{'T', 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x26, 0x78, 0x80}, time.Date(1969, 7, 20, 0, 0, 0, 0, time.UTC)},
	{"timestamp 2^63", []byte{'T', 0x80, 0, 0, 0, 0, 0, 0, 0}, time.Unix(math.MinInt64, 0).UTC()},
	{"timestamp max", []byte{'T', 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, time.Unix(math.MaxInt64, 0).UTC()},
	{"timestamp -1", []byte{'T', 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, time.Date(1969, 12, 31, 23, 59, 59, 0, time.UTC)},
	{"table", []byte{'F', 0, 0, 0, 4, 1, 'a', 't', 1}, Table{"a": true}},
	{"table empty", []byte{'F', 0, 0, 0, 0}, Table{}},
	{"table nested", []byte{'F', 0, 0, 0, 15,
		5, 'o', 'u', 't', 'e', 'r', 'F', 0, 0, 0, 4,
		1, 'n', 'b', 0x80}, Table{"outer": Table{"n": int8(-128)}}},
	{"void", []byte{'V'}, nil},
}

func TestTableFieldTypes(t *testing.T) {
	for _, c := range fieldCases {
		t.Run(c.name, func(t *testing.T) {
			wire := oneField(c.wire...)

			got, err := decodeTable(wire)
			require.NoError(t, err)
			require.Equal(t, Table{"k": c.value}, got)
			if v, ok := got["k"].(float32); ok { // Equal treats -0 and 0 alike
				require.Equal(t, math.Float32bits(c.value.(float32)), math.Float32bits(v))
			}

			require.Equal(t, wire, encodeTable(t, Table{"k": c.value}))
		})
	}
}

// Inputs that encode as one of the canonical types.
func TestTableEncodeConveniences(t *testing.T) {
	cases := []struct {
		name  string
		value any
		wire  []byte
	}{
		{"int", -4, []byte{'l', 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFC}},
		{"uint", uint(7), []byte{'l', 0, 0, 0, 0, 0, 0, 0, 7}},
		{"uint64 max int64", uint64(math.MaxInt64), []byte{'l', 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}},
		{"map", map[string]any{"a": true}, []byte{'F', 0, 0, 0, 4, 1, 'a', 't', 1}},
		{"nil bytes", []byte(nil), []byte{'x', 0, 0, 0, 0}},
		{"nil array", []any(nil), []byte{'A', 0, 0, 0, 0}},
		{"nil table", Table(nil), []byte{'F', 0, 0, 0, 0}},
		{"time in a zone, with nanoseconds", time.Unix(1700000000, 999999999).In(time.FixedZone("X", 3600)),
			[]byte{'T', 0, 0, 0, 0, 0x65, 0x53, 0xF1, 0x00}},
		{"epoch", time.Unix(0, 0), []byte{'T', 0, 0, 0, 0, 0, 0, 0, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, oneField(c.wire...), encodeTable(t, Table{"k": c.value}))
		})
	}
}

// Inputs we accept from peers but never produce.
func TestTableDecodeNonCanonical(t *testing.T) {
	t.Run("L is a signed 64-bit integer", func(t *testing.T) {
		got, err := decodeTable(oneField('L', 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE))
		require.NoError(t, err)
		require.Equal(t, Table{"k": int64(-2)}, got)
		require.Equal(t, oneField('l', 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE), encodeTable(t, got))
	})
	t.Run("any non-zero boolean is true", func(t *testing.T) {
		got, err := decodeTable(oneField('t', 2))
		require.NoError(t, err)
		require.Equal(t, Table{"k": true}, got)
	})
	t.Run("first of repeated keys wins", func(t *testing.T) {
		got, err := decodeTable(withLength(1, 'a', 'b', 1, 1, 'a', 'b', 2))
		require.NoError(t, err)
		require.Equal(t, Table{"a": int8(1)}, got)
	})
	t.Run("unsorted keys", func(t *testing.T) {
		got, err := decodeTable(withLength(1, 'b', 'V', 1, 'a', 'V'))
		require.NoError(t, err)
		require.Equal(t, Table{"a": nil, "b": nil}, got)
	})
}

func TestTableEmpty(t *testing.T) {
	empty := []byte{0, 0, 0, 0}
	require.Equal(t, empty, encodeTable(t, nil))
	require.Equal(t, empty, encodeTable(t, Table{}))

	got, err := decodeTable(empty)
	require.NoError(t, err)
	require.Nil(t, got, "an empty top-level table decodes as nil")
}

func TestTableKeysSorted(t *testing.T) {
	want := []byte{0, 0, 0, 19,
		0, 'V', // the empty key sorts first
		1, 'A', 'V',
		1, 'a', 'V',
		2, 'a', 'a', 'V',
		2, 'a', 'b', 'V',
		1, 'b', 'V',
	}
	tb := Table{"b": nil, "ab": nil, "a": nil, "": nil, "aa": nil, "A": nil}
	for range 10 { // map order varies between iterations
		require.Equal(t, want, encodeTable(t, tb))
	}

	big := Table{}
	for i := range 40 {
		big[string(rune('z'-i%26))+strings.Repeat("x", i/26)] = int8(i)
	}
	first := encodeTable(t, big)
	for range 10 {
		require.Equal(t, first, encodeTable(t, big))
	}
	got, err := decodeTable(first)
	require.NoError(t, err)
	require.Equal(t, big, got)
}

// everyType holds every canonical type, nested, as decoding yields it.
func everyType() Table {
	return Table{
		"bool":      true,
		"int8":      int8(-8),
		"uint8":     uint8(8),
		"int16":     int16(-16),
		"uint16":    uint16(16),
		"int32":     int32(-32),
		"uint32":    uint32(32),
		"int64":     int64(-64),
		"float32":   float32(-3.25),
		"float64":   6.5,
		"decimal":   Decimal{Scale: 2, Value: -1234},
		"string":    "text",
		"empty":     "",
		"bytes":     []byte{0, 1, 2},
		"no bytes":  []byte{},
		"void":      nil,
		"timestamp": time.Unix(1234567890, 0).UTC(),
		"zero time": time.Time{},
		"array": []any{
			int32(1), "two", []byte("three"), nil, []any{}, Table{},
			[]any{Table{"deep": []any{uint16(4)}}},
		},
		"table": Table{
			"inner": Table{"x-death": []any{Table{"count": int64(3), "reason": "expired"}}},
			"empty": Table{},
		},
	}
}

func TestTableRoundTripEveryType(t *testing.T) {
	want := everyType()
	wire := encodeTable(t, want)
	got, err := decodeTable(wire)
	require.NoError(t, err)
	require.Equal(t, want, got)
	require.Equal(t, wire, encodeTable(t, got))
}

// A table is usually followed by more fields of its method.
func TestTableInsideFrame(t *testing.T) {
	wire := append([]byte{0xAB}, encodeTable(t, Table{"a": "b"})...)
	wire = append(wire, 0, 7)
	d := newDecoder(wire)
	require.Equal(t, uint8(0xAB), d.octet())
	require.Equal(t, Table{"a": "b"}, d.table())
	require.Equal(t, uint16(7), d.short())
	require.NoError(t, d.finish())

	d = newDecoder(wire[:5]) // cut inside the table
	d.octet()
	require.Nil(t, d.table())
	require.ErrorIs(t, d.finish(), ErrMalformedFrame)
	require.Zero(t, d.short(), "the error is sticky")
}

func TestTableDecodeDoesNotAlias(t *testing.T) {
	wire := encodeTable(t, Table{"s": "string", "x": []byte("bytes"), "a": []any{"in array"}})
	got, err := decodeTable(wire)
	require.NoError(t, err)
	clear(wire)
	require.Equal(t, Table{"s": "string", "x": []byte("bytes"), "a": []any{"in array"}}, got)
}

type namedInt8 int8

func TestTableEncodeErrors(t *testing.T) {
	longKey := strings.Repeat("k", 256)
	self := Table{}
	self["self"] = self

	cases := []struct {
		name  string
		table Table
		path  string
		is    error
		msg   string // in the error text
	}{
		{"struct", Table{"k": struct{ A int }{}}, "[k]", ErrUnsupportedType, "struct { A int }"},
		{"int slice", Table{"k": []int{1}}, "[k]", ErrUnsupportedType, "[]int"},
		{"string slice", Table{"k": []string{"a"}}, "[k]", ErrUnsupportedType, "[]string"},
		{"chan", Table{"k": make(chan int)}, "[k]", ErrUnsupportedType, "chan int"},
		{"func", Table{"k": func() {}}, "[k]", ErrUnsupportedType, "func()"},
		{"pointer", Table{"k": new(string)}, "[k]", ErrUnsupportedType, "*string"},
		{"named type", Table{"k": namedInt8(1)}, "[k]", ErrUnsupportedType, "amqp.namedInt8"},
		{"after a good key", Table{"a": "ok", "b": uintptr(1)}, "[b]", ErrUnsupportedType, "uintptr"},
		{"nested", Table{"outer": Table{"inner": struct{}{}}}, "[outer][inner]", ErrUnsupportedType, "struct {}"},
		{"nested map", Table{"m": map[string]any{"x": []int{}}}, "[m][x]", ErrUnsupportedType, "[]int"},
		{"in array", Table{"key": []any{1, 2, 3, struct{}{}}}, "[key][3]", ErrUnsupportedType, "struct {}"},
		{"array in table in array", Table{"a": []any{Table{"b": []any{0, complex(1, 2)}}}}, "[a][0][b][1]", ErrUnsupportedType, "complex128"},
		{"key too long", Table{longKey: true}, "[" + longKey[:64] + "...]", ErrShortstrTooLong, "256 bytes"},
		{"nested key too long", Table{"o": Table{longKey: true}}, "[o][" + longKey[:64] + "...]", ErrShortstrTooLong, "256 bytes"},
		{"uint64 beyond int64", Table{"n": uint64(math.MaxInt64 + 1)}, "[n]", ErrFieldTooLong, "9223372036854775808"},
		{"uint beyond int64", Table{"n": uint(math.MaxUint64)}, "[n]", ErrFieldTooLong, "18446744073709551615"},
		{"cycle", self, "[self]", ErrFieldTooLong, "nested more than 64 deep"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			buf := []byte("frame so far")
			out, err := appendTable(buf, c.table)
			require.Error(t, err)
			require.Equal(t, "frame so far", string(out), "the buffer is returned at its original length")
			require.ErrorIs(t, err, c.is)

			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			if c.name == "cycle" {
				require.Equal(t, strings.Repeat("[self]", maxTableDepth), fe.Field)
			} else {
				require.Equal(t, c.path, fe.Field)
			}
			require.Contains(t, err.Error(), c.msg)
		})
	}
}

// nestedTable is a table of depth tables, counting itself.
func nestedTable(depth int) Table {
	t := Table{}
	for range depth - 1 {
		t = Table{"k": t}
	}
	return t
}

// nestedTableBytes is the encoding of nestedTable(depth), built by hand so
// that it can go past what the encoder allows. With arrays it is one table
// holding depth-1 nested field arrays instead. Each level is a fixed header
// before the next, so the headers are written outermost first.
func nestedTableBytes(depth int, arrays bool) []byte {
	long := func(b []byte, n int) []byte {
		return append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	var b []byte
	if arrays {
		const level = 5 // 'A' and a length
		b = long(b, 2+level*(depth-1))
		b = append(b, 1, 'k')
		for k := depth - 1; k > 0; k-- {
			b = long(append(b, 'A'), level*(k-1))
		}
		return b
	}
	const level = 7 // a length, the key "k" and 'F'
	for k := depth - 1; k > 0; k-- {
		b = append(long(b, 3+4+level*(k-1)), 1, 'k', 'F')
	}
	return long(b, 0)
}

func TestTableNestingLimit(t *testing.T) {
	ok := nestedTable(maxTableDepth)
	wire := encodeTable(t, ok)
	require.Equal(t, nestedTableBytes(maxTableDepth, false), wire)
	got, err := decodeTable(wire)
	require.NoError(t, err)
	require.Equal(t, ok, got)

	_, err = appendTable(nil, nestedTable(maxTableDepth+1))
	require.ErrorIs(t, err, ErrFieldTooLong)

	for _, arrays := range []bool{false, true} {
		_, err = decodeTable(nestedTableBytes(maxTableDepth, arrays))
		require.NoError(t, err)
		for _, depth := range []int{maxTableDepth + 1, 1000, 100000} {
			got, err := decodeTable(nestedTableBytes(depth, arrays))
			require.ErrorIs(t, err, ErrMalformedFrame)
			require.ErrorContains(t, err, "nested more than 64 deep")
			require.Nil(t, got)
		}
	}
}

func TestTableDecodeTruncated(t *testing.T) {
	wire := encodeTable(t, everyType())
	for n := range len(wire) {
		require.NotPanics(t, func() {
			got, err := decodeTable(wire[:n])
			require.ErrorIs(t, err, ErrMalformedFrame, "cut at %d of %d", n, len(wire))
			require.Nil(t, got)
		})
	}
}

// Every byte of a valid encoding replaced by interesting values: decoding
// may succeed or fail but must not panic, and what it returns must encode.
func TestTableDecodeCorrupted(t *testing.T) {
	wire := encodeTable(t, everyType())
	for i := range wire {
		for _, v := range []byte{0, 1, 0x7F, 0x80, 0xFF, 'A', 'F', 'S', 'x', 'V'} {
			bad := bytes.Clone(wire)
			bad[i] = v
			require.NotPanics(t, func() {
				got, err := decodeTable(bad)
				if err == nil {
					_, err = appendTable(nil, got)
					require.NoError(t, err)
				}
			})
		}
	}
}

func TestTableDecodeHugeLengths(t *testing.T) {
	ff := []byte{0xFF, 0xFF, 0xFF, 0xFF}
	trailing := bytes.Repeat([]byte{'V'}, 64) // bytes past the table must not be read as its own
	cases := map[string][]byte{
		"table":                       append(ff, 1, 'k', 'V'),
		"string":                      oneField(append([]byte{'S'}, ff...)...),
		"bytes":                       oneField(append([]byte{'x'}, ff...)...),
		"array":                       oneField(append([]byte{'A'}, ff...)...),
		"nested table":                oneField(append([]byte{'F'}, ff...)...),
		"array past its table":        append(oneField('A', 0, 0, 0, 10, 'V'), trailing...),
		"string past its array":       append(oneField('A', 0, 0, 0, 5, 'S', 0, 0, 0, 9), trailing...),
		"nested table past its table": append(oneField('F', 0, 0, 0, 10), trailing...),
		"key past its table":          append(withLength(9, 'k'), trailing...),
	}
	for name, wire := range cases {
		t.Run(name, func(t *testing.T) {
			d := newDecoder(wire)
			require.Nil(t, d.table())
			require.ErrorIs(t, d.err, ErrMalformedFrame)

			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			const runs = 100
			for range runs {
				d := newDecoder(wire)
				d.table()
			}
			runtime.ReadMemStats(&after)
			perRun := (after.TotalAlloc - before.TotalAlloc) / runs
			require.Less(t, perRun, uint64(1024), "bytes allocated per decode")
		})
	}
}

func TestTableDecodeUnknownType(t *testing.T) {
	for _, tag := range []byte{'U', 'Z', 0, 0xFF} {
		got, err := decodeTable(oneField(tag, 0, 0))
		require.ErrorIs(t, err, ErrMalformedFrame)
		require.ErrorContains(t, err, "unknown field type")
		require.Nil(t, got)
	}
	_, err := decodeTable(oneField('U', 0, 0))
	require.ErrorContains(t, err, "'U'")
}

func TestTableEncodeAllocs(t *testing.T) {
	small := Table{
		"x-max-length": int32(1000),
		"x-queue-type": "quorum",
		"x-single":     true,
		"x-expires":    int64(60000),
		"x-ratio":      1.5,
	}
	buf := make([]byte, 0, 512)
	allocs := testing.AllocsPerRun(100, func() {
		var err error
		buf, err = appendTable(buf[:0], small)
		if err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "encoding a small table")

	nested := Table{"headers": Table{"a": "b"}, "list": []any{int32(1), "two"}}
	allocs = testing.AllocsPerRun(100, func() { buf, _ = appendTable(buf[:0], nested) })
	require.Zero(t, allocs, "encoding nested tables and arrays")
}

func TestDecimalString(t *testing.T) {
	cases := map[Decimal]string{
		{Scale: 2, Value: 1234}:           "12.34",
		{Scale: 2, Value: -5}:             "-0.05",
		{Scale: 0, Value: 7}:              "7",
		{Scale: 0, Value: -7}:             "-7",
		{Scale: 3, Value: 0}:              "0.000",
		{Scale: 5, Value: 12}:             "0.00012",
		{Scale: 1, Value: 10}:             "1.0",
		{Scale: 4, Value: 1234}:           "0.1234",
		{Scale: 2, Value: math.MinInt32}:  "-21474836.48",
		{Scale: 10, Value: math.MaxInt32}: "0.2147483647",
	}
	for d, want := range cases {
		require.Equal(t, want, d.String(), "%#v", d)
	}
}

// sameValue is reflect.DeepEqual except that floats compare by their bits,
// so that NaN equals itself and -0 differs from 0.
func sameValue(a, b any) bool {
	switch a := a.(type) {
	case float32:
		b, ok := b.(float32)
		return ok && math.Float32bits(a) == math.Float32bits(b)
	case float64:
		b, ok := b.(float64)
		return ok && math.Float64bits(a) == math.Float64bits(b)
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) || (a == nil) != (b == nil) {
			return false
		}
		for i := range a {
			if !sameValue(a[i], b[i]) {
				return false
			}
		}
		return true
	case Table:
		b, ok := b.(Table)
		if !ok || len(a) != len(b) || (a == nil) != (b == nil) {
			return false
		}
		for k, v := range a {
			w, ok := b[k]
			if !ok || !sameValue(v, w) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func FuzzTable(f *testing.F) {
	seeds := []Table{
		nil,
		everyType(),
		{"x-message-ttl": int32(60000), "x-dead-letter-exchange": "dlx", "x-queue-type": "quorum"},
		{"capabilities": Table{"publisher_confirms": true, "consumer_cancel_notify": true}, "product": "amqp-go"},
		{"x-death": []any{Table{"count": int64(1), "queue": "q", "time": time.Unix(1700000000, 0).UTC(), "routing-keys": []any{"rk"}}}},
		{"nan": math.NaN(), "f": float32(math.Inf(-1))},
		nestedTable(maxTableDepth),
	}
	for _, s := range seeds {
		f.Add(encodeTable(f, s))
	}
	f.Add(oneField('L', 0x80, 0, 0, 0, 0, 0, 0, 0))
	f.Add(withLength(1, 'a', 't', 2, 1, 'a', 'V'))

	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data) // ours to overwrite below
		first, err := decodeTable(in)
		if err != nil {
			return
		}
		wire, err := appendTable(nil, first)
		require.NoError(t, err, "a decoded table must encode")
		clear(in) // if first shared memory with the input, it changes now

		second, err := decodeTable(wire)
		require.NoError(t, err)
		require.True(t, sameValue(first, second), "decode(encode(decode(x))) != decode(x)\nfirst:  %#v\nsecond: %#v", first, second)
		again, err := appendTable(nil, second)
		require.NoError(t, err)
		require.Equal(t, wire, again, "encoding is deterministic")
	})
}

func BenchmarkTableRoundTrip(b *testing.B) {
	headers := Table{
		"x-message-ttl":          int32(60000),
		"x-dead-letter-exchange": "dlx",
		"x-queue-type":           "quorum",
		"x-retry":                int64(3),
		"traceparent":            "00-4bf92f3577b34da6a3ce929b0e0e4736-00f067aa0ba902b7-01",
		"x-death": []any{Table{
			"count":        int64(1),
			"exchange":     "",
			"queue":        "jobs",
			"reason":       "rejected",
			"routing-keys": []any{"jobs"},
			"time":         time.Unix(1700000000, 0).UTC(),
		}},
	}
	buf := encodeTable(b, headers)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = appendTable(buf[:0], headers)
		if err != nil {
			b.Fatal(err)
		}
		d := newDecoder(buf)
		if d.table() == nil || d.finish() != nil {
			b.Fatal("decode failed")
		}
	}
}
