#!/usr/bin/env bash
# Runs an image from its OCI archive the way a container runtime would, without one: unpacks
# its layers (once per image, under target/images/rootfs/), then, in a mount namespace of its
# own, mounts that root filesystem read-only with /proc, a minimal /dev and the binds asked
# for, and runs the image's entrypoint in it (chroot) as the image's user with the image's
# environment. The network is the caller's, so loopback ports are shared. Needs root.
#
#   scripts/image-run.sh ARCHIVE [ARG...]         # ARGs replace the image's Cmd
#   IMAGE_RUN_MOUNTS="/host/dir:/in/image ..." scripts/image-run.sh ARCHIVE   # read-only binds
#
# The process keeps this script's pid (every step execs), so killing it kills the binary.
# Variables of the caller's environment win over the image's, as `-e` does with docker.
set -euo pipefail
archive="${1:?usage: image-run.sh ARCHIVE [ARG...]}"
shift
[[ -f "$archive" ]] || { echo "image-run: no archive $archive (run scripts/images.sh)" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "image-run: needs root (mount namespace, chroot)" >&2; exit 2; }

# What the image says: its manifest digest, layers, user, entrypoint, command and environment,
# as shell assignments.
eval "$(python3 - "$archive" "$@" <<'PY'
import json, os, shlex, sys, tarfile
archive, args = sys.argv[1], sys.argv[2:]
with tarfile.open(archive) as tar:
    def blob(digest):
        algorithm, hex_ = digest.split(":", 1)
        return tar.extractfile(f"blobs/{algorithm}/{hex_}").read()
    index = json.loads(tar.extractfile("index.json").read())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads(blob(manifest_digest))
    config = json.loads(blob(manifest["config"]["digest"])).get("config", {})
layers = [(l["digest"], l["mediaType"]) for l in manifest["layers"]]
command = (config.get("Entrypoint") or []) + (args or config.get("Cmd") or [])
if not command:
    sys.exit("image-run: the image has no entrypoint and no command was given")
env = [e for e in config.get("Env") or [] if e.split("=", 1)[0] not in os.environ]
q = shlex.quote
print(f"digest={q(manifest_digest.split(':', 1)[1][:16])}")
print("layers=(" + " ".join(q(f"{d.replace(':', '/')}|{m}") for d, m in layers) + ")")
print(f"user={q(config.get('User') or '0:0')}")
print("command=(" + " ".join(q(c) for c in command) + ")")
print("image_env=(" + " ".join(q(e) for e in env) + ")")
PY
)"

name="$(basename "$archive" .oci.tar)"
rootfs="$(cd "$(dirname "$archive")" && pwd)/rootfs/$name-$digest"
if [[ ! -d "$rootfs" ]]; then
  mkdir -p "$(dirname "$rootfs")"
  unpack="$(mktemp -d "$(dirname "$rootfs")/.unpack.XXXXXX")"
  blobs="$unpack/blobs" && mkdir -p "$blobs" "$unpack/fs"
  tar -xf "$archive" -C "$blobs" blobs
  for layer in "${layers[@]}"; do
    file="$blobs/blobs/${layer%%|*}"
    case "${layer#*|}" in
      *+gzip) tar -xzf "$file" -C "$unpack/fs" ;;
      *+zstd) zstd -dc "$file" | tar -x -C "$unpack/fs" ;;
      *) tar -xf "$file" -C "$unpack/fs" ;;
    esac
  done
  # The mount points a runtime creates in a container's root filesystem.
  mkdir -p "$unpack/fs/proc" "$unpack/fs/dev"
  mv "$unpack/fs" "$rootfs"
  rm -rf "$unpack"
fi

binds=()
for bind in ${IMAGE_RUN_MOUNTS:-}; do
  source="${bind%%:*}" target="${bind#*:}"
  [[ -e "$source" ]] || { echo "image-run: no $source to mount at $target" >&2; exit 2; }
  if [[ -d "$source" ]]; then mkdir -p "$rootfs$target"; else mkdir -p "$(dirname "$rootfs$target")" && touch "$rootfs$target"; fi
  binds+=("$source" "$rootfs$target")
done

export IMAGE_RUN_ROOTFS="$rootfs" IMAGE_RUN_USER="$user"
exec unshare --mount --propagation private -- bash -euo pipefail -c '
  r="$IMAGE_RUN_ROOTFS" user="$IMAGE_RUN_USER"
  unset IMAGE_RUN_ROOTFS IMAGE_RUN_USER IMAGE_RUN_MOUNTS
  mount --bind "$r" "$r" && mount -o remount,bind,ro "$r"
  mount -t proc -o nosuid,nodev,noexec proc "$r/proc"
  mount -t tmpfs -o nosuid,noexec,mode=755,size=64k tmpfs "$r/dev"
  for d in null zero random urandom; do
    touch "$r/dev/$d" && mount --bind "/dev/$d" "$r/dev/$d"
  done
  n="$1"; shift
  while ((n > 0)); do
    mount --bind "$1" "$2" && mount -o remount,bind,ro "$2"
    shift 2; n=$((n - 2))
  done
  n="$1"; shift
  exec env "${@:1:n}" chroot --userspec="$user" "$r" "${@:n+1}"
' bash "${#binds[@]}" "${binds[@]}" "${#image_env[@]}" "${image_env[@]}" "${command[@]}"
