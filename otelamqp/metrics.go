package otelamqp

import (
	"context"
	"errors"
	"time"

	"github.com/amqp-go/amqp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// instruments are the Tracer's metrics; see NewTracer.
type instruments struct {
	sent, consumed, settled, confirmed, returned, recoveries, channelErrors metric.Int64Counter
	opDuration, processDuration, confirmDuration                            metric.Float64Histogram
	blocked                                                                 metric.Float64Counter
}

// durationBuckets suit messaging latencies, from 100 µs to 30 s.
var durationBuckets = []float64{0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

func newInstruments(m metric.Meter) (instruments, error) {
	var (
		in   instruments
		errs []error
	)
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return c
	}
	histogram := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(durationBuckets...))
		errs = append(errs, err)
		return h
	}
	in.sent = counter("messaging.client.sent.messages", "{message}", "Messages the application published.")
	in.consumed = counter("messaging.client.consumed.messages", "{message}", "Messages handed to the application.")
	in.settled = counter("amqp.client.settled.messages", "{message}", "Deliveries settled, by outcome (acked, nacked, rejected, released, auto-acked, lost).")
	in.confirmed = counter("amqp.client.confirmed.messages", "{message}", "Publisher confirmations, by outcome (acked, nacked, returned, lost).")
	in.returned = counter("amqp.client.returned.messages", "{message}", "Messages the server returned unroutable (basic.return).")
	in.recoveries = counter("amqp.client.recoveries", "{event}", "Connection recovery steps, by amqp.recovery.event.")
	in.channelErrors = counter("amqp.client.channel.errors", "{error}", "Channel errors the server reported, by reply code.")
	in.opDuration = histogram("messaging.client.operation.duration", "Duration of publishes (to their confirmation in confirm mode) and synchronous methods.")
	in.processDuration = histogram("messaging.process.duration", "Time from a delivery's hand-out to its settlement.")
	in.confirmDuration = histogram("amqp.client.confirm.duration", "Publish-to-confirmation latency in confirm mode.")
	var err error
	in.blocked, err = m.Float64Counter("amqp.client.blocked.duration", metric.WithUnit("s"),
		metric.WithDescription("Time the server blocked publishing on the connection (connection.blocked), counted when the block lifts."))
	errs = append(errs, err)
	return in, errors.Join(errs...)
}

// TraceRecovery counts recovery steps.
func (t *Tracer) TraceRecovery(c *amqp.Connection, ev amqp.RecoveryEvent) {
	switch ev.Kind {
	case amqp.RecoveryStarted, amqp.RecoveryAttemptFailed, amqp.RecoverySucceeded, amqp.RecoveryFailed:
	default:
		return
	}
	t.m.recoveries.Add(context.Background(), 1, metric.WithAttributes(systemAttr, attribute.String("amqp.recovery.event", ev.Kind.String())))
}

// TraceBlocked accumulates the time a connection is blocked.
func (t *Tracer) TraceBlocked(c *amqp.Connection, b amqp.Blocking) {
	now := time.Now().UnixNano()
	t.mu.Lock()
	since, was := t.blockedSince[c]
	if b.Active {
		if !was {
			t.blockedSince[c] = now
		}
		t.mu.Unlock()
		return
	}
	delete(t.blockedSince, c)
	t.mu.Unlock()
	if was {
		t.m.blocked.Add(context.Background(), time.Duration(now-since).Seconds(),
			metric.WithAttributes(append([]attribute.KeyValue{systemAttr}, serverAttrs(c.Addr())...)...))
	}
}

// TraceReturn counts returned messages.
func (t *Tracer) TraceReturn(ch *amqp.Channel, r amqp.Return) {
	t.m.returned.Add(context.Background(), 1, metric.WithAttributes(systemAttr, semconv.MessagingDestinationName(r.Exchange)))
}

// TraceChannelError counts channel errors by reply code.
func (t *Tracer) TraceChannelError(ch *amqp.Channel, err *amqp.Error) {
	t.m.channelErrors.Add(context.Background(), 1, metric.WithAttributes(systemAttr, semconv.ErrorTypeKey.String(err.Code.String())))
}
