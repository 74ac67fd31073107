#!/usr/bin/env bash
# Cost of the order saga's durable log: POST /v2/orders on the Redis store with the saga log
# on (saga.durableLog true, the default) and off (the same build, RELAYER_SAGA__DURABLE_LOG=
# false), side by side in one run: requests/s, p50/p99 latency (wrk; every other order crosses
# and trades, settled by the embedded ledger), and the Redis round trips per placed order
# (counted with MONITOR over 100 crossing pairs, script-internal commands excluded).
#
# Needs: redis-server, redis-cli, wrk, curl, python3 (apt-get install -y redis-server wrk curl).
# The rate limiter is switched off for the run.
# Usage: scripts/bench-saga.sh [duration, default 10s] [connections, default 32]
# Traffic goes to 127.0.0.1 only; every process it starts is stopped on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$here")"
duration="${1:-10s}"
connections="${2:-32}"
for tool in redis-server redis-cli wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y redis-server wrk curl" >&2; exit 1; }
done

cargo build --release --locked -p relayer --bin relayer >&2
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }

redis_port="$(free_port)"
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --logfile "$work/redis.log" --daemonize no &
pids+=($!)
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done

token="bench-admin-token-0123456789"
user_a="0x00000000000000000000000000000000000000a1"
user_b="0x00000000000000000000000000000000000000b2"
market="80002:1"

cat >"$work/orders.lua" <<'LUA'
-- Alternates a buy of user A at 0.51 and a sell of user B at 0.49: every pair trades.
local keys = { os.getenv("KEY_A"), os.getenv("KEY_B") }
local users = { os.getenv("USER_A"), os.getenv("USER_B") }
local n = 0
request = function()
  n = n + 1
  local i = n % 2 + 1
  local side = i == 1 and "buy" or "sell"
  local price = i == 1 and "510000" or "490000"
  local body = string.format(
    '{"marketKey":"80002:1","userId":"%s","side":"%s","price":"%s","amount":"1"}',
    users[i], side, price)
  return wrk.format("POST", "/v2/orders",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. keys[i] }, body)
end
LUA

api_key() {
  curl -fsS -X POST "$1/admin/api-keys" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d "{\"userId\":\"$2\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["apiKey"])'
}
deposit() {
  curl -fsS -X POST "$1/admin/deposits" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d "{\"userId\":\"$2\",\"asset\":\"$3\",\"amount\":\"$4\"}" >/dev/null
}
summary() {
  awk '/Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2}
       /Non-2xx/ {bad=$NF} END {printf "%10s req/s  p50 %8s  p99 %8s  non-2xx %s\n", rps, p50, p99, (bad==""?0:bad)}' "$1"
}

results=()
for log in on off; do
  port="$(free_port)"
  redis-cli -p "$redis_port" flushall >/dev/null
  durable=true
  [ "$log" = off ] && durable=false
  env=(RELAYER_LISTEN="127.0.0.1:$port" RELAYER_ADMIN_TOKEN="$token" RELAYER_LOG__FILTER=warn
    RELAYER_RATE_LIMIT__ENABLED=false RELAYER_REDIS_URL="redis://127.0.0.1:$redis_port/"
    RELAYER_SAGA__DURABLE_LOG="$durable")
  env "${env[@]}" target/release/relayer >"$work/relayer-$log.log" 2>&1 &
  relayer_pid=$!
  pids+=("$relayer_pid")
  base="http://127.0.0.1:$port"
  wait_http "$base/ready"
  key_a="$(api_key "$base" "$user_a")"
  key_b="$(api_key "$base" "$user_b")"
  deposit "$base" "$user_a" collateral 1000000000000
  deposit "$base" "$user_b" "$market" 1000000000000

  KEY_A="$key_a" KEY_B="$key_b" USER_A="$user_a" USER_B="$user_b" \
    wrk -t2 -c"$connections" -d"$duration" --latency -s "$work/orders.lua" "$base" >"$work/post-$log.txt"

  redis-cli -p "$redis_port" monitor >"$work/monitor-$log.txt" &
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
  client="$(grep '\[0 127\.0\.0\.1:' "$work/monitor-$log.txt" || true)"
  scans="$(grep -ci '"hgetall" "[^"]*{sagas:' <<<"$client" || true)"
  total="$(grep -c . <<<"$client" || true)"
  per_order="$(python3 -c "print(f'{($total-$scans)/200:.2f}')")"
  breakdown="$(grep -vi '"hgetall" "[^"]*{sagas:' <<<"$client" | awk '{print toupper($4)}' | sort | uniq -c | sort -rn | tr -s ' ' | paste -sd, -)"
  kill "$relayer_pid"
  wait "$relayer_pid" 2>/dev/null || true
  results+=("saga log $log:  POST /v2/orders $(summary "$work/post-$log.txt")")
  results+=("  Redis round trips per placed order (100 crossing pairs): $per_order  [$breakdown]; recovery sweep reads in the window: $scans")
done

echo
echo "wrk -t2 -c$connections -d$duration, $(nproc) CPUs, relayer (release), redis-server $(redis-server --version | awk '{print $3}'), embedded settlement ledger"
printf '%s\n' "${results[@]}"
