package amqp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Tests of the generated code in methods_gen.go: every method's encoding
// round-trips, a few encodings match bytes written by hand from the spec,
// and the lookup functions agree with each other.

func TestAllMethodKeys(t *testing.T) {
	require.Len(t, allMethodKeys, 64)

	// newMethod must know exactly the keys in allMethodKeys: search a space
	// well past the spec's largest ids (class 90, method 120).
	var found []methodKey
	for c := range uint16(256) {
		for id := range uint16(256) {
			if m := newMethod(keyOf(c, id)); m != nil {
				found = append(found, keyOf(c, id))
			}
		}
	}
	require.ElementsMatch(t, allMethodKeys[:], found)

	classes := map[uint16]bool{}
	names := map[string]bool{}
	for _, k := range allMethodKeys {
		m := newMethod(k)
		require.Equal(t, k, m.key())
		require.Equal(t, k, keyOf(m.ClassID(), m.MethodID()))
		require.Equal(t, m.MethodName(), methodName(m.ClassID(), m.MethodID()))
		require.False(t, names[m.MethodName()], "duplicate name %s", m.MethodName())
		names[m.MethodName()] = true
		classes[m.ClassID()] = true

		// Every method is a pointer to a struct, and its type name is the
		// CamelCase of its spec name.
		typ := reflect.TypeOf(m)
		require.Equal(t, reflect.Pointer, typ.Kind())
		require.Equal(t, camelCase(m.MethodName()), typ.Elem().Name())

		// Only synchronous methods have replies, and only they wait.
		if !m.synchronous() {
			for _, r := range allMethodKeys {
				require.False(t, m.isReply(r), "%s is asynchronous but accepts %s", m.MethodName(), newMethod(r).MethodName())
			}
		}
	}
	require.Len(t, classes, 7)
	require.Equal(t, "class 99 method 7", methodName(99, 7))
	require.Equal(t, "class 50 method 99", methodName(50, 99))
}

// camelCase turns "queue.declare-ok" into "QueueDeclareOk".
func camelCase(name string) string {
	var b strings.Builder
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return r == '.' || r == '-' }) {
		b.WriteString(strings.ToUpper(part[:1]) + part[1:])
	}
	return b.String()
}

func TestReplies(t *testing.T) {
	replies := func(m Method) []string {
		var names []string
		for _, k := range allMethodKeys {
			if m.isReply(k) {
				names = append(names, newMethod(k).MethodName())
			}
		}
		return names
	}
	require.Equal(t, []string{"basic.get-ok", "basic.get-empty"}, replies(&BasicGet{}))
	require.Equal(t, []string{"basic.recover-ok"}, replies(&BasicRecover{}))
	require.Equal(t, []string{"channel.close-ok"}, replies(&ChannelClose{}))
	require.Equal(t, []string{"connection.update-secret-ok"}, replies(&ConnectionUpdateSecret{}))
	require.Equal(t, []string{"confirm.select-ok"}, replies(&ConfirmSelect{}))
	require.Equal(t, []string{"queue.declare-ok"}, replies(&QueueDeclare{}))
	require.Empty(t, replies(&BasicPublish{}))
	require.Empty(t, replies(&BasicAck{}))
	require.Empty(t, replies(&QueueDeclareOk{}))

	require.True(t, (&BasicRecover{}).synchronous())
	require.False(t, (&BasicRecoverAsync{}).synchronous())
	require.False(t, (&BasicGetOk{}).synchronous())

	var content []string
	for _, k := range allMethodKeys {
		if m := newMethod(k); m.hasContent() {
			content = append(content, m.MethodName())
		}
	}
	require.Equal(t, []string{"basic.publish", "basic.return", "basic.deliver", "basic.get-ok"}, content)
}

func TestMethodRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, k := range allMethodKeys {
		t.Run(newMethod(k).MethodName(), func(t *testing.T) {
			// The zero value first: empty strings, false bits, nil tables.
			zero := newMethod(k)
			requireRoundTrip(t, zero)
			for range 200 {
				m := newMethod(k)
				randomize(r, m)
				requireRoundTrip(t, m)
			}
		})
	}
}

// requireRoundTrip sends m through a method frame and reads it back with
// FrameReader and DecodeMethod.
func requireRoundTrip(t *testing.T, m Method) {
	t.Helper()
	frame, err := AppendMethodFrame(nil, 7, m)
	require.NoError(t, err)
	fr := NewFrameReader(bytes.NewReader(frame))
	fr.SetMaxFrameSize(0)
	f, err := fr.ReadFrame()
	require.NoError(t, err)
	require.Equal(t, FrameMethod, f.Type)
	require.Equal(t, uint16(7), f.Channel)
	got, err := DecodeMethod(f.Payload)
	require.NoError(t, err)
	require.Equal(t, m, got)
}

