#!/usr/bin/env bash
# The local demo, no cluster needed, in one command:
#
#   scripts/demo.sh
#
# starts a local control plane, installs the chart, runs the operator under the chart's
# ServiceAccount with every relayer pod backed by a real relayer process (each in a network
# namespace of its own) on one shared redis-server, and performs a blue-green cutover and a
# rollback while `kubectl relayer status --watch` prints the progress and a load of orders,
# cancels and reads runs through it; at the end it checks every order and balance. The demo
# itself is tests/chart_demo.rs, so it is built from the same harness the tests use.
#
# Needs root (network namespaces): re-runs itself with sudo when started as another user.
# Installs what is missing like the tests do (scripts/setup.sh: redis-server, iproute2, the
# Kubernetes test binaries built once from their Go modules). About a minute when warm.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$here")"
if [[ $(id -u) -ne 0 ]]; then
  exec sudo -E "$0" "$@"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

# shellcheck source=setup.sh
source "$here/setup.sh"
echo "[demo] building the relayer, the operator and the plugin" >&2
cargo build --locked --quiet -p relayer --bin relayer -p relayer-operator --bins
cargo test --locked --quiet --test chart_demo --no-run
exec cargo test --locked --quiet --test chart_demo -- --ignored --nocapture
