#!/usr/bin/env bash
# Start (and install from Debian packages, if missing) the servers the test suite talks to. Idempotent: a
# server that already answers is left alone. Used by .ci/run; safe to run by hand. Needs root for apt-get.
set -uo pipefail

# Progress goes to stderr, one line before each slow apt step (an update and a first install of Chromium or
# RabbitMQ take minutes): a silent script would look hung.
say() { echo "ensure-services: $*" >&2; }

apt_updated=""
need_pkg() {  # need_pkg COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ -z "$apt_updated" ]; then
    say "apt-get update (package lists; may take a minute)..."
    apt-get update -qq >/dev/null 2>&1
    apt_updated=1
  fi
  shift
  say "apt-get install $* (missing: $1)..."
  local started=$SECONDS
  if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; then
    say "installed $* in $(( SECONDS - started )) s"
  else
    say "could not install $*"
  fi
}

port_open() { timeout 1 bash -c "</dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_port() {  # wait_port PORT NAME SECONDS
  for _ in $(seq 1 $(( $3 * 5 ))); do port_open "$1" && return 0; sleep 0.2; done
  echo "ensure-services: $2 did not come up on port $1" >&2; return 1
}

ensure_postgres() {
  pg_isready -h 127.0.0.1 -q 2>/dev/null && return 0
  need_pkg pg_ctlcluster postgresql
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_port 5432 postgresql 30
}

ensure_redis() {
  port_open 6379 && return 0
  need_pkg redis-server redis-server
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no
  wait_port 6379 redis 15
}

ensure_nats() {
  port_open 4222 && return 0
  need_pkg nats-server nats-server
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$(command -v nats-server)" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_port 4222 nats 15
}

# An open port is not enough: a broker can accept TCP and never answer AMQP (seen once after a day of chaos
# tests). The protocol header must get the server's Connection.Start back.
amqp_answers() {
  timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672 && printf "AMQP\x00\x00\x09\x01" >&3 && head -c 7 <&3 >/dev/null' 2>/dev/null
}

wait_amqp() {  # wait_amqp SECONDS: a broker that just started recovers its queues before it answers
  for _ in $(seq 1 "$1"); do amqp_answers && return 0; sleep 1; done
  return 1
}

ensure_rabbitmq() {
  if port_open 5672; then
    wait_amqp 120 && return 0
    echo "ensure-services: rabbitmq accepts connections but does not answer AMQP; restarting it" >&2
    timeout 60 rabbitmqctl stop >/dev/null 2>&1 || pkill -f 'beam.smp.*rabbit boot' || true
    sleep 2
  fi
  need_pkg rabbitmq-server rabbitmq-server
  rabbitmq-server -detached
  timeout 90 rabbitmqctl await_startup >/dev/null 2>&1
  wait_port 5672 rabbitmq 60
  wait_amqp 120 || { echo "ensure-services: rabbitmq does not answer AMQP" >&2; return 1; }
}

ensure_tools() {  # servers the tests start themselves, on their own ports
  need_pkg haproxy haproxy
  need_pkg prometheus prometheus
  need_pkg promtool prometheus
  # /usr/bin/chromium: the browser tests (tests/browser, the admin page) drive it headless through
  # Playwright's Python package, so no Playwright browser download is needed (TIDINGS_CHROMIUM=<path>
  # points them at another build).
  need_pkg chromium chromium
  need_pkg npm npm
  # tests/chaos: network namespaces and qdiscs (iproute2), and socat forwarding a namespace's veth to the
  # loopback services
  need_pkg ip iproute2
  need_pkg tc iproute2
  need_pkg socat socat
}

status=0
for what in "$@"; do
  "ensure_$what" || status=1
done
exit $status