func TestMethodGoldenBytes(t *testing.T) {
	tests := []struct {
		name  string
		m     Method
		frame []byte // written by hand from the spec
	}{
		{
			name: "queue.declare bits pack from the least significant bit",
			m:    &QueueDeclare{Queue: "jobs", Durable: true, AutoDelete: true, NoWait: true},
			frame: []byte{
				1, 0, 1, 0, 0, 0, 16, // method frame, channel 1, 16 bytes
				0, 50, 0, 10, // queue.declare
				0, 0, // reserved-1 (ticket)
				4, 'j', 'o', 'b', 's', // queue
				0x02 | 0x08 | 0x10, // durable, auto-delete, no-wait; passive (0x01) and exclusive (0x04) clear
				0, 0, 0, 0,         // arguments: empty table
				0xCE,
			},
		},
		{
			name: "queue.declare passive and exclusive",
			m:    &QueueDeclare{Passive: true, Exclusive: true},
			frame: []byte{
				1, 0, 1, 0, 0, 0, 12,
				0, 50, 0, 10,
				0, 0,
				0,
				0x01 | 0x04,
				0, 0, 0, 0,
				0xCE,
			},
		},
		{
			name: "basic.publish",
			m:    &BasicPublish{Exchange: "ex", RoutingKey: "rk", Immediate: true},
			frame: []byte{
				1, 0, 1, 0, 0, 0, 13,
				0, 60, 0, 40, // basic.publish
				0, 0, // reserved-1 (ticket)
				2, 'e', 'x', // exchange
				2, 'r', 'k', // routing-key
				0x02, // immediate; mandatory (0x01) clear
				0xCE,
			},
		},
		{
			name: "connection.open reserved shortstr and bit",
			m:    &ConnectionOpen{VirtualHost: "/"},
			frame: []byte{
				1, 0, 1, 0, 0, 0, 8,
				0, 10, 0, 40, // connection.open
				1, '/', // virtual-host
				0, // reserved-1 (capabilities): empty shortstr
				0, // reserved-2 (insist): a bit in its own octet
				0xCE,
			},
		},
		{
			name: "basic.nack",
			m:    &BasicNack{DeliveryTag: 0x0102030405060708, Requeue: true},
			frame: []byte{
				1, 0, 1, 0, 0, 0, 13,
				0, 60, 0, 120, // basic.nack
				1, 2, 3, 4, 5, 6, 7, 8, // delivery-tag
				0x02, // requeue; multiple (0x01) clear
				0xCE,
			},
		},
		{
			name: "channel.close",
			m:    &ChannelClose{ReplyCode: CodeNotFound, ReplyText: "NOT_FOUND", FailingClassID: 50, FailingMethodID: 10},
			frame: []byte{
				1, 0, 1, 0, 0, 0, 20,
				0, 20, 0, 40, // channel.close
				0x01, 0x94, // 404
				9, 'N', 'O', 'T', '_', 'F', 'O', 'U', 'N', 'D',
				0, 50, 0, 10,
				0xCE,
			},
		},
		{
			name:  "tx.commit-ok has no arguments",
			m:     &TxCommitOk{},
			frame: []byte{1, 0, 1, 0, 0, 0, 4, 0, 90, 0, 21, 0xCE},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AppendMethodFrame(nil, 1, tt.m)
			require.NoError(t, err)
			require.Equal(t, tt.frame, got)
			m, err := DecodeMethod(tt.frame[frameHeaderSize : len(tt.frame)-1])
			require.NoError(t, err)
			require.Equal(t, tt.m, m)
		})
	}
}

func TestDecodeMethodErrors(t *testing.T) {
	// Truncated arguments.
	payload := encodeMethod(t, &QueueDeclare{Queue: "jobs"})
	for n := 4; n < len(payload); n++ {
		_, err := DecodeMethod(payload[:n])
		require.ErrorIs(t, err, ErrMalformedFrame, "cut at %d", n)
		require.ErrorContains(t, err, "queue.declare")
	}
	// Trailing bytes.
	_, err := DecodeMethod(append(payload, 0))
	require.ErrorIs(t, err, ErrMalformedFrame)
	// Unknown method.
	_, err = DecodeMethod([]byte{0, 50, 0, 99})
	require.ErrorIs(t, err, ErrUnknownMethod)
	// Bits the spec does not define are ignored, like reserved fields.
	m, err := DecodeMethod([]byte{0, 60, 0, 40, 0, 7, 0, 0, 0xFF})
	require.NoError(t, err)
	require.Equal(t, &BasicPublish{Mandatory: true, Immediate: true}, m)
}

