#!/usr/bin/env bash
# Rate-limiter benchmark (see relayer/examples/ratelimit_bench.rs): GET /v2/depth with the
# limiter off (twice: the second is a control), in memory, in Redis, and the naive sorted-set
# reference, interleaved in rounds; then the in-process ones side by side, at the same time.
#   scripts/bench-ratelimit.sh [seconds per run, default 3] [rounds, default 7] [scenarios]
# The relayer runs pinned to CPU 1 and the load (wrk, redis-server) to CPU 0, so the figures
# are the relayer's own throughput rather than a tug of war over both cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if ((${#need[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --locked -p relayer --example ratelimit_bench
if command -v taskset >/dev/null 2>&1 && [[ $(nproc) -ge 2 ]]; then
  BENCH_CLIENT_CPU=0 exec taskset -c 1 target/release/examples/ratelimit_bench "$@"
fi
exec target/release/examples/ratelimit_bench "$@"
