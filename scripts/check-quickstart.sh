#!/usr/bin/env bash
# Runs scripts/quickstart.sh against a freshly started relayer binary on a loopback port, so the
# README's walk-through cannot drift from what the relayer does. Usage: check-quickstart.sh BIN
set -euo pipefail
bin="${1:?usage: check-quickstart.sh path/to/relayer}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
token=dev-admin-token-0123456789
log=$(mktemp)
RELAYER_LISTEN="127.0.0.1:$port" RELAYER_ADMIN_TOKEN=$token RELAYER_SHUTDOWN__READINESS_DELAY_MS=0 "$bin" >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$log" >&2; echo "relayer exited" >&2; exit 1; }
  sleep 0.1
done
RELAYER="http://127.0.0.1:$port" RELAYER_ADMIN_TOKEN=$token "$here/quickstart.sh"
echo "quickstart walk-through: ok"
