#!/usr/bin/env bash
# Runs the whole comparison (amqp against amqp091-go, and the raw-writer
# ceiling) and prints the tables that docs/PERFORMANCE.md shows.
#
#   bench/run.sh                  # 3 passes of every benchmark, 1s each
#   COUNT=5 BENCHTIME=2s bench/run.sh
#   BENCH='PublishSink|ConsumeSource' bench/run.sh
#
# Each pass runs every benchmark once (go test -count 1), so the clients'
# samples interleave in time and a drifting broker or a noisy neighbour
# hits both alike; the table shows the median of the passes. Broker
# scenarios need RabbitMQ at AMQP_URL (default
# amqp://guest:guest@127.0.0.1:5672/) and are skipped without it.
#
# Before each pass it waits (up to 2 minutes) until the machine is quiet:
# less than QUIET_PCT (default 15) percent of the CPU busy over a second,
# since other work on the machine skews both the timings and the broker.
set -euo pipefail
cd "$(dirname "$0")"

. ./quiet.sh

count=${COUNT:-3}
benchtime=${BENCHTIME:-1s}
bench=${BENCH:-.}
out=${OUT:-$(mktemp -t amqp-bench.XXXXXX.txt)}
bin=$(mktemp -t amqp-bench.XXXXXX.test)
trap 'rm -f "$bin"' EXIT

go test -c -o "$bin" .
: >"$out"
for pass in $(seq "$count"); do
	wait_quiet
	echo "pass $pass/$count" >&2
	"$bin" -test.run '^$' -test.bench "$bench" -test.benchmem -test.benchtime "$benchtime" -test.timeout 30m | tee -a "$out" >&2
done
echo "raw output: $out" >&2
go run ./cmd/benchtable <"$out"
