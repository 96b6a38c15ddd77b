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

ensure_rabbitmq() {
  port_open 5672 && return 0
  need_pkg rabbitmq-server rabbitmq-server
  rabbitmq-server -detached
  timeout 90 rabbitmqctl await_startup >/dev/null 2>&1
  wait_port 5672 rabbitmq 60
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
}

status=0
for what in "$@"; do
  "ensure_$what" || status=1
done
exit $status
