#!/usr/bin/env bash
# Benchmark of the relayer's two store backends, side by side in one run on this machine:
# requests/s and p50/p99 latency of POST /v2/orders (every other order crosses and trades) and
# GET /v2/depth (100 and 200 levels per side of a book with 200 on each), for the in-memory
# store and the Redis store, with the ratios Redis / memory, plus the Redis commands sent per
# placed order (counted with MONITOR, script-internal commands excluded).
#
# With BASELINE=<git revision>, every variant also runs against the relayer of that revision,
# first, in the same run (built once into target/bench-baseline, see bench-common.sh).
#
# Needs: redis-server, redis-cli, wrk, curl (apt-get install -y redis-server wrk curl).
# The rate limiter is switched off for the run.
# Usage: [BASELINE=<rev>] scripts/bench-store.sh [duration, default 10s] [connections, default 32]
# Traffic goes to 127.0.0.1 only; every process it starts is stopped on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$here")"
duration="${1:-10s}"
connections="${2:-32}"
for tool in redis-server redis-cli wrk curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y redis-server wrk curl" >&2; exit 1; }
done

# shellcheck source=bench-common.sh
source "$here/bench-common.sh"

builds=(current)
baseline_bin=""
if [ -n "${BASELINE:-}" ]; then
  baseline_bin="$(baseline_relayer "$BASELINE")"
  builds=(baseline current)
fi
results=()
summaries=()
for build in "${builds[@]}"; do
relayer_bin=target/release/relayer
[ "$build" = baseline ] && relayer_bin="$baseline_bin"
for backend in memory redis; do
  port="$(free_port)"
  # The limiter is off: this measures the stores, not the limiter (scripts/bench-ratelimit.sh).
  env=(RELAYER_LISTEN="127.0.0.1:$port" RELAYER_ADMIN_TOKEN="$token" RELAYER_LOG__FILTER=warn
    RELAYER_RATE_LIMIT__ENABLED=false)
  if [ "$backend" = redis ]; then
    redis-cli -p "$redis_port" flushall >/dev/null
    env+=(RELAYER_REDIS_URL="redis://127.0.0.1:$redis_port/")
  fi
  start_relayer "$build-$backend" "${env[@]}"

  KEY_A="$key_a" KEY_B="$key_b" USER_A="$user_a" USER_B="$user_b" \
    wrk -t2 -c"$connections" -d"$duration" --latency -s "$work/orders.lua" "$base" >"$work/post-$build-$backend.txt"
  # Leave a book to aggregate: 200 resting levels on each side.
  for i in $(seq 1 200); do
    curl -fsS -o /dev/null -X POST "$base/v2/orders" -H "Authorization: Bearer $key_a" -H 'Content-Type: application/json' \
      -d "{\"marketKey\":\"$market\",\"userId\":\"$user_a\",\"side\":\"buy\",\"price\":\"$((100000 + i * 1000))\",\"amount\":\"3\"}"
    curl -fsS -o /dev/null -X POST "$base/v2/orders" -H "Authorization: Bearer $key_b" -H 'Content-Type: application/json' \
      -d "{\"marketKey\":\"$market\",\"userId\":\"$user_b\",\"side\":\"sell\",\"price\":\"$((700000 + i * 1000))\",\"amount\":\"3\"}"
  done
  for levels in 100 200; do
    wrk -t2 -c"$connections" -d"$duration" --latency "$base/v2/depth?marketKey=$market&levels=$levels" \
      >"$work/depth$levels-$build-$backend.txt"
  done

  if [ "$backend" = redis ]; then
    # Commands sent by the relayer per placed order: 200 crossing placements under MONITOR.
    redis-cli -p "$redis_port" monitor >"$work/monitor.txt" &
    monitor_pid=$!
    pids+=("$monitor_pid")
    sleep 0.3
    for i in $(seq 1 100); do
      curl -fsS -o /dev/null -X POST "$base/v2/orders" -H "Authorization: Bearer $key_a" -H 'Content-Type: application/json' \
        -d "{\"marketKey\":\"$market\",\"userId\":\"$user_a\",\"side\":\"sell\",\"price\":\"650000\",\"amount\":\"1\"}"
      curl -fsS -o /dev/null -X POST "$base/v2/orders" -H "Authorization: Bearer $key_b" -H 'Content-Type: application/json' \
        -d "{\"marketKey\":\"$market\",\"userId\":\"$user_b\",\"side\":\"buy\",\"price\":\"650000\",\"amount\":\"1\"}"
    done
    sleep 0.5
    kill "$monitor_pid" 2>/dev/null || true
    client_cmds="$(grep -c '\[0 127\.0\.0\.1:' "$work/monitor.txt" || true)"
    lua_cmds="$(grep -c '\[0 lua\]' "$work/monitor.txt" || true)"
    evalsha="$(grep '\[0 127\.0\.0\.1:' "$work/monitor.txt" | grep -ci '"evalsha"' || true)"
    per_order="$(python3 -c "print(f'{$client_cmds/200:.2f}')")"
    breakdown="$(grep '\[0 127\.0\.0\.1:' "$work/monitor.txt" | awk '{print toupper($4)}' | sort | uniq -c | sort -rn | tr -s ' ' | paste -sd, -)"
  fi
  kill "$relayer_pid"
  wait "$relayer_pid" 2>/dev/null || true
  results+=("$build  POST /v2/orders  $backend  $(summary "$work/post-$build-$backend.txt")")
  for levels in 100 200; do
    results+=("$build  GET  /v2/depth   $backend  $levels levels  $(summary "$work/depth$levels-$build-$backend.txt")")
  done
  [ "$backend" = redis ] && summaries+=("$build: Redis commands per placed order (crossing pairs, API-key lookup included): $per_order
  = EVALSHA scripts $(python3 -c "print(f'{$evalsha/200:.2f}')") + plain commands; script-internal calls: $(python3 -c "print(f'{$lua_cmds/200:.1f}')") per order
  by command over 200 orders: $breakdown")
done
done
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
ratio() { python3 -c "print(f'{$(rps "$1")/$(rps "$2"):.3f}')"; }

echo
echo "wrk -t2 -c$connections -d$duration, $(nproc) CPUs, relayer (release) and redis-server $(redis-server --version | awk '{print $3}') on this machine"
printf '%s\n' "${results[@]}"
for build in "${builds[@]}"; do
  w="$work"
  echo "$build Redis / memory: POST /v2/orders $(ratio "$w/post-$build-redis.txt" "$w/post-$build-memory.txt"), GET /v2/depth 100 levels $(ratio "$w/depth100-$build-redis.txt" "$w/depth100-$build-memory.txt"), 200 levels $(ratio "$w/depth200-$build-redis.txt" "$w/depth200-$build-memory.txt")"
done
printf '%s\n' "${summaries[@]}"
