// Package amqpraw talks to a live AMQP 0-9-1 broker frame by frame, for
// protocol-conformance tests and for reproducing broker behaviour: it is the
// client-side mirror of package amqptest, which plays the server.
//
// A [Session] is one TCP (or TLS) connection and nothing else: it keeps no
// channel state, checks nothing it sends, and answers nothing by itself (not
// even heartbeats). The test decides every byte:
//
//   - [Dial] and [DialURL] open the socket; [Session.Handshake] runs the whole
//     opening handshake (protocol header, start-ok with PLAIN, tune-ok, open),
//     or a test runs any part of it by hand with [Session.SendProtocolHeader],
//     [Session.Send] and [Expect].
//
//   - [Session.Send] and [Session.SendContent] write methods and messages on
//     any channel, in any order; [Session.SendHeader], [Session.SendBody],
//     [Session.SendFrame] and [Session.WriteRaw] write single frames, frames
//     with any type or end octet, and arbitrary bytes: what a client library
//     would never send.
//
//   - [Session.ReadFrame] and [Session.ReadCommand] read what the broker sends
//     without judging it; [Expect], [Session.ExpectChannelClose],
//     [Session.ExpectConnectionClose], [Session.ExpectProtocolHeader] and
//     [Session.ExpectClosed] read and judge, each bounded by its ctx:
//
//     ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
//     defer cancel()
//     close, err := s.ExpectConnectionClose(ctx, amqp.CodeUnexpectedFrame)
//
// Errors from the Expect helpers are *[UnexpectedError] values that say what
// the broker did instead ("channel.close 406 PRECONDITION_FAILED - ...",
// "the broker closed the connection", "nothing within 2s"), which is what a
// conformance report needs. [Session.Transcript] lists everything the session
// sent and received, one line per frame.
//
// The codec is the client's own: frames are built with amqp.AppendMethodFrame
// and friends and read with amqp.FrameReader and amqp.DecodeMethod.
package amqpraw
