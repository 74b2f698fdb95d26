package amqp

import (
	"bytes"
	"context"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Helpers for the tests inside package amqp (internal tests are compiled
// apart from package amqp_test, so they cannot share helpers_test.go).

// named is a mechanism with only a name, for pickMechanism.
type named string

func (n named) Name() string { return string(n) }

func (n named) Start(context.Context) ([]byte, ChallengeFunc, error) { return []byte(n), nil, nil }

// randomize sets every exported field of the struct v points to to a random
// non-zero value, except bools, which are random so that bit packing sees
// every pattern over many runs. Strings stay within a shortstr's 255 bytes
// because reflection cannot tell shortstr from longstr fields.
func randomize(r *rand.Rand, v any) {
	s := reflect.ValueOf(v).Elem()
	for i := range s.NumField() {
		f := s.Field(i)
		switch f.Interface().(type) {
		case bool:
			f.SetBool(r.IntN(2) == 1)
		case uint8, uint16, uint32, uint64, ReplyCode:
			n := r.Uint64() >> (64 - f.Type().Bits())
			f.SetUint(max(n, 1))
		case string:
			f.SetString(randomString(r, 1+r.IntN(255)))
		case Table:
			f.Set(reflect.ValueOf(randomTable(r)))
		case time.Time:
			f.Set(reflect.ValueOf(randomTime(r)))
		default:
			panic("randomize: no case for field " + s.Type().Field(i).Name)
		}
	}
}

func randomString(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return string(b)
}

func randomTable(r *rand.Rand) Table {
	return Table{
		"k":                       "v",
		randomString(r, 8):        randomString(r, r.IntN(40)),
		"n":                       r.Int64(),
		"flag":                    r.IntN(2) == 1,
		"nested":                  Table{"x-match": "all"},
		"x-" + randomString(r, 3): int32(r.Uint32()),
	}
}

// randomTime is in whole seconds and UTC: what AMQP carries and decodes to.
func randomTime(r *rand.Rand) time.Time {
	return time.Unix(1+r.Int64N(1<<40), 0).UTC()
}

// encodeMethod returns m's method frame payload (ids and arguments).
func encodeMethod(t testing.TB, m Method) []byte {
	t.Helper()
	frame, err := AppendMethodFrame(nil, 0, m)
	require.NoError(t, err)
	return frame[frameHeaderSize : len(frame)-1]
}

func testPublishFixture() (*BasicPublish, *Properties, []byte) {
	pub := &BasicPublish{Exchange: "orders", RoutingKey: "order.created", Mandatory: true}
	props := &Properties{
		ContentType:   "application/json",
		DeliveryMode:  2,
		CorrelationID: "3f8a2c",
		MessageID:     "msg-000042",
		Timestamp:     time.Unix(1700000000, 0),
	}
	return pub, props, bytes.Repeat([]byte("x"), 10_000)
}

// appendTestPublish writes what a publish sends: method, header and body frames.
func appendTestPublish(b []byte, pub *BasicPublish, props *Properties, body []byte) ([]byte, error) {
	b, err := AppendMethodFrame(b, 1, pub)
	if err != nil {
		return b, err
	}
	b, err = AppendHeaderFrame(b, 1, classBasic, uint64(len(body)), props)
	if err != nil {
		return b, err
	}
	return AppendBodyFrames(b, 1, body, MinFrameSize), nil
}

// encodeHeader returns h's content header payload.
func encodeHeader(t testing.TB, h ContentHeader) []byte {
	t.Helper()
	frame, err := AppendHeaderFrame(nil, 1, h.ClassID, h.BodySize, &h.Properties)
	if err != nil {
		t.Fatalf("encoding %+v: %v", h, err)
	}
	return frame[frameHeaderSize : len(frame)-1]
}
