#!/usr/bin/env bash
# Compares two builds of the library, benchmark by benchmark, in one
# interleaved run: each pass runs the base build's benchmarks, then the
# head build's, so a drifting broker or a noisy neighbour hits both alike.
# For a change that should not change speed (a restructure), or to show
# what one did.
#
#   bench/compare.sh BASE [HEAD]        # git refs; HEAD defaults to the working tree
#   COUNT=5 BENCHTIME=1s BENCH='PublishSink|ConsumeSource' bench/compare.sh main~3
#
# It prints benchstat's table (golang.org/x/perf/cmd/benchstat, fetched
# through the module proxy on first use) of base against head. Like run.sh,
# each pass waits until the machine is quiet (QUIET_PCT, default 15).
set -euo pipefail
cd "$(dirname "$0")"
base=${1:?usage: compare.sh BASE [HEAD]}
head=${2:-}
count=${COUNT:-3}
benchtime=${BENCHTIME:-1s}
bench=${BENCH:-.}
tmp=$(mktemp -d -t amqp-compare.XXXXXX)
root=$(git rev-parse --show-toplevel)
cleanup() {
	for wt in "$tmp"/wt-*; do [ -d "$wt" ] && git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1; done
	rm -rf "$tmp"
}
trap cleanup EXIT

# build REF OUT: the bench binary of the library at REF ("" is the working tree).
build() {
	local ref=$1 out=$2 dir
	if [ -z "$ref" ]; then
		go test -c -o "$out" .
		return
	fi
	dir=$tmp/wt-$(basename "$out" .test)
	git -C "$root" worktree add --detach "$dir" "$ref" >/dev/null 2>&1
	(cd "$dir/bench" && go test -c -o "$out" .)
}

build "$base" "$tmp/base.test"
build "$head" "$tmp/head.test"

# shellcheck source=bench/quiet.sh
. ./quiet.sh
for pass in $(seq "$count"); do
	for build in base head; do
		wait_quiet
		echo "pass $pass/$count: $build" >&2
		"$tmp/$build.test" -test.run '^$' -test.bench "$bench" -test.benchmem \
			-test.benchtime "$benchtime" -test.timeout 30m | tee -a "$tmp/$build.txt" >&2
	done
done
out=${OUT:-$(mktemp -d -t amqp-compare-out.XXXXXX)}
cp "$tmp/base.txt" "$tmp/head.txt" "$out/"
echo "raw output: $out/base.txt $out/head.txt" >&2
if ! command -v benchstat >/dev/null; then
	PATH=$PATH:$(go env GOPATH)/bin
	command -v benchstat >/dev/null || go install golang.org/x/perf/cmd/benchstat@latest
fi
benchstat base="$out/base.txt" head="$out/head.txt"