func TestShortstrTooLong(t *testing.T) {
	buf := []byte("keep")
	out, err := AppendMethodFrame(buf, 1, &QueueDeclare{Queue: strings.Repeat("q", 256)})
	require.ErrorIs(t, err, ErrShortstrTooLong)
	require.ErrorContains(t, err, "queue.declare queue")
	var fe *FieldError
	require.ErrorAs(t, err, &fe)
	require.Equal(t, "queue.declare queue", fe.Field)
	require.Equal(t, "keep", string(out), "a failed encode leaves dst as it was")

	// 255 bytes is the limit, not an error.
	_, err = AppendMethodFrame(nil, 1, &QueueDeclare{Queue: strings.Repeat("q", 255)})
	require.NoError(t, err)

	// Table errors keep their key path after the field name.
	_, err = AppendMethodFrame(nil, 1, &QueueDeclare{Arguments: Table{"x-bad": struct{}{}}})
	require.ErrorIs(t, err, ErrUnsupportedType)
	require.ErrorContains(t, err, "queue.declare arguments[x-bad]")
}

func TestPropertiesRoundTrip(t *testing.T) {
	all := Properties{
		ContentType:     "application/json",
		ContentEncoding: "gzip",
		Headers:         Table{"k": "v", "n": int64(3)},
		DeliveryMode:    2,
		Priority:        9,
		CorrelationID:   "corr",
		ReplyTo:         "amq.rabbitmq.reply-to",
		Expiration:      "60000",
		MessageID:       "id-1",
		Timestamp:       time.Unix(1700000000, 0).UTC(),
		Type:            "order.created",
		UserID:          "guest",
		AppID:           "shop",
		ClusterID:       "c1",
	}
	for _, tt := range []struct {
		name  string
		p     Properties
		flags uint16
	}{
		{"none", Properties{}, 0x0000},
		{"all", all, 0xFFFC},
		{"content-type", Properties{ContentType: "t"}, 0x8000},
		{"headers", Properties{Headers: Table{"a": "b"}}, 0x2000},
		{"delivery-mode", Properties{DeliveryMode: 1}, 0x1000},
		{"priority", Properties{Priority: 1}, 0x0800},
		{"correlation-id", Properties{CorrelationID: "c"}, 0x0400},
		{"timestamp", Properties{Timestamp: time.Unix(1, 0).UTC()}, 0x0040},
		{"app-id", Properties{AppID: "a"}, 0x0008},
		{"cluster-id", Properties{ClusterID: "c"}, 0x0004},
		{"mixed", Properties{ContentType: "t", DeliveryMode: 2, Timestamp: time.Unix(1, 0).UTC()}, 0x8000 | 0x1000 | 0x0040},
	} {
		t.Run(tt.name, func(t *testing.T) {
			frame, err := AppendHeaderFrame(nil, 3, classBasic, 42, &tt.p)
			require.NoError(t, err)
			payload := frame[frameHeaderSize : len(frame)-1]
			require.Equal(t, []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 42}, payload[:12])
			require.Equal(t, tt.flags, uint16(payload[12])<<8|uint16(payload[13]), "flag word")
			h, err := DecodeContentHeader(payload)
			require.NoError(t, err)
			require.Equal(t, ContentHeader{ClassID: 60, BodySize: 42, Properties: tt.p}, h)
		})
	}

	r := rand.New(rand.NewPCG(3, 4))
	for range 500 {
		var p Properties
		randomize(r, &p)
		frame, err := AppendHeaderFrame(nil, 1, classBasic, r.Uint64(), &p)
		require.NoError(t, err)
		h, err := DecodeContentHeader(frame[frameHeaderSize : len(frame)-1])
		require.NoError(t, err)
		require.Equal(t, p, h.Properties)
	}
}

func TestPropertiesGoldenBytes(t *testing.T) {
	p := &Properties{ContentType: "text/plain", DeliveryMode: 2}
	got, err := AppendHeaderFrame(nil, 1, classBasic, 5, p)
	require.NoError(t, err)
	require.Equal(t, []byte{
		2, 0, 1, 0, 0, 0, 26, // header frame, channel 1, 26 bytes
		0, 60, // class basic
		0, 0, // weight
		0, 0, 0, 0, 0, 0, 0, 5, // body size
		0x90, 0x00, // content-type (bit 15) and delivery-mode (bit 12)
		10, 't', 'e', 'x', 't', '/', 'p', 'l', 'a', 'i', 'n',
		2,
		0xCE,
	}, got)
}

func TestPropertiesDecodeErrors(t *testing.T) {
	head := []byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	for _, flags := range [][]byte{{0x00, 0x01}, {0x00, 0x02}, {0x80, 0x03}} {
		_, err := DecodeContentHeader(append(bytes.Clone(head), flags...))
		require.ErrorIs(t, err, ErrMalformedFrame, "flags % x", flags)
	}
	// A flagged property that is not there.
	_, err := DecodeContentHeader(append(bytes.Clone(head), 0x80, 0x00))
	require.ErrorIs(t, err, ErrMalformedFrame)
}

