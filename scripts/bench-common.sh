# Shared by the store and saga benchmarks (sourced, not run): builds the release relayer,
# starts a private redis-server on a free loopback port, and defines the helpers that start
# relayers, fund users, build a baseline revision's relayer and read wrk's output. Every
# process it starts is stopped on exit.
cargo build --release --locked -p relayer --bin relayer >&2

# The release relayer of git revision $1, for a baseline in the same run: built once from a
# detached worktree into target/bench-baseline (cached by revision; the first build takes as
# long as a release build). Prints its path.
baseline_relayer() {
  local rev bin tree
  rev="$(git rev-parse --verify "$1^{commit}")"
  bin="target/bench-baseline/relayer-$rev"
  if [ ! -x "$bin" ]; then
    tree="$(mktemp -d)/baseline"
    git worktree add --detach "$tree" "$rev" >&2
    (cd "$tree" && CARGO_TARGET_DIR="$OLDPWD/target/bench-baseline" \
      cargo build --release --locked -p relayer --bin relayer >&2)
    cp target/bench-baseline/release/relayer "$bin"
    git worktree remove --force "$tree"
  fi
  echo "$bin"
}
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 200); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "no answer from $1; its log:" >&2; cat "$work"/relayer-*.log >&2 2>/dev/null || true; return 1; }

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
# Sum of the usec of INFO commandstats (Redis CPU in commands, scripts included) since the
# last CONFIG RESETSTAT.
redis_usec() {
  redis-cli -p "$redis_port" info commandstats |
    awk -F'usec=' '/^cmdstat_/ {split($2, a, ","); sum += a[1]} END {printf "%d", sum}'
}
# "Requests/sec", p50 and p99 from wrk --latency output.
summary() {
  awk '/Requests\/sec/ {rps=$2} $1=="50%" {p50=$2} $1=="99%" {p99=$2}
       /Non-2xx/ {bad=$NF} END {printf "%10s req/s  p50 %8s  p99 %8s  non-2xx %s\n", rps, p50, p99, (bad==""?0:bad)}' "$1"
}

# Starts the release relayer (or the binary in the shell variable relayer_bin) with the `env` assignments after NAME
# (logging to relayer-NAME.log), waits until it is ready, issues API keys for user A and B and
# funds them. Sets relayer_pid, base, key_a and key_b.
start_relayer() {
  local name="$1"
  shift
  ${BENCH_RELAYER_PIN:-} env "$@" "${relayer_bin:-target/release/relayer}" >"$work/relayer-$name.log" 2>&1 &
  relayer_pid=$!
  pids+=("$relayer_pid")
  base="http://127.0.0.1:$port"
  wait_http "$base/ready"
  key_a="$(api_key "$base" "$user_a")"
  key_b="$(api_key "$base" "$user_b")"
  deposit "$base" "$user_a" collateral 1000000000000
  deposit "$base" "$user_b" "$market" 1000000000000
}
