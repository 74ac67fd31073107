#!/usr/bin/env bash
# Builds the two images without a registry or a container daemon, with buildah:
#
#   target/images/relayer.oci.tar            ghcr.io/foresight/relayer:<version>
#   target/images/relayer-operator.oci.tar   ghcr.io/foresight/relayer-operator:<version>
#
# <version> is the crate version, which must also be the chart's appVersion (checked here). The
# final stages are the Containerfile's own: the binaries are compiled on this machine (static,
# musl) and handed to `buildah bud` as the BINARIES image, so its `build` stage, the one that
# needs a Rust image from a registry, is skipped. Installs buildah, musl-tools and the musl
# target when missing (as root, with apt and rustup). The image store is a temporary folder
# (vfs driver, chroot isolation), removed at the end; only the two archives stay.
#
#   scripts/images.sh            # then: kind load image-archive target/images/relayer.oci.tar
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
export CARGO_TERM_COLOR=never
musl=x86_64-unknown-linux-musl
out="$root/target/images"

need=()
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || need+=(ca-certificates)
# shellcheck source=packages.sh
source "$here/packages.sh"
install_missing images ${need[@]+"${need[@]}"}
add_musl_target

# One version for the crates, the chart's appVersion and the tags.
version="$(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
versions = {p["name"]: p["version"] for p in json.load(sys.stdin)["packages"]}
if versions["relayer"] != versions["relayer-operator"]:
    sys.exit(f"the crates disagree on the version: {versions}")
print(versions["relayer"])')"
app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' charts/relayer-operator/Chart.yaml)"
[[ "$app_version" == "$version" ]] || {
  echo "images: the chart's appVersion ($app_version) is not the crate version ($version)" >&2
  exit 1
}
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
[[ -z "$(git status --porcelain 2>/dev/null)" ]] || revision="$revision-dirty"
# File times and the creation time of the commit, so the same commit builds the same layers.
epoch="$(git log -1 --format=%ct 2>/dev/null || echo 0)"

echo "[images] compiling the static binaries ($musl, profile image)" >&2
start=$SECONDS
cargo build --profile image --locked --target "$musl" \
  --package relayer --bin relayer --package relayer-operator --bin relayer-operator
compiled=$SECONDS

work="$(mktemp -d)"
trap 'buildah "${store[@]}" rm --all >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
store=(--root "$work/storage" --runroot "$work/run" --storage-driver vfs)
b() { buildah "${store[@]}" "$@"; }

# The Containerfile's `/out` layout: the binaries and the CA bundle (Debian's ca-certificates).
binaries="localhost/foresight-binaries:$version"
c="$(b from scratch)"
b copy --quiet "$c" "target/$musl/image/relayer" "target/$musl/image/relayer-operator" /out/bin/
b copy --quiet "$c" /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt
b commit --quiet --rm "$c" "$binaries" >/dev/null

mkdir -p "$out"
for image in relayer relayer-operator; do
  tag="ghcr.io/foresight/$image:$version"
  echo "[images] $tag" >&2
  b bud --quiet --isolation chroot --pull-never --layers=false --timestamp "$epoch" \
    --file Containerfile --target "$image" \
    --build-arg "BINARIES=$binaries" --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    --tag "$tag" . >/dev/null
  rm -f "$work/$image.oci.tar"
  b push --quiet "$tag" "oci-archive:$work/$image.oci.tar:$tag"
  mv -f "$work/$image.oci.tar" "$out/$image.oci.tar"
  printf '[images] %s  %s  %s bytes\n' "$out/$image.oci.tar" "$tag" "$(stat -c %s "$out/$image.oci.tar")" >&2
done
echo "[images] compiled in $((compiled - start)) s, assembled in $((SECONDS - compiled)) s" >&2
