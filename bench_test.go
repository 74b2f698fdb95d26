package amqp

import "testing"

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
