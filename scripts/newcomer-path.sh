#!/usr/bin/env bash
# The README's newcomer path, end to end, so the README cannot drift from what works (CI runs
# this script):
#   1. install the CRDs and the chart;
#   2. a shared Redis and the Secrets the sample references;
#   3. apply the sample RelayerDeployment;
#   4. watch it become Available;
#   5. roll out a change and follow it with the plugin (kubectl relayer status --watch), and
#   6. another with plain kubectl;
#   7. roll back, with the plugin and with plain kubectl (kubectl annotate);
#   and check that no Secret value is in a ConfigMap, a ControllerRevision or the object.
#
#   scripts/newcomer-path.sh                      # on a local test control plane it starts
#   KUBECONFIG_TEST=~/.kube/kind KIND_CLUSTER=kind scripts/newcomer-path.sh   # on a kind cluster
#   KUBECONFIG_TEST=~/.kube/config scripts/newcomer-path.sh  # a cluster that pulls the images
#
# On the local control plane pods are simulated (there is no kubelet), so the chart's operator
# pods do not run a process: the script runs the operator image on this machine
# (scripts/image-run.sh) with the chart's arguments and the chart's ServiceAccount token
# instead, which is what the pod would do. Simulated pods have no process whose drain could be read, so the sample's scale-down
# waits are shortened there, and they connect to nothing, so no Redis is installed there: the
# Secret its chart would create is made by hand. On a real cluster nothing is substituted.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
export CARGO_TERM_COLOR=never

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "newcomer path FAILED: $*" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
  # NB: each background job leads its own process group (setsid), so cargo and what it started
  # (the test binary holding the control plane) stop together.
  for pid in "${pids[@]}"; do
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --locked --bin relayer-operator --bin kubectl-relayer
step "0. build the images (and load them into a kind cluster)"
scripts/images.sh
if [[ -n "${KIND_CLUSTER:-}" ]]; then
  kind load image-archive --name "$KIND_CLUSTER" target/images/relayer-operator.oci.tar
  kind load image-archive --name "$KIND_CLUSTER" target/images/relayer.oci.tar
fi
k8s_bin="$(tests/k8s/build.sh | tail -n 1)"
# kubectl and helm from the test binaries; kubectl finds the plugin `kubectl-relayer` on PATH.
export PATH="$root/target/debug:$k8s_bin:$PATH"
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"

local_cluster=0
if [[ -n "${KUBECONFIG_TEST:-}" ]]; then
  export KUBECONFIG="$KUBECONFIG_TEST"
else
  local_cluster=1
  step "0. start a local control plane (etcd, kube-apiserver, kube-controller-manager, pod simulator)"
  FORESIGHT_K8S_UP_SECONDS=1800 setsid cargo test --locked --test k8s_up -- --ignored --nocapture \
    >"$work/control-plane.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 600); do
    kc="$(sed -n 's/.*export KUBECONFIG=\(.*\)$/\1/p' "$work/control-plane.log" | head -n 1)"
    [[ -n "$kc" ]] && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/control-plane.log" >&2; fail "the control plane did not start"; }
    sleep 1
  done
  [[ -n "${kc:-}" ]] || fail "no kubeconfig from the control plane"
  export KUBECONFIG="$kc"
fi
kubectl version

step "1. install the CRDs and the chart"
kubectl apply --server-side -f crds/
# NB: right after the apply, the CRD may have no status.conditions yet, and kubectl wait then
# fails at once ("accessor error: <nil>") instead of waiting; ask again, a bounded number of
# times, and let the last answer decide.
for _ in 1 2 3 4 5 6 7 8 9 10; do
  kubectl wait --for=condition=Established --timeout=60s \
    crd/relayerdeployments.relayer.foresight.dev 2>/dev/null && break
  sleep 1
done
kubectl wait --for=condition=Established --timeout=60s crd/relayerdeployments.relayer.foresight.dev
helm_args=()
# NB: simulated pods get addresses nothing may contact; allow only a range no pod is in.
((local_cluster)) && helm_args+=(--set 'operator.podNetworks={10.244.0.0/16}')
helm install relayer-operator charts/relayer-operator \
  --namespace relayer-system --create-namespace --wait --timeout 3m "${helm_args[@]}"
kubectl -n relayer-system get deployment,serviceaccount,service -l app.kubernetes.io/instance=relayer-operator

