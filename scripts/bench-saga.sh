#!/usr/bin/env bash
# Cost of the order saga's durable log: POST /v2/orders on the Redis store with the saga log
# on (saga.durableLog true, the default) and off (the same build, RELAYER_SAGA__DURABLE_LOG=
# false), side by side in one run: requests/s, p50/p99 latency (wrk; every other order crosses
# and trades, settled by the embedded ledger), and the Redis round trips per placed order
# (counted with MONITOR over 100 crossing pairs, script-internal commands excluded), and Redis
# CPU per placed order (the usec of INFO commandstats over the load, over the orders placed).
#
# With BASELINE=<git revision>, the same load also runs against the relayer of that revision
# (saga log on), in the same run, as a baseline: built once from a detached worktree into
# target/bench-baseline (cached; the first build takes as long as a release build).
# ROUNDS=<n> (default 1) repeats every variant n times, interleaved, and prints the median
# requests/s of each, with the ratio to the baseline.
#
# Needs: redis-server, redis-cli, wrk, curl, python3 (apt-get install -y redis-server wrk curl).
# The rate limiter is switched off for the run.
# Usage: [BASELINE=<rev>] [ROUNDS=<n>] scripts/bench-saga.sh [duration, default 10s] [connections, default 32]
# Traffic goes to 127.0.0.1 only; every process it starts is stopped on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$here")"
duration="${1:-10s}"
connections="${2:-32}"
rounds="${ROUNDS:-1}"
for tool in redis-server redis-cli wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y redis-server wrk curl" >&2; exit 1; }
done

# shellcheck source=bench-common.sh
source "$here/bench-common.sh"
baseline_bin=""
[ -n "${BASELINE:-}" ] && baseline_bin="$(baseline_relayer "$BASELINE")"

results=()
variants=(on off)
[ -n "$baseline_bin" ] && variants=(baseline on off)
for round in $(seq 1 "$rounds"); do
for variant in "${variants[@]}"; do
  log="$variant"
  bin=target/release/relayer
  if [ "$variant" = baseline ]; then
    log=on
    bin="$baseline_bin"
  fi
  port="$(free_port)"
  redis-cli -p "$redis_port" flushall >/dev/null
  durable=true
  [ "$log" = off ] && durable=false
  env=(RELAYER_LISTEN="127.0.0.1:$port" RELAYER_ADMIN_TOKEN="$token" RELAYER_LOG__FILTER=warn
    RELAYER_RATE_LIMIT__ENABLED=false RELAYER_REDIS_URL="redis://127.0.0.1:$redis_port/"
    RELAYER_SAGA__DURABLE_LOG="$durable")
  relayer_bin="$bin"
  start_relayer "$variant-$round" "${env[@]}"

  redis-cli -p "$redis_port" config resetstat >/dev/null
  KEY_A="$key_a" KEY_B="$key_b" USER_A="$user_a" USER_B="$user_b" \
    wrk -t2 -c"$connections" -d"$duration" --latency -s "$work/orders.lua" "$base" >"$work/post-$variant-$round.txt"
  # Redis CPU per placed order: the usec of INFO commandstats over the load (reset just
  # before it), over the orders wrk placed.
  usec="$(redis_usec)"
  orders="$(awk '/requests in/ {print $1}' "$work/post-$variant-$round.txt")"
  us_per_order="$(python3 -c "print(f'{$usec/max($orders,1):.1f}')")"
  awk -v v="$variant" -v us="$us_per_order" '/Requests\/sec/ {print v, $2, us}' "$work/post-$variant-$round.txt" >>"$work/rps.txt"

  redis-cli -p "$redis_port" monitor >"$work/monitor-$variant-$round.txt" &
  monitor_pid=$!
  pids+=("$monitor_pid")
  sleep 0.3
  for i in $(seq 1 100); do
    curl -fsS -o /dev/null -X POST "$base/v2/orders" -H "Authorization: Bearer $key_a" -H 'Content-Type: application/json' \
      -d "{\"marketKey\":\"$market\",\"userId\":\"$user_a\",\"side\":\"buy\",\"price\":\"650000\",\"amount\":\"1\"}"
    curl -fsS -o /dev/null -X POST "$base/v2/orders" -H "Authorization: Bearer $key_b" -H 'Content-Type: application/json' \
      -d "{\"marketKey\":\"$market\",\"userId\":\"$user_b\",\"side\":\"sell\",\"price\":\"650000\",\"amount\":\"1\"}"
  done
  sleep 0.5
  kill "$monitor_pid" 2>/dev/null || true
  # NB: the recovery sweep (one HGETALL per saga-log shard every saga.recoveryIntervalMs) runs on
  # its own clock; it is counted apart.
  client="$(grep '\[0 127\.0\.0\.1:' "$work/monitor-$variant-$round.txt" || true)"
  scans="$(grep -ci '"hgetall" "[^"]*{sagas:' <<<"$client" || true)"
  total="$(grep -c . <<<"$client" || true)"
  per_order="$(python3 -c "print(f'{($total-$scans)/200:.2f}')")"
  breakdown="$(grep -vi '"hgetall" "[^"]*{sagas:' <<<"$client" | awk '{print toupper($4)}' | sort | uniq -c | sort -rn | tr -s ' ' | paste -sd, -)"
  kill "$relayer_pid"
  wait "$relayer_pid" 2>/dev/null || true
  label="saga log $log"
  [ "$variant" = baseline ] && label="baseline $BASELINE (saga log on)"
  results+=("round $round, $label:  POST /v2/orders $(summary "$work/post-$variant-$round.txt")  Redis µs/order in commands $us_per_order")
  results+=("  Redis round trips per placed order (100 crossing pairs): $per_order  [$breakdown]; recovery sweep reads in the window: $scans")
done
done

echo
echo "wrk -t2 -c$connections -d$duration, $(nproc) CPUs, relayer (release), redis-server $(redis-server --version | awk '{print $3}'), embedded settlement ledger"
printf '%s\n' "${results[@]}"
echo
python3 - "$work/rps.txt" <<'PY'
import statistics, sys
runs = {}
cpu = {}
for line in open(sys.argv[1]):
    variant, rps, us = line.split()
    runs.setdefault(variant, []).append(float(rps))
    cpu.setdefault(variant, []).append(float(us))
base = statistics.median(runs["baseline"]) if "baseline" in runs else None
for variant, values in runs.items():
    median = statistics.median(values)
    ratio = f", {median / base:.3f} x baseline" if base else ""
    us = statistics.median(cpu[variant])
    print(f"median req/s, {variant}: {median:.0f} over {len(values)} round(s){ratio}; Redis µs/order {us:.1f}")
if "on" in runs and "off" in runs:
    print(f"saga log on / off: {statistics.median(runs['on']) / statistics.median(runs['off']):.3f}")
PY
