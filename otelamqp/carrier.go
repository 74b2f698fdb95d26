package otelamqp

import (
	"slices"

	"github.com/amqp-go/amqp"
	"go.opentelemetry.io/otel/propagation"
)

// HeadersCarrier adapts message headers to a propagation.TextMapCarrier, to
// inject or extract trace context by hand (the Tracer does it on publish
// and delivery). Values other than strings and byte slices read as "".
type HeadersCarrier amqp.Table

var _ propagation.TextMapCarrier = HeadersCarrier(nil)

// Get returns the value of key as a string.
func (c HeadersCarrier) Get(key string) string {
	switch v := c[key].(type) {
	case string:
		return v
	case []byte: // longstr written by clients that send bytes (Java, .NET)
		return string(v)
	}
	return ""
}

// Set stores value under key.
func (c HeadersCarrier) Set(key, value string) { c[key] = value }

// Keys lists the keys, sorted.
func (c HeadersCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
