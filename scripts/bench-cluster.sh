#!/usr/bin/env bash
# Benchmark of the Redis store on one node and on a Redis Cluster of 3 masters (each with a
# replica), side by side in one run: orders per second of POST /v2/orders (crossing pairs over
# 8 markets and 16 users, so the keys spread over the slots) and Redis CPU per placed order.
#
# Variants, interleaved in rounds (the order reversed every other round), medians reported:
#   standalone       one redis-server (the baseline), redis.replicaAcks 0 (its default)
#   standalone-acks  another redis-server with one replica, redis.replicaAcks 1: what waiting
#                    for a replica costs without a cluster
#   cluster          3 masters + 3 replicas, redis.replicaAcks 1 (the cluster default: every
#                    write confirmed by its replica before it counts)
#   cluster-noacks   the same cluster with redis.replicaAcks 0, to show what the WAIT costs
#
# Redis CPU per placed order: the `usec` of `INFO commandstats` summed over the masters (time
# inside commands, scripts included) over the orders placed, and the CPU time of the master
# processes (/proc: user + system, I/O and replication included) over the same orders.
#
# Needs: redis-server, redis-cli, wrk, curl, python3 (apt-get install -y redis-server wrk curl).
# The rate limiter is off. Traffic stays on 127.0.0.1; every process started is stopped on exit.
# Usage: scripts/bench-cluster.sh [duration, default 8s] [connections, default 32] [rounds, default 3]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$here")"
duration="${1:-8s}"
connections="${2:-32}"
rounds="${3:-3}"
for tool in redis-server redis-cli wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install -y redis-server wrk curl" >&2; exit 1; }
done

# shellcheck source=bench-common.sh
source "$here/bench-common.sh"

# --- a primary with one replica, for standalone-acks -------------------------------------------
primary_port="$(free_port)"
replica_port="$(free_port)"
for p in "$primary_port" "$replica_port"; do
  mkdir -p "$work/node-$p"
  extra=()
  [ "$p" = "$replica_port" ] && extra=(--replicaof 127.0.0.1 "$primary_port")
  redis-server --port "$p" --bind 127.0.0.1 --save "" --appendonly no --repl-diskless-sync-delay 0 \
    --dir "$work/node-$p" --logfile "$work/node-$p/redis.log" --daemonize no "${extra[@]}" &
  pids+=($!)
done
online=0
for _ in $(seq 200); do
  redis-cli -p "$primary_port" info replication | grep -q 'state=online' && { online=1; break; }
  sleep 0.05
done
[ "$online" = 1 ] || { echo "the replica of the standalone-acks primary did not come online" >&2; exit 1; }

# --- the cluster: six nodes, ports p with a free bus port p + 10000 --------------------------
cluster_ports=($(python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
ports = []
while len(ports) < 6:
    p = random.randint(15000, 29999)
    # neither its port nor its bus port (+10000) may be another node's port or bus port
    clash = lambda q: any(q in (t, t + 10000) for t in ports)
    if not clash(p) and not clash(p + 10000) and free(p) and free(p + 10000):
        ports.append(p)
print(" ".join(map(str, ports)))
PY
))
for p in "${cluster_ports[@]}"; do
  mkdir -p "$work/node-$p"
  redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes --cluster-config-file nodes.conf \
    --cluster-node-timeout 2000 --save "" --appendonly no --repl-diskless-sync-delay 0 \
    --dir "$work/node-$p" --logfile "$work/node-$p/redis.log" --daemonize no &
  pids+=($!)
