#!/usr/bin/env bash
# The project's test command (the README names it; .ci/run calls it): formatting, vet, generated
# code drift, the whole suite under the race detector, then a short run of every fuzz target.
# Integration tests talk to AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/). The brokertest
# module (its own go.mod, so toxiproxy & co. stay out of the library's) starts throwaway RabbitMQ
# nodes of its own for tests that stop, block or reconfigure a broker; it needs rabbitmq-server
# installed (scripts/ensure-rabbitmq.sh) and fails without it under CI=true. The layer module (its
# own go.mod, for msgpack and Fernet) tests the channel layer against AMQP_URL and a two-node
# cluster that brokertest starts, and its wire modes against the real Python layers (asgi_rabbitmq,
# channels_rabbitmq) run by ../shared/interop/django-channels/peer.py, whose Debian packages
# scripts/ensure-django-peer.sh installs when missing (apt only; the tests skip, saying why, without
# python3 or the peer).
# The otelamqp module (its own go.mod, so OpenTelemetry stays out of the library's) tests tracing
# and metrics against AMQP_URL, and a trace crossing to and from a Node.js peer when node and npm are there.
set -euo pipefail
cd "$(dirname "$0")/.."
# A count, not a duration: with a duration, Go before 1.27 can fail a target
# with a bare "context deadline exceeded" at the boundary while its workers
# are starved for CPU (golang/go#75804), though nothing was found. 100000
# inputs take 5-20 s per target here.
FUZZTIME=${FUZZTIME:-100000x}

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files --cached --others --exclude-standard '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi

echo "== go vet"
go vet ./...
(cd brokertest && go vet ./...)
(cd layer && go vet ./...)
(cd otelamqp && go vet ./...)

echo "== generated code is current"
go generate ./...
if [ -d .git ] && ! git diff --exit-code --stat -- methods_gen.go conformance/rules_gen.go; then
  echo "generated code is stale: run 'go generate ./...' and commit the result"; exit 1
fi

echo "== go test -race"
go test -race -count=1 -timeout 15m ./...

echo "== brokertest: go test -race (throwaway RabbitMQ nodes, toxiproxy)"
(cd brokertest && go test -race -count=1 -timeout 40m ./...)

echo "== layer: go test -race (the channel layer: AMQP_URL, a two-node cluster of its own, and"
echo "   cross-talk with the real Python layers through ../shared/interop/django-channels)"
bash scripts/ensure-django-peer.sh
(cd layer && go test -race -count=1 -timeout 10m ./...)

echo "== otelamqp: go test -race (OpenTelemetry spans and metrics: AMQP_URL, the fake server, and a Node.js peer when node and npm are there)"
(cd otelamqp && go test -race -count=1 -timeout 10m ./...)

echo "== fuzz (${FUZZTIME} each)"
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "-- $pkg $target"
    log=$(mktemp)
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >"$log" 2>&1; then
      cat "$log"; rm -f "$log"; exit 1
    fi
    tail -n 3 "$log"; rm -f "$log"
  done
done
echo "-- layer FuzzDecodeMessage"
log=$(mktemp)
if ! (cd layer && go test -run '^$' -fuzz '^FuzzDecodeMessage$' -fuzztime "$FUZZTIME" .) >"$log" 2>&1; then
  cat "$log"; rm -f "$log"; exit 1
fi
tail -n 3 "$log"; rm -f "$log"
echo "== all checks passed"
