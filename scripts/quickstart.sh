#!/usr/bin/env bash
# The README's curl walk-through: funds two users, issues their API keys, places a resting ask
# and a crossing bid, and shows the trade, the depth and the balances.
#
#   RELAYER_ADMIN_TOKEN=dev-admin-token-0123456789 cargo run --release -p relayer   # terminal 1
#   scripts/quickstart.sh                                                           # terminal 2
#
# RELAYER (default http://127.0.0.1:3000) and RELAYER_ADMIN_TOKEN may be overridden.
# Exits non-zero unless the two orders matched.
set -euo pipefail

R="${RELAYER:-http://127.0.0.1:3000}"
T="${RELAYER_ADMIN_TOKEN:-dev-admin-token-0123456789}"
ALICE=0xa11ce00000000000000000000000000000000001
BOB=0xb0b0000000000000000000000000000000000002
json=(-H 'content-type: application/json')
run=$(date +%s%N)

admin() { curl -sSf "$R$1" -H "authorization: Bearer $T" "${json[@]}" -d "$2"; }
key_of() { sed -n 's/.*"apiKey":"\([^"]*\)".*/\1/p'; }

echo "# fund Alice with collateral and Bob with outcome shares of market 80002:1"
admin /admin/deposits "{\"userId\":\"$ALICE\",\"asset\":\"collateral\",\"amount\":\"1000\"}"; echo
admin /admin/deposits "{\"userId\":\"$BOB\",\"asset\":\"80002:1\",\"amount\":\"100\"}"; echo

echo "# issue API keys (shown once; only their hashes are stored)"
ALICE_KEY=$(admin /admin/api-keys "{\"userId\":\"$ALICE\"}" | key_of)
BOB_KEY=$(admin /admin/api-keys "{\"userId\":\"$BOB\"}" | key_of)

echo "# Bob rests an ask: 40 shares at 0.60"
curl -sSf "$R/v2/orders" -H "authorization: Bearer $BOB_KEY" "${json[@]}" \
  -d "{\"orderId\":\"ask-$run\",\"marketKey\":\"80002:1\",\"userId\":\"$BOB\",\"side\":\"sell\",\"price\":\"600000\",\"amount\":\"40\"}"; echo

echo "# Alice buys 40 at up to 0.65: it matches Bob's ask at 0.60"
bid=$(curl -sSf "$R/v2/orders" -H "authorization: Bearer $ALICE_KEY" "${json[@]}" \
  -d "{\"orderId\":\"bid-$run\",\"marketKey\":\"80002:1\",\"userId\":\"$ALICE\",\"side\":\"buy\",\"price\":\"650000\",\"amount\":\"40\"}")
echo "$bid"

echo "# depth and balances"
curl -sSf "$R/v2/depth?marketKey=80002:1"; echo
curl -sSf "$R/v2/balances/$ALICE" -H "authorization: Bearer $ALICE_KEY"; echo

case "$bid" in
  *'"status":"filled"'*'"makerOrderId":"ask-'*) echo "# matched" ;;
  *) echo "the bid did not match the ask" >&2; exit 1 ;;
esac
