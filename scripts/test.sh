#!/usr/bin/env bash
# Runs every test: installs what is missing (scripts/setup.sh), builds the workspace, checks the
# README walk-through against a real relayer, then runs all unit, property and integration
# tests (the relayer against real Redis servers, the operator against a real Kubernetes API
# server that the tests start on loopback).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$here")"

# shellcheck source=setup.sh
source "$here/setup.sh"

cargo build --workspace --all-targets --locked
"$here/check-quickstart.sh" target/debug/relayer
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked "$@" 2>&1 | tee "$log"
"$here/schemathesis.sh" target/debug/relayer
# One closing line over every test binary (cargo prints one summary per binary, doc tests last).
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
