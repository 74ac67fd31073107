#!/usr/bin/env bash
# Packs the `kubectl relayer` plugin for krew: builds kubectl-relayer static (musl, in the
# `image` profile the images use, so one build serves both), packs it with LICENSE into a deterministic archive and fills the krew manifest template
# (krew/relayer.yaml.tmpl) with the crate version and the archive's sha256:
#
#   target/krew/kubectl-relayer_v<version>_linux_amd64.tar.gz   kubectl-relayer + LICENSE
#   target/krew/relayer.yaml                                      the manifest
#
# Prints those two paths (archive first) on stdout; progress goes to stderr. The same commit
# packs the same archive (sorted names, mtime of the last commit, owner 0, gzip -n). Installs
# musl-tools and the musl target when missing (as root, with apt and rustup).
#
#   scripts/krew.sh
#   kubectl krew install --manifest=target/krew/relayer.yaml \
#     --archive=target/krew/kubectl-relayer_v0.1.0_linux_amd64.tar.gz
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
export CARGO_TERM_COLOR=never
musl=x86_64-unknown-linux-musl

say() { printf '[krew] %s\n' "$*" >&2; }

need=()
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
command -v python3 >/dev/null 2>&1 || need+=(python3)
# shellcheck source=packages.sh
source "$here/packages.sh"
install_missing krew ${need[@]+"${need[@]}"}
add_musl_target

# The crate version and where cargo puts its output (CARGO_TARGET_DIR is honoured).
read -r version target_dir < <(cargo metadata --no-deps --format-version 1 --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
versions = {p["name"]: p["version"] for p in meta["packages"]}
print(versions["relayer-operator"], meta["target_directory"])')
[[ -n "$version" && -n "$target_dir" ]] || { say "could not read the version from cargo metadata"; exit 1; }
[[ -f LICENSE ]] || { say "LICENSE is missing at $root"; exit 1; }

say "compiling kubectl-relayer $version ($musl, profile image)"
cargo build --profile image --locked --target "$musl" --bin kubectl-relayer

out="$target_dir/krew"
archive="$out/kubectl-relayer_v${version}_linux_amd64.tar.gz"
manifest="$out/relayer.yaml"
mkdir -p "$out"
stage="$(mktemp -d "$out/.stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT

# Fixed modes and times, so the archive's bytes depend on the two files' contents only.
install -m 0755 "$target_dir/$musl/image/kubectl-relayer" "$stage/kubectl-relayer"
install -m 0644 LICENSE "$stage/LICENSE"
epoch="$(git log -1 --format=%ct 2>/dev/null || echo 0)"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --format=gnu \
  -C "$stage" -cf - LICENSE kubectl-relayer | gzip -n -9 >"$stage/archive.tar.gz"
sha256="$(sha256sum "$stage/archive.tar.gz" | cut -d' ' -f1)"

# The template's leading comment is about the template; the manifest gets its own.
{
  printf '# krew plugin manifest for kubectl relayer v%s, written by scripts/krew.sh from krew/relayer.yaml.tmpl\n' "$version"
  sed -e '1,/^[^#]/{/^#/d}' -e "s/@VERSION@/$version/g" -e "s/@SHA256@/$sha256/g" krew/relayer.yaml.tmpl
} >"$stage/relayer.yaml"
if grep -n '@[A-Z0-9_]*@' "$stage/relayer.yaml" >&2; then
  say "placeholders left in the manifest (above)"
  exit 1
fi
mv -f "$stage/archive.tar.gz" "$archive"
mv -f "$stage/relayer.yaml" "$manifest"
say "sha256 $sha256, $(stat -c %s "$archive") bytes"
printf '%s\n%s\n' "$archive" "$manifest"
