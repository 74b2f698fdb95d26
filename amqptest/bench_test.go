package amqptest_test

import (
	"net"
	"testing"

	"github.com/amqp-go/amqp"
	"github.com/amqp-go/amqp/amqptest"
)

// benchClient does a client's handshake on a pipe without goroutines and
// returns the connection and its frame reader.
func benchClient(b *testing.B, srv *amqptest.Server) (net.Conn, *amqp.FrameReader) {
	b.Helper()
	nc, err := srv.Dial(b.Context(), "tcp", "")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { nc.Close() })
	fr := amqp.NewFrameReader(nc)
	fr.SetMaxFrameSize(0)
	write := func(ms ...amqp.Method) {
		var buf []byte
		for _, m := range ms {
			buf, _ = amqp.AppendMethodFrame(buf, 0, m)
		}
		if _, err := nc.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	read := func() {
		if _, err := fr.ReadFrame(); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := nc.Write(amqp.ProtocolHeader[:]); err != nil {
		b.Fatal(err)
	}
	read() // start
	write(&amqp.ConnectionStartOk{Mechanism: "PLAIN", Response: "\x00guest\x00guest"})
	read() // tune
	write(&amqp.ConnectionTuneOk{ChannelMax: 2047, FrameMax: amqptest.DefaultFrameMax},
		&amqp.ConnectionOpen{VirtualHost: "/"})
	read() // open-ok
	return nc, fr
}

// BenchmarkSink measures the server's side of publishing: how fast Sink
// takes in publishes of 100 bytes, and that it allocates nothing per message.
func BenchmarkSink(b *testing.B) {
	srv := amqptest.NewServer(b, amqptest.Options{})
	nc, fr := benchClient(b, srv)
	sc := accept(b, srv)
	done := make(chan amqptest.SinkStats, 1)
	go func() {
		st, err := sc.Sink(b.Context())
		if err != nil {
			b.Error(err)
		}
		done <- st
	}()
	one := contentFrames(b, 1, &amqp.BasicPublish{RoutingKey: "q"}, amqp.Properties{}, make([]byte, 100), amqptest.DefaultFrameMax)
	const perWrite = 256
	batch := make([]byte, 0, perWrite*len(one))
	for range perWrite {
		batch = append(batch, one...)
	}
	b.SetBytes(100)
	b.ReportAllocs()
	b.ResetTimer()
	for n := b.N; n > 0; n -= perWrite {
		if _, err := nc.Write(batch[:min(n, perWrite)*len(one)]); err != nil {
			b.Fatal(err)
		}
	}
	closeFrame, _ := amqp.AppendMethodFrame(nil, 0, &amqp.ConnectionClose{ReplyCode: 200})
	if _, err := nc.Write(closeFrame); err != nil {
		b.Fatal(err)
	}
	if _, err := fr.ReadFrame(); err != nil { // close-ok
		b.Fatal(err)
	}
	if st := <-done; st.Publishes != int64(b.N) {
		b.Errorf("Sink counted %d publishes, want %d", st.Publishes, b.N)
	}
}

// BenchmarkDeliver measures how fast Deliver sends messages of 100 bytes to
// a client that reads and discards them.
func BenchmarkDeliver(b *testing.B) {
	srv := amqptest.NewServer(b, amqptest.Options{})
	_, fr := benchClient(b, srv)
	sc := accept(b, srv)
	read := make(chan error, 1)
	go func() {
		for frames := 0; frames < 3*b.N; frames++ {
			if _, err := fr.ReadFrame(); err != nil {
				read <- err
				return
			}
		}
		read <- nil
	}()
	b.SetBytes(100)
	b.ReportAllocs()
	b.ResetTimer()
	if err := sc.Deliver(b.Context(), 1, "ctag", b.N, amqp.Properties{}, make([]byte, 100)); err != nil {
		b.Fatal(err)
	}
	if err := <-read; err != nil {
		b.Fatal(err)
	}
}
