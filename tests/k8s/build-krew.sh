#!/usr/bin/env bash
# Builds krew (the kubectl plugin manager, sigs.k8s.io/krew/cmd/krew) from its pinned Go module
# in tests/k8s/krew/, once per machine, into its own cache folder keyed by the version, the Go
# version and a hash of the recipe, and prints that bin folder as the last line of stdout.
# tests/krew.rs uses it to install the plugin's krew manifest the way a user would.
#
#   tests/k8s/build-krew.sh            # build if missing, print the bin dir
#   tests/k8s/build-krew.sh --dir      # print the bin dir only
#   FORESIGHT_K8S_CACHE=/x tests/k8s/build-krew.sh
#
# Separate from build.sh on purpose: its key covers the krew module only, so a krew bump never
# rebuilds the Kubernetes binaries and theirs never rebuilds krew. Progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/krew"
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

say() { printf '[krew-build] %s\n' "$*" >&2; }

go="${GO:-go}"
if ! command -v "$go" >/dev/null 2>&1; then
    say "Go ('$go') is not installed (looked in PATH and /usr/local/go/bin); it is needed once"
    say "to build krew for the tests: install Go >= 1.26, then rerun tests/k8s/build-krew.sh"
    exit 2
fi

# The version comes from the pinned go.mod, so the key cannot drift from the recipe.
krew_version="$(awk '$1 == "sigs.k8s.io/krew" && $2 ~ /^v/ { print $2; exit }' "$mod/go.mod")"
if [[ -z "$krew_version" ]]; then
    say "could not read the sigs.k8s.io/krew version from $mod/go.mod"
    exit 2
fi
go_version="$("$go" env GOVERSION)"
recipe_hash="$({ echo "$recipe_rev"; cat "$mod/go.mod" "$mod/go.sum"; } | sha256sum | cut -c1-12)"
key="krew-${krew_version}_${go_version}_${recipe_hash}"
dir="$cache_root/$key"
bin="$dir/bin"

if [[ "${1:-}" == "--dir" ]]; then
    printf '%s\n' "$bin"
    exit 0
fi

complete() { [[ -f "$dir/.complete" && -x "$bin/krew" ]]; }

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

say "building $key into $bin (once per machine)"
start=$SECONDS
staging="$dir/bin.partial"
rm -rf "$staging"
mkdir -p "$staging"
say "downloading modules"
(cd "$mod" && "$go" mod download)
say "compiling sigs.k8s.io/krew/cmd/krew"
# NB: the version is not stamped (-X .../internal/version.gitTag): an unstamped krew counts as
# a development build and never makes its background upgrade check against GitHub.
if ! (cd "$mod" && "$go" build -ldflags="-s -w" -o "$staging/krew" sigs.k8s.io/krew/cmd/krew); then
    say "go build failed; rerun with: cd $mod && go build -v sigs.k8s.io/krew/cmd/krew"
    exit 1
fi
rm -rf "$bin"
mv "$staging" "$bin"
printf '%s\n' "krew=$krew_version go=$go_version" >"$dir/.complete"
say "built krew in $((SECONDS - start))s"
printf '%s\n' "$bin"
