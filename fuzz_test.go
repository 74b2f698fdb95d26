package amqp

import (
	"bytes"
	"encoding/binary"
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

// FuzzAssembleContentHeader feeds hostile content headers to the reader's
// assembly: only a header too short to hold its body size (or one over the
// size limit) may fail the frame, and so the connection; anything after that
// is the message's own ContentError, and whatever decodes matches
// DecodeContentHeader.
func FuzzAssembleContentHeader(f *testing.F) {
	_, props, _ := testPublishFixture()
	f.Add(encodeHeader(f, ContentHeader{ClassID: classBasic, BodySize: 10, Properties: *props}))
	f.Add([]byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 3, 1, 'k', '?'})
	f.Add([]byte{0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x98, 0, 1, 'x'})
	f.Fuzz(func(t *testing.T, payload []byte) {
		const maxBody = 1 << 20
		var a assembly
		var bin deliveryBin
		a.begin(&BasicDeliver{})
		_, err := a.header(payload, maxBody, nil, &bin)
		want, werr := DecodeContentHeader(payload)
		if len(payload) < 12 {
			if err == nil {
				t.Fatalf("a %d-byte header passed", len(payload))
			}
			return
		}
		size := binary.BigEndian.Uint64(payload[4:12])
		if size > maxBody {
			if err == nil {
				t.Fatal("a body over the limit passed")
			}
			return
		}
		if err != nil {
			t.Fatalf("framing was intact but the header failed the connection: %v", err)
		}
		if (a.msg.err == nil) != (werr == nil) {
			t.Fatalf("assembly says %v, DecodeContentHeader says %v", a.msg.err, werr)
		}
		if werr == nil && !bytes.Equal(encodeHeader(t, want), encodeHeader(t, ContentHeader{ClassID: want.ClassID, BodySize: size, Properties: a.msg.Properties})) {
			t.Fatal("the assembly decoded other properties than DecodeContentHeader")
		}
		if a.msg.err != nil && !bytes.Equal(a.msg.err.Header, payload) {
			t.Fatal("the raw header was not kept")
		}
	})
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
