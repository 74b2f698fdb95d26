#!/usr/bin/env bash
# Runs the demo against AMQP_URL, or against a local RabbitMQ that this
# script starts (installing it if needed) when none is configured.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${AMQP_URL:-}" ]; then
  bash scripts/ensure-rabbitmq.sh
fi
exec go run ./cmd/amqp-demo
