#!/usr/bin/env bash
# Builds the test control plane binaries (kube-apiserver, kube-controller-manager, kubectl,
# etcd, helm) from their pinned Go modules, once per machine, into a cache folder keyed by
# the versions and the recipe, and prints that bin folder as the last line of stdout.
#
#   tests/k8s/build.sh            # build if missing, print the bin dir
#   tests/k8s/build.sh --dir      # print the bin dir only
#   FORESIGHT_K8S_CACHE=/x tests/k8s/build.sh
#
# Go is used for these test binaries only. A cold build takes about 11 minutes on two cores;
# a warm call returns at once. Progress goes to stderr so callers can capture the path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Go needs a home for its caches; a bare CI environment may not set one.
HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME
cache_root="${FORESIGHT_K8S_CACHE:-$HOME/.cache/foresight-k8s}"

# Bump when the build flags below change, so the cache key changes with them.
recipe_rev=1

export PATH="/usr/local/go/bin:$PATH"
export GOTOOLCHAIN=local
# NB: no VCS stamping: the recipe sits inside this repository, whose state is irrelevant.
export GOFLAGS="-trimpath -buildvcs=false"
export CGO_ENABLED=0

say() { printf '[k8s-build] %s\n' "$*" >&2; }

# GO names the go command to use (default: go from PATH or /usr/local/go/bin).
go="${GO:-go}"
if ! command -v "$go" >/dev/null 2>&1; then
    say "Go ('$go') is not installed (looked in PATH and /usr/local/go/bin); it is needed once"
    say "to build the test binaries: install Go >= 1.26, then rerun tests/k8s/build.sh"
    exit 2
fi

# Versions come from the pinned go.mod files, so the key cannot drift from the recipe.
mod_version() { # module-dir module-path
    awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit } $1 == "require" && $2 == m { print $3; exit }' \
        "$here/$1/go.mod"
}
kube_version="$(mod_version kube k8s.io/kubernetes)"
etcd_version="$(mod_version etcd go.etcd.io/etcd/server/v3)"
helm_version="$(mod_version helm helm.sh/helm/v3)"
go_version="$("$go" env GOVERSION)"
for v in kube_version etcd_version helm_version; do
    if [[ -z "${!v}" ]]; then
        say "could not read $v from the go.mod files under $here"
        exit 2
    fi
done

# NB: the recipe hash covers go.mod, go.sum and the etcd main, so a bumped dependency gets a
# fresh folder instead of silently reusing stale binaries.
recipe_hash="$({ echo "$recipe_rev"; cat "$here"/kube/go.mod "$here"/kube/go.sum "$here"/etcd/go.mod "$here"/etcd/go.sum \
    "$here"/etcd/main.go "$here"/helm/go.mod "$here"/helm/go.sum; } | sha256sum | cut -c1-12)"
key="k8s-${kube_version}_etcd-${etcd_version}_helm-${helm_version}_${go_version}_${recipe_hash}"
dir="$cache_root/$key"
bin="$dir/bin"
bins=(kube-apiserver kube-controller-manager kubectl etcd helm)

# `--dir` only prints where the binaries go (for CI caches), building nothing.
if [[ "${1:-}" == "--dir" ]]; then
    printf '%s
' "$bin"
    exit 0
fi

complete() {
    [[ -f "$dir/.complete" ]] || return 1
    local b
    for b in "${bins[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

if complete; then
    printf '%s\n' "$bin"
    exit 0
fi

mkdir -p "$dir"
# One builder at a time per machine: a second caller waits, then finds the cache warm.
exec 9>"$dir/.lock"
if ! flock -n 9; then
    say "another build of $key is running; waiting for it"
    flock 9
fi
if complete; then
    printf '%s\n' "$bin"
    exit 0
fi

say "building $key into $bin (once per machine: about 11 minutes on 2 cores when the Go caches are cold)"
staging="$dir/bin.partial"
rm -rf "$staging"
mkdir -p "$staging"
start=$SECONDS

# Prints one line every 100 compiled packages so a long build shows it is alive.
progress() { # label
    awk -v label="$1" '{ n++; if (n % 100 == 0) { printf "[k8s-build] %s: %d packages compiled (last: %s)\n", label, n, $0; fflush() } }
        END { printf "[k8s-build] %s: %d packages compiled\n", label, n }' >&2
}

build() { # label module-dir ldflags packages...
    local label="$1" mod="$2" ldflags="$3"
    shift 3
    local t0=$SECONDS
    say "$label: downloading modules"
    (cd "$here/$mod" && "$go" mod download)
    say "$label: compiling $*"
    # -v lists packages as they are compiled (on stderr); keep them for the progress counter.
    if ! (cd "$here/$mod" && "$go" build -v -ldflags="-s -w $ldflags" -o "$staging/" "$@" 2>&1) | progress "$label"; then
        say "$label: go build failed; rerun with: cd $here/$mod && go build -v $*"
        exit 1
    fi
    say "$label: done in $((SECONDS - t0))s"
}

# Stamp the release version the way the Kubernetes release build does, so clients (helm's
# kubeVersion checks, kubectl's skew warning) see v1.37.x and not v0.0.0-master.
kube_minor="$(echo "$kube_version" | cut -d. -f2)"
kube_ld=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ld+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$kube_minor"
    kube_ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

build etcd etcd "" .
# NB: `go build .` names the etcd binary after the module path's last element: etcd.
build helm helm "-X helm.sh/helm/v3/internal/version.version=$helm_version" helm.sh/helm/v3/cmd/helm
build kubernetes kube "$kube_ld" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl

for b in "${bins[@]}"; do
    if [[ ! -x "$staging/$b" ]]; then
        say "expected $b in $staging after the build, but it is missing"
        exit 1
    fi
done
rm -rf "$bin"
mv "$staging" "$bin"
printf '%s\n' "kube=$kube_version etcd=$etcd_version helm=$helm_version go=$go_version" >"$dir/.complete"
say "all binaries built in $((SECONDS - start))s"
printf '%s\n' "$bin"
