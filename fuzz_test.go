package amqp

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// The fuzz targets feed hostile payloads to the decoders. Decoding must never
// panic; whatever decodes must encode again, and that encoding must be stable
// (decode and encode once more: same bytes). Bytes rather than values are
// compared because a table may hold a NaN, which is never equal to itself.

func FuzzDecodeMethod(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, k := range allMethodKeys {
		m := newMethod(k)
		f.Add(encodeMethod(f, m))
		randomize(r, m)
		f.Add(encodeMethod(f, m))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		m, err := DecodeMethod(payload)
		if err != nil {
			return
		}
		once := encodeMethod(t, m)
		m2, err := DecodeMethod(once)
		if err != nil {
			t.Fatalf("decoding the re-encoding of %s: %v\npayload % x\nre-encoded % x", m.MethodName(), err, payload, once)
		}
		if twice := encodeMethod(t, m2); !bytes.Equal(once, twice) {
			t.Fatalf("%s: unstable encoding\nonce  % x\ntwice % x", m.MethodName(), once, twice)
		}
	})
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

func FuzzDecodeContentHeader(f *testing.F) {
	_, props, _ := testPublishFixture()
	f.Add(encodeHeader(f, ContentHeader{ClassID: classBasic, BodySize: 10, Properties: *props}))
	f.Add(encodeHeader(f, ContentHeader{ClassID: classBasic}))
	r := rand.New(rand.NewPCG(9, 10))
	for range 8 {
		h := ContentHeader{ClassID: classBasic, BodySize: r.Uint64()}
		randomize(r, &h.Properties)
		f.Add(encodeHeader(f, h))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		h, err := DecodeContentHeader(payload)
		if err != nil {
			return
		}
		once := encodeHeader(t, h)
		h2, err := DecodeContentHeader(once)
		if err != nil {
			t.Fatalf("decoding the re-encoding: %v\npayload % x\nre-encoded % x", err, payload, once)
		}
		if twice := encodeHeader(t, h2); !bytes.Equal(once, twice) {
			t.Fatalf("unstable encoding\nonce  % x\ntwice % x", once, twice)
		}
	})
}
