#!/usr/bin/env bash
# Side-by-side benchmark: queuelet (native JSON API and CMQ API 2.0) against beanstalkd,
# Redis and RabbitMQ on this machine, same workload, matched durability, and bare HTTP
# (the same exchanges answered from memory); paced rows at half load; and the 1 msg/op
# rows of queuelet, Redis and bare HTTP once more through Unix sockets, the way callers
# in the same pod or host can connect. Installs the peers from Debian packages
# (as root), starts each on 127.0.0.1 in a temporary directory, runs the matrix, stops
# what it started, and writes results.md (table) and results.png (chart) into the
# output folder.
#
#   bench/run.sh                 # the full matrix (8 producers + 8 consumers, 256 B)
#   bench/run.sh --smoke         # a tiny run of every system; fails on lost or duplicate
#                                # messages or adapter errors, never on timing
#
# Environment: N (messages per row, default 100000), P, C (producers, consumers; 8),
# S (bytes; 256), REPEAT (rounds, each running every row once, of which each row keeps its
# median: by throughput, by p99 for the paced rows; 3, 1 in the smoke), PACED_SECONDS (most
# seconds of messages in a paced row; 20), OUT (output folder; default bench/results).
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
if [ $smoke = 1 ]; then
  # Debug binaries: the smoke checks the accounting, not the speed, and shares the
  # build with the test suite.
  N=${N:-400} P=${P:-2} C=${C:-2} S=${S:-256} REPEAT=${REPEAT:-1} TIMEOUT=60 profile=dev bin=target/debug
else
  N=${N:-100000} P=${P:-8} C=${C:-8} S=${S:-256} REPEAT=${REPEAT:-3} TIMEOUT=600 profile=release bin=target/release
fi
OUT=${OUT:-bench/results}
PACED_SECONDS=${PACED_SECONDS:-20}
export RUST_LIB_BACKTRACE=0

packages=(beanstalkd redis-server rabbitmq-server fonts-dejavu-core jq curl)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  # The packages' own scripts must not start system-wide services: this script starts
  # its own, on loopback, in a temporary directory.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

cargo build --profile "$profile" --locked -q -p queuelet -p queuelet-bench
bench=$bin/queuelet-bench
queuelet=$bin/queuelet

work=$(mktemp -d)
mkdir -p "$OUT"
rows="$OUT/results.jsonl"
# Every run of every round; the rows are their medians.
runs="$work/runs.jsonl"
: > "$runs"
server_pid=
epmd_port=14369

stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
cleanup() {
  local status=$?
  if [ "$status" != 0 ]; then
    # The servers' own words on why the run failed, before their folder goes.
    for log in "$work"/*.log "$work"/rabbitmq/stdout.log "$work"/rabbitmq/log/*.log; do
      [ -s "$log" ] && { echo "--- tail of $log"; tail -n 20 "$log"; }
    done
  fi
  stop_server
  # RabbitMQ's Erlang VM starts a port mapper daemon of its own on our port: stop it.
  ERL_EPMD_PORT=$epmd_port epmd -kill >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_port() { # port seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { echo "server exited before listening on $1" >&2; return 1; }
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1 after $2 s" >&2
  return 1
}

measure() { # system address durability style [extra args]
  local system=$1 address=$2 durability=$3 style=$4
  shift 4
  "$bench" run --system "$system" --address "$address" --durability "$durability" \
    --style "$style" -p "$P" -c "$C" -n "$N" -s "$S" --timeout-seconds "$TIMEOUT" \
    --queue "bench-$style" --server-pid "$server_pid" --out "$runs" --check "$@"
}

both_styles() { # system address durability
  measure "$1" "$2" "$3" single
  measure "$1" "$2" "$3" best
}

# End-to-end latency at half of a row's own rate (its run in this round, measured just
# before): the latency target's load, taken for queuelet and for the best durable peer
# alike, so the target can be read against what this machine gives a peer at the same
# share of its load. At most PACED_SECONDS of messages, so that slow rows stay short.
at_half() { # system address durability style
  local rate half n
  rate=$(jq -r --arg system "$1" --arg durability "$3" --arg style "$4" \
    'select(.system == $system and .durability == $durability and .style == $style
      and .rate_target == null and (.unix_socket | not)) | .messages_per_second' "$runs" | tail -n1)
  half=$(jq -n "$rate / 2 | floor")
  n=$(jq -n "[$N, $half * $PACED_SECONDS] | min | floor")
  N=$n measure "$1" "$2" "$3" "$4" --rate "$half"
}

# queuelet serves its CMQ API 2.0 beside the native one, signed with this key.
cmq_key=AKIDbench:bench-secret
cmq_address=http://$cmq_key@127.0.0.1:18080

start_queuelet() { # mode
  rm -rf "$work/queuelet-$1"
  "$queuelet" --listen 127.0.0.1:18080 --data-dir "$work/queuelet-$1" --durability "$1" \
    --unix-socket "$work/queuelet-$1.sock" --cmq-keys "$cmq_key" --log-format text \
    >"$work/queuelet-$1.log" 2>&1 &
  server_pid=$!
  wait_port 18080 30
  for _ in $(seq 1 300); do
    curl -fs -o /dev/null http://127.0.0.1:18080/readyz && return 0
    sleep 0.1
  done
  echo "queuelet did not become ready" >&2
  return 1
}

start_beanstalkd() { # extra flags
  rm -rf "$work/beanstalkd-$#" && mkdir -p "$work/beanstalkd-$#"
  beanstalkd -l 127.0.0.1 -p 11399 -b "$work/beanstalkd-$#" "$@" &
  server_pid=$!
  wait_port 11399 30
}

start_redis() { # appendfsync
  rm -rf "$work/redis-$1" && mkdir -p "$work/redis-$1"
  redis-server --bind 127.0.0.1 --port 16379 --dir "$work/redis-$1" --save '' \
    --appendonly yes --appendfsync "$1" --daemonize no --protected-mode yes \
    --unixsocket "$work/redis-$1.sock" --unixsocketperm 700 \
    >"$work/redis-$1.log" 2>&1 &
  server_pid=$!
  wait_port 16379 30
}

start_rabbitmq() {
  local base="$work/rabbitmq"
  rm -rf "$base" && mkdir -p "$base"
  echo '[].' > "$base/enabled_plugins"
  HOME="$base" RABBITMQ_NODENAME=bench@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=35672 RABBITMQ_DIST_PORT=35673 ERL_EPMD_PORT=$epmd_port \
    ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_MNESIA_BASE="$base/mnesia" \
    RABBITMQ_LOG_BASE="$base/log" RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$base/rabbitmq" RABBITMQ_PID_FILE="$base/pid" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
    /usr/lib/rabbitmq/bin/rabbitmq-server >"$base/stdout.log" 2>&1 &
  server_pid=$!
  wait_port 35672 120
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
fsync_before=$("$bench" fsync-probe --dir "$work" --seconds 3)
fsync_busy=$("$bench" fsync-probe --dir "$work" --seconds 3 --busy-threads "$(nproc)")
echo "load before: $load_before; raw 4 KiB append + fdatasync: $fsync_before; with every core busy: $fsync_busy"
started=$(date +%s)

# Rounds: each runs every row once, so that a slow spell of this shared machine falls on
# every system alike rather than on the rows that happen to run during it.
for round in $(seq 1 "$REPEAT"); do
  echo "round $round of $REPEAT"
  # Durable: every acknowledged send is on stable storage.
  start_queuelet fsync
  both_styles queuelet http://127.0.0.1:18080 fsync
  at_half queuelet http://127.0.0.1:18080 fsync single
  at_half queuelet http://127.0.0.1:18080 fsync best
  measure queuelet http://127.0.0.1:18080 fsync single --unix-socket "$work/queuelet-fsync.sock"
  both_styles queuelet-cmq "$cmq_address" fsync
  stop_server

  start_beanstalkd -f 0
  both_styles beanstalkd 127.0.0.1:11399 "binlog, fsync every write (-f 0)"
  stop_server

  start_redis always
  both_styles redis redis://127.0.0.1:16379 "AOF, appendfsync always"
  at_half redis redis://127.0.0.1:16379 "AOF, appendfsync always" single
  at_half redis redis://127.0.0.1:16379 "AOF, appendfsync always" best
  measure redis "redis+unix://$work/redis-always.sock" "AOF, appendfsync always" single
  stop_server

  start_rabbitmq
  both_styles rabbitmq "amqp://guest:guest@127.0.0.1:35672/%2f" "durable queue, persistent, confirms"
  stop_server

  # Relaxed: a machine crash may lose the last moments of acknowledged changes.
  start_queuelet interval
  both_styles queuelet http://127.0.0.1:18080 "interval (10 ms)"
  measure queuelet http://127.0.0.1:18080 "interval (10 ms)" single \
    --unix-socket "$work/queuelet-interval.sock"
  both_styles queuelet-cmq "$cmq_address" "interval (10 ms)"
  stop_server

  start_beanstalkd
  both_styles beanstalkd 127.0.0.1:11399 "binlog, default (fsync every 50 ms)"
  stop_server

  start_redis everysec
  both_styles redis redis://127.0.0.1:16379 "AOF, appendfsync everysec"
  measure redis "redis+unix://$work/redis-everysec.sock" "AOF, appendfsync everysec" single
  stop_server

  # Bare HTTP: queuelet's message exchanges answered from memory by a bare axum server, no
  # storage at all: what the exchanges alone cost here.
  "$bench" bare-http --listen 127.0.0.1:18081 --unix-socket "$work/bare-http.sock" \
    >"$work/bare-http.log" 2>&1 &
  server_pid=$!
  wait_port 18081 30
  both_styles bare-http http://127.0.0.1:18081 "none (memory only)"
  measure bare-http http://127.0.0.1:18081 "none (memory only)" single \
    --unix-socket "$work/bare-http.sock"
  stop_server
done

# Each row is its median run over the rounds (by throughput; by p99 latency for a paced
# row, whose rate differs a little from round to round), in the order rows first ran.
jq -s -c 'def key: [.system, .durability, .style, .unix_socket, (.rate_target != null)];
  . as $runs
  | reduce ($runs[] | key) as $k ([]; if index([$k]) then . else . + [$k] end)
  | .[] as $k
  | [$runs[] | select(key == $k)]
  | sort_by(if .rate_target then .p99_ms else .messages_per_second end)
  | .[(length - 1) / 2 | floor]' "$runs" > "$rows"

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
fsync_after=$("$bench" fsync-probe --dir "$work" --seconds 3)
"$bench" report --input "$rows" --markdown "$OUT/results.md" --png "$OUT/results.png" \
  --note "$(nproc) cores; load average before $load_before, after $load_after; matrix took $(( $(date +%s) - started )) s; rounds: $REPEAT, each running every row once, a row its median round (by throughput; by p99 for the paced rows, which run at half of their own row's rate in that round for at most $PACED_SECONDS s)." \
  --note "Disk, 4 KiB append + fdatasync, one writer: before the matrix $fsync_before; after it $fsync_after; before it with $(nproc) threads spinning beside it (every core busy) $fsync_busy. Every acknowledgement in a durable row waits for at least one sync: its latency is at least a sync's, and the row's rate at most the syncs' rate times the messages one sync carries."
echo "wrote $OUT/results.md and $OUT/results.png"
cat "$OUT/results.md"
