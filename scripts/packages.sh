# Sourced, not run: `install_missing LABEL PACKAGE...` installs the Debian packages given (with
# apt, through sudo unless root) in one apt run, printing "[LABEL] installing ..." first; callers
# pass only the packages whose command or file is missing. `add_musl_target` adds the static
# Rust target when rustup lacks it. Used by setup.sh, images.sh and krew.sh.
install_missing() {
  local label="$1" sudo=""
  shift
  (($#)) || return 0
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "[$label] installing $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

add_musl_target() {
  rustup target list --installed | grep -qx x86_64-unknown-linux-musl ||
    rustup target add x86_64-unknown-linux-musl
}
