#!/usr/bin/env bash
# Tests the relayer's HTTP API against its own OpenAPI document (/openapi.json) with
# schemathesis and its default checks: every answer must be one the document lists, with the
# body it describes; every request the document calls valid must be accepted, every one it
# calls invalid refused; no 5xx. Starts the relayer (in-memory store, rate limiter off, an
# admin token) on a free loopback port, issues an API key for a funded user, runs a bounded,
# seeded schemathesis run and exits non-zero on any failure.
#
# Usage: schemathesis.sh [path/to/relayer]   (default target/debug/relayer, built if missing)
# Env:   SCHEMATHESIS_MAX_EXAMPLES (default 50 per operation), SCHEMATHESIS_SEED (default 19),
#        SCHEMATHESIS_TIMEOUT (seconds for the whole run, default 600), XDG_CACHE_HOME (where
#        the venv lives).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# Pinned: a new schemathesis brings new checks, and CI should change only when we change it.
version=4.32.5
bin="${1:-$root/target/debug/relayer}"
if [[ ! -x $bin ]]; then
  (cd "$root" && cargo build -p relayer --locked)
fi

venv="${XDG_CACHE_HOME:-$HOME/.cache}/foresight-schemathesis/venv-$version"
if [[ ! -x $venv/bin/st ]]; then
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
admin_token=schemathesis-admin-token-0123456789
work=$(mktemp -d)
RELAYER_LISTEN="127.0.0.1:$port" RELAYER_ADMIN_TOKEN=$admin_token \
  RELAYER_RATE_LIMIT__ENABLED=false RELAYER_SHUTDOWN__READINESS_DELAY_MS=0 RELAYER_LOG__FILTER=warn \
  "$bin" >"$work/relayer.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ready=false
for _ in $(seq 1 100); do
  if curl -sf "$base/ready" >/dev/null; then
    ready=true
    break
  fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [[ $ready != true ]]; then
  cat "$work/relayer.log" >&2
  echo "schemathesis: the relayer did not become ready" >&2
  exit 1
fi

admin() { # METHOD PATH BODY
  curl -sf -X "$1" -H "Authorization: Bearer $admin_token" \
    -H 'Content-Type: application/json' -d "$3" "$base$2"
}
# The user of the document's examples, funded so that its example orders can be placed.
user=0x1111111111111111111111111111111111111111
api_key=$(admin POST /admin/api-keys "{\"userId\":\"$user\"}" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["apiKey"])')
for asset in collateral 80002:1; do
  admin POST /admin/deposits \
    "{\"userId\":\"$user\",\"asset\":\"$asset\",\"amount\":\"1000000000000\"}" >/dev/null
done

# NB: a well-formed order can still be refused for want of balance (422): that is an answer
# about the account, not about the request's shape, so positive data may meet it.
cat >"$work/schemathesis.toml" <<'EOF'
[auth.openapi.apiKey]
bearer = "${SCHEMATHESIS_API_KEY}"

[auth.openapi.adminToken]
bearer = "${SCHEMATHESIS_ADMIN_TOKEN}"

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422", "429"]

# DELETE /v2/orders/{id} cancels an order, and a cancelled order stays readable by design
# (status `cancelled`, its fills and refunds): for that one read, and only there, a 200 after
# the DELETE is the documented answer, not a use after free.
[[operations]]
include-path = "/v2/orders/{id}"
include-method = "GET"
checks.use_after_free.enabled = false
EOF

# NB: no --max-time: with it, schemathesis keeps fuzzing until the budget is spent; the
# examples bound the run and `timeout` caps it.
# Its cache (.schemathesis/) goes to the scratch directory, not the checkout.
cd "$work"
status=0
SCHEMATHESIS_API_KEY=$api_key SCHEMATHESIS_ADMIN_TOKEN=$admin_token \
  timeout "${SCHEMATHESIS_TIMEOUT:-600}" \
  "$venv/bin/st" --config-file "$work/schemathesis.toml" --no-color run "$base/openapi.json" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" --seed "${SCHEMATHESIS_SEED:-19}" \
  --request-timeout 10 --generation-database none \
  >"$work/st.log" 2>&1 || status=$?
cat "$work/st.log"
if [[ $status -ne 0 ]]; then
  echo "schemathesis: failures (exit $status); relayer log:" >&2
  tail -n 50 "$work/relayer.log" >&2
  exit 1
fi
# Its count of test cases, e.g. "1118 generated, 1118 passed, 12 skipped", as the last word.
cases=$(grep -A1 '^Test cases:' "$work/st.log" | tail -n 1 | sed 's/^ *//')
echo "schemathesis: 0 failures: ${cases}"
