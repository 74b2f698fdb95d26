package amqp

import (
	"context"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	server = <-accepted
	require.NotNil(t, server)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// When the socket fails, every large body still queued or being written is
// released: no publisher waits for a write that will never happen.
func TestFailedWriterReleasesLargeBodies(t *testing.T) {
	client, server := tcpPair(t)
	failed := make(chan error, 1)
	w := newWriter(client, func(err error) { failed <- err })
	require.True(t, w.vectored)
	server.Close()
	client.(*net.TCPConn).CloseWrite() // writes now fail at once
	head := func(b []byte) ([]byte, error) { return append(b, 'x'), nil }
	var bodies []*outBody
	for range 3 {
		ob, err := w.appendLarge(head, 1, make([]byte, 1<<20), 128<<10)
		require.NoError(t, err)
		require.NotNil(t, ob)
		bodies = append(bodies, ob)
	}
	go w.run()
	require.Error(t, <-failed)
	for _, ob := range bodies {
		ob.wait(context.Background()) // returns only once released
	}
	_, err := w.appendLarge(head, 1, make([]byte, 1<<20), 128<<10)
	require.ErrorIs(t, err, errWriterDown)
	w.shutdown()
}