if ((local_cluster)); then
  # What the chart's pod does in a cluster: the operator with the Deployment's arguments,
  # authenticated as the chart's ServiceAccount.
  token="$(kubectl -n relayer-system create token relayer-operator --duration=1h)"
  kubectl config view --raw --minify --flatten >"$work/operator.kubeconfig"
  kubectl --kubeconfig "$work/operator.kubeconfig" config set-credentials relayer-operator --token="$token" >/dev/null
  kubectl --kubeconfig "$work/operator.kubeconfig" config set-context --current --user=relayer-operator >/dev/null
  read -r -a args <<<"$(kubectl -n relayer-system get deployment relayer-operator \
    -o jsonpath='{.spec.template.spec.containers[0].args[*]}')"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  args=("${args[@]/#--metrics-addr=*/--metrics-addr=127.0.0.1:$port}")
  # The operator image itself (as root; scripts/image-run.sh mounts it read-only and runs it as
  # uid 65532), else the binary it holds.
  operator=(target/debug/relayer-operator) kubeconfig="$work/operator.kubeconfig" mounts=""
  if [[ $(id -u) -eq 0 ]]; then
    chmod 644 "$work/operator.kubeconfig"
    operator=(scripts/image-run.sh target/images/relayer-operator.oci.tar)
    kubeconfig=/etc/relayer-operator/kubeconfig mounts="$work/operator.kubeconfig:$kubeconfig"
  fi
  KUBECONFIG="$kubeconfig" IMAGE_RUN_MOUNTS="$mounts" POD_NAME=relayer-operator-local \
    POD_NAMESPACE=relayer-system RUST_LOG=info LOG_JSON=false \
    setsid "${operator[@]}" "${args[@]}" >"$work/operator.log" 2>&1 &
  pids+=($!)
  echo "operator (${operator[*]}) running as system:serviceaccount:relayer-system:relayer-operator (log: $work/operator.log)"
fi

step "2. a shared Redis and the Secrets the sample references"
random_hex() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
if ((local_cluster)); then
  kubectl create secret generic redis --from-literal=redis-password="$(random_hex)"
else
  helm install redis oci://registry-1.docker.io/bitnamicharts/redis --set architecture=standalone \
    --wait --timeout 5m
fi
admin_token="$(random_hex)"
kubectl create secret generic market-relayer-admin --from-literal=token="$admin_token"

step "3. apply the sample RelayerDeployment"
kubectl apply -f crds/samples/relayerdeployment.yaml
if ((local_cluster)); then
  kubectl patch rd market-relayer --type merge \
    -p '{"spec":{"strategy":{"blueGreen":{"scaleDownDelaySeconds":1,"maxScaleDownWaitSeconds":2}}}}'
fi

step "4. watch it become Available"
kubectl wait --for=condition=Available --timeout=180s rd/market-relayer
kubectl get rd market-relayer
kubectl relayer status market-relayer

# Waits with plain kubectl until the operator has seen the latest spec (and any rollback
# annotation) and the cutover is over.
wait_stable() {
  local deadline=$((SECONDS + 300)) gen observed step pending
  while ((SECONDS < deadline)); do
    read -r gen observed step pending < <(kubectl get rd market-relayer -o jsonpath='{.metadata.generation} {.status.observedGeneration} {.status.rollout.step} {.metadata.annotations.relayer\.foresight\.dev/rollback-to}{"\n"}')
    # (a rollback annotation still there has not been taken by the operator yet)
    [[ -z "$pending" && "$gen" == "$observed" && "$step" == Stable ]] && return 0
    [[ "$gen" == "$observed" && "$step" == Aborted ]] && fail "the cutover was aborted"
    sleep 1
  done
  fail "no Stable within 300 s"
}
limit() { kubectl get rd market-relayer -o jsonpath='{.spec.config.limits.maxOrderAmount}'; }
expect_limit() { [[ "$(limit)" == "$1" ]] || fail "maxOrderAmount is $(limit), expected $1"; }
active_revision() { kubectl get rd market-relayer -o jsonpath='{.status.rollout.activeRevision}'; }
image="$(kubectl get rd market-relayer -o jsonpath='{.spec.image}')"

step "5. roll out a change and follow the cutover with the plugin"
first_revision="$(active_revision)"
kubectl patch rd market-relayer --type merge -p '{"spec":{"config":{"limits":{"maxOrderAmount":5000}}}}'
kubectl relayer status market-relayer --watch --timeout 5m
expect_limit 5000
[[ "$(active_revision)" != "$first_revision" ]] || fail "no new revision became active"

step "6. another one, with plain kubectl"
kubectl patch rd market-relayer --type merge -p '{"spec":{"config":{"limits":{"maxOrderAmount":8000}}}}'
wait_stable
kubectl get rd market-relayer
expect_limit 8000

step "7. roll back, with the plugin and with plain kubectl"
kubectl relayer history market-relayer
kubectl relayer rollback market-relayer
kubectl relayer status market-relayer --watch --timeout 5m
expect_limit 5000
kubectl annotate rd market-relayer relayer.foresight.dev/rollback-to=previous
wait_stable
expect_limit 8000
[[ "$(kubectl get rd market-relayer -o jsonpath='{.spec.image}')" == "$image" ]] || fail "the image changed"
kubectl relayer history market-relayer
kubectl get rd market-relayer -o wide

redis_password="$(kubectl get secret redis -o jsonpath='{.data.redis-password}' | base64 -d)"
for secret in "$admin_token" "$redis_password"; do
  if kubectl get configmaps,controllerrevisions,relayerdeployments,events -o yaml | grep -qF -- "$secret"; then
    fail "a Secret value is in a ConfigMap, ControllerRevision, RelayerDeployment or Event"
  fi
done
echo "no Secret value in any ConfigMap, ControllerRevision, RelayerDeployment or Event"

echo
echo "newcomer path: ok"
