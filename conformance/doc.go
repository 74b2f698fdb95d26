// Package conformance checks an AMQP 0-9-1 broker against the protocol,
// rule by rule, over raw sessions ([github.com/amqp-go/amqp/amqpraw]) that
// send exactly the frames each check calls for.
//
// # Rules
//
// The rules come from three places ([AllRules]):
//
//   - the 139 <rule> elements of the specification's XML (spec/ in this
//     module), generated into rules_gen.go by cmd/specgen ([SpecRules]):
//     "queue.declare.passive/equivalent" is the rule "equivalent" of the
//     field "passive" of queue.declare; 98 of them give a test scenario;
//   - the frame-level rules of the specification's general part, which the
//     XML leaves out: frame end octet, frame types, unknown class and method
//     ids, frame sizes and frame_max
//     negotiation, channel 0, content framing, channel_max, heartbeats, the
//     close handshakes ("frame/end-octet", "content/body-overrun", ...);
//   - RabbitMQ's extensions, marked as such: publisher confirms and nacks,
//     basic.nack, consumer cancel notification, exchange-to-exchange
//     bindings, connection.blocked, direct reply-to, update-secret,
//     authentication_failure_close, per-consumer QoS ("ext.confirm/select",
//     ...).
//
// Each rule has a level: MUST, SHOULD or MAY, the strongest keyword in its
// text (a rule that prescribes an error but names no keyword is a MUST).
//
// # Verdicts
//
// [Run] runs the check of every selected rule and returns a [Report]. Each
// [Result] is one of:
//
//   - [Pass]: the broker did what the rule asks, as seen on the wire. The
//     runner turns a PASS that rests on no frame from the broker into a FAIL,
//     so no check can pass without talking to one.
//   - [Fail]: it did not; the detail says what it did instead ("expected
//     channel.close 404 NOT_FOUND on channel 1, got ch1 queue.unbind-ok"),
//     and the transcript lists the frames both ways.
//   - [Deviation]: a failure the broker's own documentation owns up to. For
//     RabbitMQ these are the rules its "Compatibility and Conformance" page
//     lists as failing or planned, or qualifies in a note (idempotent
//     deletes, the immediate flag, priorities of plain queues, channel.flow
//     with active=false, ...).
//   - [Skip]: not checked, with the reason: a rule for clients or
//     applications, about logging, or needing what the run was not given.
//
// Rules without a check keep a reason in the package, so every report
// accounts for every rule.
//
// # Safety on a shared broker
//
// Checks use names unique to the run and the check, and delete every queue
// and exchange they declared. The rules about restarts (durable queues and
// bindings, persistent messages) need [Options].Restart, and those about
// resource alarms (connection.blocked, overflow) need [Options].RaiseAlarm and ClearAlarm; without
// them they are skipped, so a run never restarts or blocks a broker it was
// not given the means to. With them, checks that restart the broker share a
// single restart, and alarm checks run one at a time, after all the others.
//
// # Time
//
// Checks run in parallel ([Options].Parallel, 4 by default); each is bounded
// ([Options].CheckTimeout), each awaited reply too ([Options].ReplyTimeout),
// and so is the run ([Options].Timeout, 2 minutes). Against a local RabbitMQ
// 3.10 the whole suite takes about 10 seconds.
//
// cmd/amqp-conformance runs the suite from the command line and prints the
// table with totals per class and per level, or JSON and JUnit XML.
//
//go:generate go run ../cmd/specgen -in ../spec/amqp0-9-1.extended.xml -rules rules_gen.go
package conformance
