#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent, quick when warm):
#   - redis-server, for the Redis store and rate-limiter tests (the tests start their own
#     servers on free loopback ports; no system service is used);
#   - curl and python3, used by the scripts;
#   - the Kubernetes test binaries (kube-apiserver, kube-controller-manager, kubectl, etcd,
#     helm), built once from their Go modules into a cache (tests/k8s/build.sh).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# NB: Debian ships `venv` without `ensurepip` unless python3-venv is installed
# (scripts/schemathesis.sh makes a virtualenv).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# shellcheck source=packages.sh
source "$here/packages.sh"
install_missing setup ${need[@]+"${need[@]}"}
# Don't let a packaged redis service hold port 6379 or data we don't own; tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  systemctl stop redis-server 2>/dev/null || true
fi

if [[ -x "$root/tests/k8s/build.sh" ]]; then
  FORESIGHT_K8S_BIN="$("$root/tests/k8s/build.sh" | tail -n 1)"
  export FORESIGHT_K8S_BIN
  echo "[setup] Kubernetes test binaries in $FORESIGHT_K8S_BIN" >&2
fi
