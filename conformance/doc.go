// Package conformance checks an AMQP 0-9-1 broker against the protocol,
// rule by rule.
//
//go:generate go run ../cmd/specgen -in ../spec/amqp0-9-1.extended.xml -rules rules_gen.go
package conformance