done
for p in "${cluster_ports[@]}"; do
  for _ in $(seq 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
done
timeout 60 redis-cli --cluster create $(printf '127.0.0.1:%s ' "${cluster_ports[@]}") --cluster-replicas 1 --cluster-yes >"$work/create.log"
masters() { redis-cli -p "${cluster_ports[0]}" cluster nodes | awk '$3 ~ /master/ && $3 !~ /fail/ {split($2, a, "[:@]"); print a[2]}' | sort; }
for _ in $(seq 300); do
  ok=1
  for p in $(masters); do
    redis-cli -p "$p" info replication | grep -q 'state=online' || ok=0
  done
  redis-cli -p "${cluster_ports[0]}" cluster info | grep -q 'cluster_state:ok' || ok=0
  [ "$(masters | wc -l)" = 3 ] || ok=0
  [ "$ok" = 1 ] && break
  sleep 0.1
done
[ "$ok" = 1 ] || { echo "the cluster did not become healthy" >&2; exit 1; }
master_ports=($(masters))

# --- load: 8 buyer/seller pairs over 8 markets ------------------------------------------------
markets=(80002:1 80002:2 80002:3 80002:4 80002:5 80002:6 80002:7 80002:8)
users=()
for i in $(seq 1 16); do users+=("$(printf '0x%040x' "$((0xc100 + i))")"); done
cat >"$work/spread.lua" <<'LUA'
-- Pair k (users 2k-1 buying at 0.51, 2k selling at 0.49) trades in market k, k = 1..8, turn by
-- turn: every pair of requests trades once, and the keys of 8 markets and 16 users spread
-- over the cluster's slots.
local function split(s) local t = {} for x in string.gmatch(s, "[^,]+") do t[#t + 1] = x end return t end
local keys, users, markets = split(os.getenv("KEYS")), split(os.getenv("USERS")), split(os.getenv("MARKETS"))
local n = 0
request = function()
  n = n + 1
  local pair = math.floor(n / 2) % #markets
  local buyer = n % 2 == 0
  local u = pair * 2 + (buyer and 1 or 2)
  local body = string.format(
    '{"marketKey":"%s","userId":"%s","side":"%s","price":"%s","amount":"1"}',
    markets[pair + 1], users[u], buyer and "buy" or "sell", buyer and "510000" or "490000")
  return wrk.format("POST", "/v2/orders",
    { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. keys[u] }, body)
end
LUA

# CPU jiffies (user + system) of the processes listening on the given ports.
cpu_of_ports() {
  local total=0 pid
  for p in "$@"; do
    pid="$(redis-cli -p "$p" info server | awk -F: '/^process_id:/ {print $2}' | tr -d '\r')"
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
# Calls per command over the given ports, as "name=calls" words.
calls_of_ports() {
  for p in "$@"; do redis-cli -p "$p" info commandstats; done |
    awk -F'[_:=,]' '/^cmdstat_/ {c[$2] += $4} END {for (k in c) printf "%s=%d ", k, c[k]}'
}
usec_of_ports() {
  local total=0
  for p in "$@"; do
    total=$((total + $(redis-cli -p "$p" info commandstats | awk -F'usec=' '/^cmdstat_/ {split($2, a, ","); s += a[1]} END {print s + 0}')))
  done
  echo "$total"
}

run_variant() { # variant round
  local variant="$1" round="$2" ports
  port="$(free_port)"
  env=(RELAYER_LISTEN="127.0.0.1:$port" RELAYER_ADMIN_TOKEN="$token" RELAYER_LOG__FILTER=warn
    RELAYER_RATE_LIMIT__ENABLED=false RELAYER_REDIS__KEY_PREFIX="b$round-$variant:")
  case "$variant" in
    standalone) env+=(RELAYER_REDIS_URL="redis://127.0.0.1:$redis_port/"); ports=("$redis_port") ;;
    standalone-acks) env+=(RELAYER_REDIS_URL="redis://127.0.0.1:$primary_port/" RELAYER_REDIS__REPLICA_ACKS=1); ports=("$primary_port") ;;
    cluster) env+=(RELAYER_REDIS_URL="redis://127.0.0.1:${cluster_ports[0]}/" RELAYER_REDIS__MODE=cluster); ports=("${master_ports[@]}") ;;
    cluster-noacks) env+=(RELAYER_REDIS_URL="redis://127.0.0.1:${cluster_ports[0]}/" RELAYER_REDIS__MODE=cluster RELAYER_REDIS__REPLICA_ACKS=0); ports=("${master_ports[@]}") ;;
  esac
  env "${env[@]}" target/release/relayer >"$work/relayer-$variant.log" 2>&1 &
  relayer_pid=$!
  pids+=("$relayer_pid")
  base="http://127.0.0.1:$port"
  wait_http "$base/ready"
  local keys=() i
  for i in "${!users[@]}"; do
    keys+=("$(api_key "$base" "${users[$i]}")")
    if [ $((i % 2)) = 0 ]; then
      deposit "$base" "${users[$i]}" collateral 1000000000000
    else
      deposit "$base" "${users[$i]}" "${markets[$((i / 2))]}" 1000000000000
    fi
  done
  for p in "${ports[@]}"; do redis-cli -p "$p" config resetstat >/dev/null; done
  local cpu0
  cpu0="$(cpu_of_ports "${ports[@]}")"
  KEYS="$(IFS=,; echo "${keys[*]}")" USERS="$(IFS=,; echo "${users[*]}")" MARKETS="$(IFS=,; echo "${markets[*]}")" \
    wrk -t2 -c"$connections" -d"$duration" --latency -s "$work/spread.lua" "$base" >"$work/wrk-$variant-$round.txt"
  local cpu1 usec
  cpu1="$(cpu_of_ports "${ports[@]}")"
  usec="$(usec_of_ports "${ports[@]}")"
  calls="$(calls_of_ports "${ports[@]}")"
  kill "$relayer_pid"
  wait "$relayer_pid" 2>/dev/null || true
  python3 - "$work/wrk-$variant-$round.txt" "$variant" "$round" "$usec" "$((cpu1 - cpu0))" "$(getconf CLK_TCK)" "$calls" >>"$work/rows.txt" 2>>"$work/calls.txt" <<'PY'