func TestPropertiesEncodeErrors(t *testing.T) {
	_, err := AppendHeaderFrame(nil, 1, classBasic, 0, &Properties{MessageID: strings.Repeat("m", 256)})
	require.ErrorIs(t, err, ErrShortstrTooLong)
	require.ErrorContains(t, err, "properties message-id")
}

// A timestamp property before 1970 goes out as a negative count of seconds
// and comes back the same, as other clients write it.
func TestPropertiesTimestampBefore1970RoundTrips(t *testing.T) {
	for _, ts := range []time.Time{
		time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC),
		time.Unix(-1, 0).UTC(),
		time.Unix(math.MinInt64, 0).UTC(),
	} {
		frame, err := AppendHeaderFrame(nil, 1, classBasic, 0, &Properties{Timestamp: ts})
		require.NoError(t, err)
		payload := frame[7 : len(frame)-1]
		require.Equal(t, uint64(ts.Unix()), binary.BigEndian.Uint64(payload[len(payload)-8:]), "two's-complement seconds")
		h, err := DecodeContentHeader(payload)
		require.NoError(t, err)
		require.Equal(t, ts, h.Properties.Timestamp)
	}
}

func TestReplyCodes(t *testing.T) {
	require.Equal(t, "NOT_FOUND", CodeNotFound.String())
	require.Equal(t, "CONTENT_TOO_LARGE", CodeContentTooLarge.String())
	require.Equal(t, "REPLY_SUCCESS", CodeSuccess.String())
	require.Equal(t, "ReplyCode(999)", ReplyCode(999).String())

	soft := []ReplyCode{311, 312, 313, 403, 404, 405, 406}
	hard := []ReplyCode{320, 402, 501, 502, 503, 504, 505, 506, 530, 540, 541}
	for _, c := range soft {
		require.False(t, c.Hard(), "%d", c)
	}
	for _, c := range hard {
		require.True(t, c.Hard(), "%d", c)
	}
	require.False(t, CodeSuccess.Hard())

	sentinels := []error{
		ErrContentTooLarge, ErrNoRoute, ErrNoConsumers, ErrConnectionForced, ErrInvalidPath,
		ErrAccessRefused, ErrNotFound, ErrResourceLocked, ErrPreconditionFailed, ErrFrameError,
		ErrSyntaxError, ErrCommandInvalid, ErrChannelError, ErrUnexpectedFrame, ErrResourceError,
		ErrNotAllowed, ErrNotImplemented, ErrInternalError,
	}
	require.Len(t, sentinels, len(soft)+len(hard))
	for _, s := range sentinels {
		var e *Error
		require.ErrorAs(t, s, &e)
		require.Equal(t, e.Code.String(), e.Reason)
		require.Equal(t, e.Code.Hard(), e.Connection, e.Reason)
		// errors.Is matches any error with the same code.
		server := &Error{Code: e.Code, Reason: e.Reason + " - from the server", Server: true}
		require.True(t, errors.Is(server, s))
	}
	require.False(t, errors.Is(&Error{Code: 404}, ErrAccessRefused))
}

func TestEncodeDoesNotAllocate(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	buf := make([]byte, 0, 64<<10)
	for _, k := range allMethodKeys {
		m := newMethod(k)
		randomize(r, m)
		// Tables are table.go's business (sorting keys may allocate for big
		// ones); the generated code must not allocate around them.
		for i, s := 0, reflect.ValueOf(m).Elem(); i < s.NumField(); i++ {
			if s.Field(i).Type() == reflect.TypeFor[Table]() {
				s.Field(i).Set(reflect.Zero(s.Field(i).Type()))
			}
		}
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := AppendMethodFrame(buf[:0], 1, m); err != nil {
				panic(err)
			}
		})
		require.Zero(t, allocs, m.MethodName())
	}
}

func TestAppendPublishDoesNotAllocate(t *testing.T) {
	pub, props, body := testPublishFixture()
	buf := make([]byte, 0, 64<<10)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := appendTestPublish(buf[:0], pub, props, body); err != nil {
			panic(err)
		}
	})
	require.Zero(t, allocs)
}

// BenchmarkAppendPublish measures encoding what one publish sends: a
// basic.publish method frame, a content header with a few properties and a
// 10 kB body split into 4 kB frames, into a reused buffer.
func BenchmarkAppendPublish(b *testing.B) {
	pub, props, body := testPublishFixture()
	buf := make([]byte, 0, 64<<10)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var err error
		if buf, err = appendTestPublish(buf[:0], pub, props, body); err != nil {
			b.Fatal(err)
		}
	}
}
