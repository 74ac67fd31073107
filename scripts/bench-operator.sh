#!/usr/bin/env bash
# Benchmark of the operator with N RelayerDeployments on a real control plane: its resident
# memory (VmRSS, the peak VmHWM, and VmRSS's two parts: RssAnon, the heap and stacks, and
# RssFile, the pages of the binary the kernel mapped; from /proc, medians of 5 samples taken
# 1 s apart after the operator has settled for SETTLE seconds), the time from the start of the
# creation of the N objects until every one is reconciled (status.observedGeneration ==
# metadata.generation), the reconcile duration from its own histogram
# (relayer_operator_reconcile_duration_seconds: mean, and p50/p99 interpolated in the buckets as
# Prometheus' histogram_quantile does), the reconciles run, the requests it sent to the API
# server and its CPU time (user + system).
#
# The control plane is etcd, kube-apiserver and kube-controller-manager on free loopback ports,
# started here the way tests/support/control_plane.rs starts them, from the binaries
# tests/k8s/build.sh builds (run it once first; it prints where they are). There is no kubelet
# and no scheduler: the controller-manager makes the ReplicaSets and pods of the operator's
# Deployments, the EndpointSlices of its Services and the HPAs' status, but the pods stay Pending
# and never run a process, so the RelayerDeployments stay in their first rollout (Progressing,
# no pod ready) and no gate or probe contacts a pod. The operator's caches hold every child kind
# all the same, the pods included; what is measured is the operator with N objects to watch,
# cache and keep reconciled, not cutovers.
#
# The objects are the sample (crds/samples/relayerdeployment.yaml, 2 replicas, HPA 2..10, an
# Ingress host each, the Redis password and admin token Secrets it names), created with one
# client-side `kubectl apply`, so each carries kubectl's last-applied-configuration annotation
# as objects applied by hand do. The operator is the release binary, run as a single instance
# (--leader-election=false) watching its variant's own namespace, logging at info.
#
# Usage: [BASELINE=<git rev>] [ROUNDS=<n, default 1>] [SETTLE=<seconds, default 10>]
#        [HOLD=<seconds>] scripts/bench-operator.sh [N, default 200]
# With BASELINE, that revision's operator (built once per revision from `git archive` into
# target/bench-baseline/relayer-operator-<rev>; the first build takes as long as a release
# build) runs the same N in the same run, on the same control plane, each variant in a
# namespace of its own; with ROUNDS the variants alternate (the order reversed every other
# round) and the table shows each variant's medians, then the ratios current/baseline. Nothing
# in git is changed.
# HOLD keeps each operator and the control plane running that long after its measurement (the
# kubeconfig, pid and metrics address are printed), to look inside.
# Everything listens on 127.0.0.1 only; every process it starts is stopped on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
n="${1:-200}"
rounds="${ROUNDS:-1}"
settle="${SETTLE:-10}"
[[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "N must be a positive integer, not $n" >&2; exit 2; }
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer" >&2; exit 2; }
for tool in openssl curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
k8s_bin="$(tests/k8s/build.sh --dir | tail -n 1)"
for b in etcd kube-apiserver kube-controller-manager kubectl; do
  [[ -x "$k8s_bin/$b" ]] || { echo "no $k8s_bin/$b: run tests/k8s/build.sh first" >&2; exit 1; }
done

work="$(mktemp -d)"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # NB: bounded: what has not stopped 10 s after SIGTERM gets SIGKILL.
  local deadline=$((SECONDS + 10))
  for p in "${pids[@]}"; do
    while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -9 "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "[bench-operator ${SECONDS}s] $*" >&2; }
fail() { echo "bench-operator FAILED: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
# Polls `$2...` (a command) every 0.2 s until it succeeds, for at most $1 seconds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

# --- the operators --------------------------------------------------------------------------
variants=(current)
cargo build --release --locked --bin relayer-operator >&2
cp target/release/relayer-operator "$work/operator-current"
if [[ -n "${BASELINE:-}" ]]; then
  rev="$(git rev-parse --verify "${BASELINE}^{commit}")" || fail "no revision $BASELINE"
  baseline_bin="target/bench-baseline/relayer-operator-$rev"
  if [[ ! -x "$baseline_bin" ]]; then
    say "building the operator of $rev into $baseline_bin"
    mkdir -p "$work/baseline-src"
    # NB: -m: the files get the time of extraction, not the commit's, so cargo rebuilds the
    # workspace's crates instead of taking another revision's artifacts for fresh.
    git archive "$rev" | tar -x -m -C "$work/baseline-src"
    (cd "$work/baseline-src" && CARGO_TARGET_DIR="$root/target/bench-baseline" \
      cargo build --release --locked --bin relayer-operator >&2)
    cp target/bench-baseline/release/relayer-operator "$baseline_bin.tmp"
    mv "$baseline_bin.tmp" "$baseline_bin"
    rm -rf "$work/baseline-src"
  fi
  cp "$baseline_bin" "$work/operator-baseline"
  variants=(baseline current)
fi

say "certificates"
# --- certificates ---------------------------------------------------------------------------
pki="$work/pki"
mkdir -p "$pki"
ossl() { openssl "$@" 2>>"$work/openssl.log" >/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" -subj "/CN=bench-operator-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
# issue NAME SUBJECT EXTENSIONS
issue() {
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$pki/$1.key" \
    -out "$pki/$1.csr" -subj "$2"
  printf '%s\n' "$3" >"$pki/$1.ext"
  ossl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -out "$pki/$1.crt" -extfile "$pki/$1.ext"
}
issue apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth
keyUsage=critical,digitalSignature,keyEncipherment"
issue admin "/O=system:masters/CN=bench-admin" "extendedKeyUsage=clientAuth
keyUsage=critical,digitalSignature"
ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key"
ossl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

# --- control plane --------------------------------------------------------------------------
say "starting etcd, kube-apiserver, kube-controller-manager"
mkdir -p "$work/logs"
etcd_port="$(free_port)" etcd_peer="$(free_port)" api_port="$(free_port)" kcm_port="$(free_port)"
"$k8s_bin/etcd" --name=default --data-dir="$work/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
  --initial-cluster="default=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync=true --log-level=warn \
  >"$work/logs/etcd.log" 2>&1 &
pids+=($!)
wait_for 30 curl -fsS "http://127.0.0.1:$etcd_port/health" || { tail -20 "$work/logs/etcd.log" >&2; fail "etcd did not start"; }

"$k8s_bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 --secure-port="$api_port" --cert-dir="$work/apiserver-certs" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" --authorization-mode=Node,RBAC --endpoint-reconciler-type=none \
  --service-cluster-ip-range=10.96.0.0/16 \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --kubelet-preferred-address-types=InternalIP --allow-privileged=true --profiling=false --v=1 \
  >"$work/logs/kube-apiserver.log" 2>&1 &
pids+=($!)
kubeconfig="$work/kubeconfig"
cat >"$kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: bench
  cluster: { server: "https://127.0.0.1:$api_port", certificate-authority: "$pki/ca.crt" }
users:
- name: admin
  user: { client-certificate: "$pki/admin.crt", client-key: "$pki/admin.key" }
contexts:
- name: bench
  context: { cluster: bench, user: admin }
current-context: bench
EOF
readyz() {
  [[ "$(curl -sS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    "https://127.0.0.1:$api_port/readyz")" == ok ]]
}
wait_for 120 readyz || { tail -20 "$work/logs/kube-apiserver.log" >&2; fail "kube-apiserver not ready"; }
kubectl() { "$k8s_bin/kubectl" --kubeconfig "$kubeconfig" --cache-dir "$work/kubectl-cache" "$@"; }

"$k8s_bin/kube-controller-manager" --kubeconfig="$kubeconfig" --authentication-kubeconfig="$kubeconfig" \
  --authorization-kubeconfig="$kubeconfig" --bind-address=127.0.0.1 --secure-port="$kcm_port" \
  --cert-dir="$work/kcm-certs" --service-account-private-key-file="$pki/sa.key" \
  --root-ca-file="$pki/ca.crt" --cluster-signing-cert-file="$pki/ca.crt" \
  --cluster-signing-key-file="$pki/ca.key" \
  --controllers='*,-node-ipam-controller,-node-lifecycle-controller' --leader-elect=false \
  --use-service-account-credentials=false --profiling=false --v=1 \
  >"$work/logs/kube-controller-manager.log" 2>&1 &
pids+=($!)
wait_for 90 kubectl -n default get serviceaccount default ||
  { tail -20 "$work/logs/kube-controller-manager.log" >&2; fail "kube-controller-manager made no default ServiceAccount"; }

say "control plane ready; applying the CRD"
kubectl apply --server-side -f crds/relayerdeployments.yaml >/dev/null
# NB: right after the apply the CRD may have no conditions yet, and kubectl wait fails at once.
wait_for 60 kubectl wait --for=condition=Established --timeout=5s crd/relayerdeployments.relayer.foresight.dev ||
  fail "the CRD was not established"

# --- one variant ----------------------------------------------------------------------------
# The N objects of namespace $1, as one List.
objects() {
  python3 - "$1" "$n" <<'PY'
import json, sys
ns, n = sys.argv[1], int(sys.argv[2])
items = []
for i in range(n):
    name = f"relayer-{i:04d}"
    items.append({
        "apiVersion": "relayer.foresight.dev/v1alpha1",
        "kind": "RelayerDeployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "image": "ghcr.io/foresight/relayer:0.1.0",
            "replicas": 2,
            "pod": {"resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                  "limits": {"memory": "512Mi"}}},
            "store": {"redis": {"url": "redis://redis-master:6379/0",
                                "passwordSecretRef": {"name": "redis", "key": "redis-password"}}},
            "secrets": {"adminToken": {"name": "market-relayer-admin", "key": "token"}},
            "config": {"listen": "0.0.0.0:3000", "limits": {"requestTimeoutMs": 10000},
                       "shutdown": {"readinessDelayMs": 2000, "drainTimeoutMs": 20000}},
            "service": {"port": 80},
            "ingress": {"host": f"{name}.example.com", "previewHost": f"preview.{name}.example.com"},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 10,
                            "targetCpuUtilizationPercentage": 70,
                            "targetMemoryUtilizationPercentage": 80,
                            "targetRequestsPerSecond": 1000},
            "strategy": {"blueGreen": {"autoPromote": True, "scaleDownDelaySeconds": 30,
                                       "progressDeadlineSeconds": 600}},
            "revisionHistoryLimit": 10,
        },
    })
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
}
reconciled() {
  kubectl -n "$1" get relayerdeployments.relayer.foresight.dev \
    -o jsonpath='{range .items[*]}{.metadata.generation} {.status.observedGeneration}{"\n"}{end}' |
    awk '$1 != "" && $1 == $2' | wc -l
}
status_field() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
cpu_seconds() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

# run_variant VARIANT ROUND: appends one result line to $work/results.
run_variant() {
  local variant="$1" round="$2" ns="bench-$1-$2" mport pid t0 t1 rss hwm anon file
  kubectl create namespace "$ns" >/dev/null
  kubectl -n "$ns" create secret generic redis --from-literal=redis-password=bench-redis-password >/dev/null
  kubectl -n "$ns" create secret generic market-relayer-admin --from-literal=token=bench-admin-token >/dev/null
  objects "$ns" >"$work/objects-$ns.json"
  mport="$(free_port)"
  KUBECONFIG="$kubeconfig" RUST_LOG=info LOG_JSON=false "$work/operator-$variant" \
    --leader-election=false --namespace="$ns" --metrics-addr="127.0.0.1:$mport" \
    >"$work/logs/operator-$ns.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  wait_for 60 curl -fsS "http://127.0.0.1:$mport/ready" || { tail -20 "$work/logs/operator-$ns.log" >&2; fail "operator $variant not ready"; }

  say "round $round $variant: operator ready; creating $n RelayerDeployments in $ns"
  t0="$(now_ms)"
  kubectl apply -f "$work/objects-$ns.json" >/dev/null
  local deadline=$((SECONDS + 900))
  until [[ "$(reconciled "$ns")" -ge "$n" ]]; do
    ((SECONDS < deadline)) || fail "$variant: only $(reconciled "$ns") of $n reconciled within 900 s"
    kill -0 "$pid" 2>/dev/null || { tail -20 "$work/logs/operator-$ns.log" >&2; fail "operator $variant exited"; }
    sleep 0.2
  done
  t1="$(now_ms)"
  say "round $round $variant: all reconciled; settling ${settle} s"

  sleep "$settle"
  for _ in 1 2 3 4 5; do
    status_field "$pid" VmRSS >>"$work/rss-$ns"
    status_field "$pid" VmHWM >>"$work/hwm-$ns"
    status_field "$pid" RssAnon >>"$work/anon-$ns"
    status_field "$pid" RssFile >>"$work/file-$ns"
    sleep 1
  done
  rss="$(median <"$work/rss-$ns")"
  hwm="$(median <"$work/hwm-$ns")"
  anon="$(median <"$work/anon-$ns")"
  file="$(median <"$work/file-$ns")"
  curl -fsS "http://127.0.0.1:$mport/metrics" >"$work/metrics-$ns.txt"
  local cpu
  cpu="$(cpu_seconds "$pid")"
  if [[ -n "${HOLD:-}" ]]; then
    say "holding for $HOLD s: KUBECONFIG=$kubeconfig, operator pid $pid, metrics 127.0.0.1:$mport"
    sleep "$HOLD"
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  python3 - "$work/metrics-$ns.txt" "$variant" "$round" "$rss" "$hwm" "$anon" "$file" "$((t1 - t0))" "$cpu" \
    >>"$work/results" <<'PY'
import re, sys
path, variant, rnd, rss, hwm, anon, file, took_ms, cpu = sys.argv[1:]
buckets, total, count, reconciles, requests = [], 0.0, 0, 0, 0
for line in open(path):
    if line.startswith("relayer_operator_reconcile_duration_seconds_bucket"):
        le = re.search(r'le="([^"]+)"', line).group(1)
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.split()[-1])))
    elif line.startswith("relayer_operator_reconcile_duration_seconds_sum"):
        total = float(line.split()[-1])
    elif line.startswith("relayer_operator_reconcile_duration_seconds_count"):
        count = int(float(line.split()[-1]))
    elif line.startswith("relayer_operator_reconcile_total"):
        reconciles = int(float(line.split()[-1]))
    elif line.startswith("relayer_operator_api_requests_total"):
        requests += int(float(line.split()[-1]))
def quantile(q):
    # Prometheus' histogram_quantile: linear inside the bucket holding the rank.
    rank, lower, below = q * count, 0.0, 0.0
    for upper, cum in buckets:
        if cum >= rank and cum > below:
            if upper == float("inf"):
                return lower
            return lower + (upper - lower) * (rank - below) / (cum - below)
        lower, below = upper, cum
    return float("nan")
mean = total / count if count else float("nan")
print(variant, rnd, int(rss), int(hwm), int(anon), int(file), int(took_ms), f"{mean * 1e3:.2f}",
      f"{quantile(0.5) * 1e3:.2f}", f"{quantile(0.99) * 1e3:.2f}", reconciles, requests, cpu)
PY
  echo "round $round $variant: $(tail -n 1 "$work/results")" >&2
}

for round in $(seq 1 "$rounds"); do
  order=("${variants[@]}")
  if ((round % 2 == 0)) && ((${#variants[@]} == 2)); then order=("${variants[1]}" "${variants[0]}"); fi
  for variant in "${order[@]}"; do run_variant "$variant" "$round"; done
done

echo
echo "$n RelayerDeployments, $(nproc) CPUs, release operator, settled ${settle} s; medians of $rounds round(s)"
python3 - "$work/results" "${BASELINE:+baseline}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
with_baseline = sys.argv[2] == "baseline"
cols = ["VmRSS MiB", "VmHWM MiB", "RssAnon MiB", "RssFile MiB", "all reconciled s",
        "reconcile mean ms", "p50 ms", "p99 ms", "reconciles", "API requests", "CPU s"]
med = {}
for variant in ("baseline", "current"):
    mine = [r for r in rows if r[0] == variant]
    if not mine:
        continue
    vals = [statistics.median(float(r[i]) for r in mine) for i in range(2, 13)]
    for i in range(4):
        vals[i] /= 1024
    vals[4] /= 1000
    med[variant] = vals
print("| variant | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
for variant, vals in med.items():
    print(f"| {variant} | " + " | ".join(
        f"{v:.1f}" if i <= 4 else (f"{v:.2f}" if i in (5, 6, 7, 10) else f"{v:.0f}")
        for i, v in enumerate(vals)) + " |")
if with_baseline and len(med) == 2:
    print("| current/baseline | " + " | ".join(
        f"{c / b:.3f}" if b else "-" for b, c in zip(med["baseline"], med["current"])) + " |")
PY