import re, sys
path, variant, rnd, usec, jiffies, hz, calls = sys.argv[1:]
text = open(path).read()
total = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
bad = int(bad.group(1)) if bad else 0
secs = float(re.search(r"requests in ([\d.]+)(m?s)", text).group(1))
unit = re.search(r"requests in [\d.]+(m?s)", text).group(1)
secs = secs / 1000 if unit == "ms" else secs
p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)
p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)
placed = total - bad
per = {k: int(v) / max(placed, 1) for k, v in (w.split("=") for w in calls.split())}
print(f"{variant} round {rnd}: commands per placed order on the masters: "
      + ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.01),
      file=sys.stderr)
print(variant, rnd, f"{placed / secs:.0f}", p50, p99, bad,
      f"{int(usec) / max(placed, 1):.1f}", f"{int(jiffies) / int(hz) * 1e6 / max(placed, 1):.1f}")
PY
}

variants=(standalone standalone-acks cluster cluster-noacks)
: >"$work/rows.txt"
for round in $(seq 1 "$rounds"); do
  order=("${variants[@]}")
  if [ $((round % 2)) = 0 ]; then order=(cluster-noacks cluster standalone-acks standalone); fi
  for v in "${order[@]}"; do run_variant "$v" "$round"; done
done

echo
echo "wrk -t2 -c$connections -d$duration, $rounds rounds, $(nproc) CPUs, relayer (release) and redis-server $(redis-server --version | awk '{print $3}') on this machine"
echo "per round: variant round orders/s p50 p99 non-2xx redis-usec/order(commandstats) redis-cpu-usec/order(/proc)"
cat "$work/rows.txt"
cat "$work/calls.txt"
python3 - "$work/rows.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by = {}
for v, r, rps, p50, p99, bad, usec, cpu in rows:
    by.setdefault(v, []).append((float(rps), float(usec), float(cpu), int(bad)))
base = statistics.median(x[0] for x in by["standalone"])
print("medians:")
for v in ["standalone", "standalone-acks", "cluster", "cluster-noacks"]:
    xs = by.get(v, [])
    if not xs:
        continue
    rps = statistics.median(x[0] for x in xs)
    print(f"  {v:15s} {rps:8.0f} orders/s ({rps / base:.3f} of standalone)  "
          f"Redis {statistics.median(x[1] for x in xs):6.1f} µs/order in commands (masters), "
          f"{statistics.median(x[2] for x in xs):6.1f} µs/order of master CPU; non-2xx {sum(x[3] for x in xs)}")
PY
