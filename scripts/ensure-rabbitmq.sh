#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on 127.0.0.1:5672 (guest/guest): a no-op when one does;
# otherwise install rabbitmq-server from Debian's packages if it is missing, start the system node
# and wait until it accepts AMQP connections. Needs root (or sudo) only when it has to install.
set -eu
export DEBIAN_FRONTEND=noninteractive

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

if port_open; then
  echo "rabbitmq: already listening on 127.0.0.1:5672"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

if ! command -v rabbitmq-server >/dev/null 2>&1 && [ ! -x /usr/sbin/rabbitmq-server ]; then
  echo "rabbitmq: installing rabbitmq-server"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq rabbitmq-server >/dev/null
fi
export PATH="$PATH:/usr/sbin"

if rabbitmq-diagnostics -q ping >/dev/null 2>&1; then
  echo "rabbitmq: node is up, waiting for its AMQP listener"
else
  # Containers without systemd: apt does not start the service, so start the node here.
  pidfile=/var/lib/rabbitmq/mnesia/rabbit@$(hostname -s).pid
  $SUDO rm -f "$pidfile" # a stale pid file would make 'wait' watch a dead process
  echo "rabbitmq: starting the node"
  $SUDO rabbitmq-server -detached
  # await_startup fails at once before the node registers with epmd; 'wait <pidfile>' does not.
  $SUDO rabbitmqctl wait --timeout 120 "$pidfile" >/dev/null
fi
$SUDO rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1 || true

for _ in $(seq 100); do port_open && break; sleep 0.2; done
port_open || { echo "rabbitmq: nothing listens on 127.0.0.1:5672" >&2; exit 1; }
echo "rabbitmq: ready on 127.0.0.1:5672"
