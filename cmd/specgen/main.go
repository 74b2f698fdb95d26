// Command specgen generates the AMQP 0-9-1 method types of package amqp from
// the specification XML:
//
//	go run ./cmd/specgen -in spec/amqp0-9-1.extended.xml -out methods_gen.go
//
// With -rules it writes instead the list of the spec's <rule> elements that
// package conformance checks a broker against:
//
//	go run ./cmd/specgen -in spec/amqp0-9-1.extended.xml -rules conformance/rules_gen.go
//
// It checks the spec as it reads it (every field's domain resolves, every
// response names a method, class and method ids are unique) and applies the
// few corrections the XML needs; see the quirk tables in model.go.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	in := flag.String("in", "spec/amqp0-9-1.extended.xml", "spec XML to read")
	out := flag.String("out", "methods_gen.go", "Go file to write; - for standard output")
	rules := flag.String("rules", "", "write the spec's rules (package conformance) to this file instead of the methods")
	flag.Parse()
	gen := generate
	if *rules != "" {
		gen, *out = generateRules, *rules
	}
	if err := run(*in, *out, gen); err != nil {
		fmt.Fprintln(os.Stderr, "specgen:", err)
		os.Exit(1)
	}
}

func run(in, out string, generate func([]byte) ([]byte, error)) error {
	src, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	code, err := generate(src)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if out == "-" {
		_, err = os.Stdout.Write(code)
		return err
	}
	return os.WriteFile(out, code, 0o644)
}
