#!/usr/bin/env bash
# RabbitMQ 4.3 brokers for the test suite, in a Debian `forky` chroot, beside the
# machine's own broker (3.10.8 on 5672). The chroot is built once and kept; the
# nodes are started when down and left running, like the machine's broker.
#
#   scripts/rabbitmq4.sh up       build the chroot if missing, start every node, form the cluster
#   scripts/rabbitmq4.sh status   print each node's state
#   scripts/rabbitmq4.sh ctl NODE ARGS...   rabbitmqctl for a node (NODE: single|a|b|c)
#   scripts/rabbitmq4.sh stop     stop every node (the chroot stays)
#
# Nodes (all on 127.0.0.1, guest/guest):
#   single   rabbit43@localhost  AMQP 5680, distribution 25680
#   a, b, c  rabbitA/B/C@localhost  AMQP 5681-5683, distribution 25681-25683, one cluster
#
# The chroot lives in $RABBITMQ4_ROOT (default: /var/cache/effect-rabbitmq-worker/rabbitmq-4.3);
# nothing is written outside it. The Debian mirror is read from the machine's apt
# configuration, never written down.
set -euo pipefail

ROOT="${RABBITMQ4_ROOT:-/var/cache/effect-rabbitmq-worker/rabbitmq-4.3}"

node_name() {
  case "$1" in
    single) echo rabbit43@localhost ;;
    a) echo rabbitA@localhost ;;
    b) echo rabbitB@localhost ;;
    c) echo rabbitC@localhost ;;
    *) echo "unknown node '$1' (single|a|b|c)" >&2; return 2 ;;
  esac
}
node_port() {
  case "$1" in single) echo 5680 ;; a) echo 5681 ;; b) echo 5682 ;; c) echo 5683 ;; esac
}

mirror() {
  local uri
  uri=$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  fi
  if [ -z "$uri" ]; then
    echo "error: no Debian mirror in the machine's apt configuration" >&2
    return 1
  fi
  echo "$uri"
}

mounted() { grep -q " $1 " /proc/mounts; }

prepare() {
  if [ ! -x "$ROOT/usr/sbin/rabbitmq-server" ]; then
    command -v debootstrap >/dev/null 2>&1 || apt-get install -y debootstrap >/dev/null
    local tmp="$ROOT.partial"
    rm -rf "$tmp"
    mkdir -p "$(dirname "$ROOT")"
    echo "building the RabbitMQ 4.3 chroot in $ROOT (about a minute, once)" >&2
    # The log stays beside the half-built chroot when it fails, and moves into it when it works.
    debootstrap --variant=minbase --include=rabbitmq-server forky "$tmp" "$(mirror)" \
      /usr/share/debootstrap/scripts/sid >"$tmp.log" 2>&1 || {
        echo "error: debootstrap failed, see $tmp.log" >&2
        return 1
      }
    mv "$tmp.log" "$tmp/var/log/debootstrap.log"
    mv "$tmp" "$ROOT"
  fi
  # Erlang resolves `localhost` through /etc/hosts; without it epmd lookups fail.
  cp /etc/hosts "$ROOT/etc/hosts"
  mounted "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
  mounted "$ROOT/dev" || mount --bind /dev "$ROOT/dev"
}

in_root() { chroot "$ROOT" env HOME=/var/lib/rabbitmq "$@"; }

ctl() {
  local node
  node=$(node_name "$1"); shift
  in_root rabbitmqctl -q -n "$node" "$@"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A node serves once its AMQP port answers (rabbitmqctl calls take a second or two each).
running() { port_open "$(node_port "$1")"; }

start_node() {
  local key=$1 node port
  node=$(node_name "$key"); port=$(node_port "$key")
  if running "$key"; then return 0; fi
  if ctl "$key" ping >/dev/null 2>&1; then
    # The VM is up with the app stopped (a test's stop_app).
    ctl "$key" start_app
    return 0
  fi
  cat >"$ROOT/etc/rabbitmq/$node.conf" <<CONF
listeners.tcp.default = $port
loopback_users = none
log.console = false
log.file.level = warning
CONF
  in_root env RABBITMQ_NODENAME="$node" RABBITMQ_DIST_PORT=$((port + 20000)) \
    RABBITMQ_CONFIG_FILE="/etc/rabbitmq/$node.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE=/etc/rabbitmq/enabled_plugins.none \
    rabbitmq-server -detached
}

# A node started detached registers with epmd a moment later: until then
# await_startup fails at once ("not running at all").
await_node() {
  local i
  for i in $(seq 1 120); do
    ctl "$1" ping >/dev/null 2>&1 && break
    sleep 0.5
  done
  ctl "$1" await_startup --timeout 120 >/dev/null
}

form_cluster() {
  local key
  for key in b c; do
    if ! ctl "$key" cluster_status --formatter json 2>/dev/null | grep -q 'rabbitA@localhost'; then
      ctl "$key" stop_app
      ctl "$key" reset
      ctl "$key" join_cluster rabbitA@localhost
      ctl "$key" start_app
    fi
  done
}

up() {
  prepare
  echo '[].' >"$ROOT/etc/rabbitmq/enabled_plugins.none"
  local key started=()
  for key in single a b c; do
    if ! running "$key"; then start_node "$key"; started+=("$key"); fi
  done
  for key in "${started[@]}"; do await_node "$key"; done
  # Joining needs the nodes' own word; a marker saves the check on every run.
  if [ ! -f "$ROOT/var/lib/rabbitmq/.cluster-formed" ] || [ "${#started[@]}" -gt 0 ]; then
    form_cluster
    touch "$ROOT/var/lib/rabbitmq/.cluster-formed"
  fi
  echo "RabbitMQ 4.3 is up on 127.0.0.1:5680 (single node) and 5681-5683 (three-node cluster)"
}

status() {
  local key
  for key in single a b c; do
    if running "$key"; then echo "$key $(node_name "$key") running"; else echo "$key $(node_name "$key") down"; fi
  done
}

stop() {
  local key
  for key in single a b c; do ctl "$key" stop >/dev/null 2>&1 || true; done
}

case "${1:-up}" in
  up) up ;;
  status) prepare; status ;;
  ctl) shift; prepare >/dev/null; ctl "$@" ;;
  stop) stop ;;
  root) echo "$ROOT" ;;
  *) echo "usage: $0 up|status|ctl NODE ARGS...|stop|root" >&2; exit 2 ;;
esac
