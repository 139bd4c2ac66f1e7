#!/usr/bin/env bash
# Install what pagecast needs on a Debian bookworm machine.
#   scripts/setup.sh --recording   only what a recording needs (the demo command)
#   scripts/setup.sh               that plus the test suite's servers and tools
# Idempotent: when everything is already present it installs nothing and
# finishes in well under a second.
set -euo pipefail

MODE=all
case "${1:-}" in
  "") ;;
  --recording) MODE=recording ;;
  *) printf 'setup: ERROR: unknown argument %s (expected --recording or nothing)\n' "$1" >&2; exit 2 ;;
esac

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

# ---------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------
# What one recording needs.
RECORDING_APT_PACKAGES=(
  xvfb              # Xvfb: the virtual display Chromium draws on
  x11-utils         # xdpyinfo etc.: probe that the display is up
  x11-xserver-utils # xrandr: the display reports the recording's frame rate as its refresh rate
  pulseaudio        # per-recording sound server
  pulseaudio-utils  # pactl
  chromium          # the browser that shows the page
  chromium-driver   # chromedriver (WebDriver)
  ffmpeg            # encoder (and ffprobe)
  util-linux        # setpriv
)
# What only the test suite needs: the servers the tests record to and through.
TEST_APT_PACKAGES=(
  nginx             # with its RTMP module: the live-streaming tests' ingest server
  libnginx-mod-rtmp
  srt-tools         # srt-live-transmit: the SRT listener of the live-streaming tests
  procps            # ps/pgrep, used by tests to look at process trees
  redis-server      # the recording service's queue (pagecast serve) and its tests
  iproute2          # ip netns: the room recording tests' private network
  podman            # the container tests build and run the image (scripts/container-image.sh)
  runc              # ... with runc: Debian's default crun fails on hosts with hybrid cgroups
  netavark          # ... the build's network (apt inside the build)
  aardvark-dns
  iptables
  debootstrap       # ... on a Debian base made here, as no container registry is needed then
  binutils          # strip: the binary put into the image
  openssl           # a CA and certificate for the TLS (rediss://) test of the service
  curl              # the GCS tests make buckets in fake-gcs-server and read objects back
  nodejs            # Azurite, the Azure Blob emulator of the Azure output's tests (npm: below)
  fonts-noto-core   # the world's scripts (Arabic, Devanagari, Thai, ...): no missing-glyph boxes
  fonts-noto-cjk    # Chinese, Japanese, Korean
  fonts-noto-color-emoji # emoji, in colour
)

APT_PACKAGES=("${RECORDING_APT_PACKAGES[@]}")
if [ "$MODE" = all ]; then
  APT_PACKAGES+=("${TEST_APT_PACKAGES[@]}")
fi

missing_apt_packages() {
  local pkg status
  for pkg in "${APT_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [ "$status" != "install ok installed" ]; then
      printf '%s\n' "$pkg"
    fi
  done
}

install_apt_packages() {
  local missing
  mapfile -t missing < <(missing_apt_packages)
  if [ "${#missing[@]}" -eq 0 ]; then
    log "apt packages: all ${#APT_PACKAGES[@]} present"
    return 0
  fi
  log "apt packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ---------------------------------------------------------------------------
# Rust toolchain (not installed here: rustup is the supported way)
# ---------------------------------------------------------------------------
check_cargo() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    printf 'setup: ERROR: cargo not found on PATH.\n' >&2
    printf 'setup: install Rust with rustup (see the rustup.rs instructions), then run\n' >&2
    printf 'setup:   source "$HOME/.cargo/env"\n' >&2
    printf 'setup: and run this script again.\n' >&2
    exit 1
  fi
  log "cargo: $(cargo --version)"
}

# ---------------------------------------------------------------------------
# Later features add their steps here, each in its own function, and call it
# from main below (e.g. setup_python_venv, setup_npm_packages, setup_go_tools).
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# Final check: every binary pagecast and its tests run must be on PATH.
# ---------------------------------------------------------------------------
REQUIRED_BINARIES=(Xvfb xrandr chromium chromedriver pulseaudio pactl ffmpeg ffprobe setpriv)
if [ "$MODE" = all ]; then
  REQUIRED_BINARIES+=(nginx srt-live-transmit ip redis-server redis-cli podman runc debootstrap strip openssl node curl)
fi

verify_binaries() {
  local bin missing=()
  for bin in "${REQUIRED_BINARIES[@]}"; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    die "required programs missing from PATH: ${missing[*]}"
  fi
  log "binaries: ${REQUIRED_BINARIES[*]} found"
}

# ---------------------------------------------------------------------------
# Python venv (.venv in the repository), pinned:
# - moto's S3 server for the S3 tests (5.2.1 answers CompleteMultipartUpload
#   with a wrongly named XML root);
# - LiveKit's Python SDKs: test participants publishing known media, and the
#   official token verifier the token test checks pagecast's tokens against;
# - Azure's Python SDK: the Azure tests make containers in Azurite and read blobs back.
# ---------------------------------------------------------------------------
PY_PACKAGES=("moto[server]==5.2.5" "livekit==1.2.0" "livekit-api==1.2.2" "azure-storage-blob==12.31.1")

setup_python_venv() {
  local root venv
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="$root/.venv"
  if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" - 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
want = {"moto": "5.2.5", "livekit": "1.2.0", "livekit-api": "1.2.2", "azure-storage-blob": "12.31.1"}
sys.exit(any(version(name) != v for name, v in want.items()))
PY
  then
    log "python venv: ${PY_PACKAGES[*]} present"
    return 0
  fi
  command -v python3 >/dev/null 2>&1 || die "python3 is needed for the test servers and participants"
  log "python venv: installing ${PY_PACKAGES[*]} into $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
  [ -x "$venv/bin/moto_server" ] || die "moto_server missing after install"
}

# ---------------------------------------------------------------------------
# Go tools (.tools/bin in the repository): the LiveKit server the room
# recording tests run, built from source at a pinned version.
# ---------------------------------------------------------------------------
LIVEKIT_SERVER_VERSION=1.13.5

setup_go_tools() {
  local root bin tmp
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  bin="$root/.tools/bin/livekit-server"
  if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "livekit-server version $LIVEKIT_SERVER_VERSION" ]; then
    log "go tools: livekit-server $LIVEKIT_SERVER_VERSION present"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go is needed to build livekit-server for the room recording tests"
  log "go tools: building livekit-server $LIVEKIT_SERVER_VERSION (a few minutes)"
  tmp="$(mktemp -d)"
  GOBIN="$tmp" go install "github.com/livekit/livekit-server/cmd/server@v$LIVEKIT_SERVER_VERSION"
  mkdir -p "$(dirname "$bin")"
  mv "$tmp/server" "$bin"
  rmdir "$tmp"
  [ "$("$bin" --version)" = "livekit-server version $LIVEKIT_SERVER_VERSION" ] || die "livekit-server build gave the wrong version"
}

# The GCS emulator of the GCS output's tests (fake-gcs-server), built from source at a pinned
# version like livekit-server.
FAKE_GCS_VERSION=1.56.1

setup_fake_gcs() {
  local root bin tmp
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  bin="$root/.tools/bin/fake-gcs-server"
  if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -q "fake-gcs-server[[:space:]]v$FAKE_GCS_VERSION"; then
    log "go tools: fake-gcs-server $FAKE_GCS_VERSION present"
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go is needed to build fake-gcs-server for the GCS tests"
  log "go tools: building fake-gcs-server $FAKE_GCS_VERSION"
  tmp="$(mktemp -d)"
  GOBIN="$tmp" go install "github.com/fsouza/fake-gcs-server@v$FAKE_GCS_VERSION"
  mkdir -p "$(dirname "$bin")"
  mv "$tmp/fake-gcs-server" "$bin"
  rmdir "$tmp"
}

# ---------------------------------------------------------------------------
# npm tools (.tools/azurite in the repository): Azurite, the Azure Blob
# emulator of the Azure output's tests, pinned.
# ---------------------------------------------------------------------------
AZURITE_VERSION=3.37.0

setup_npm_tools() {
  local root dir
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  dir="$root/.tools/azurite"
  if [ -x "$dir/node_modules/.bin/azurite-blob" ] \
    && [ "$(node -p 'require(process.argv[1]).version' "$dir/node_modules/azurite/package.json" 2>/dev/null)" = "$AZURITE_VERSION" ]; then
    log "npm tools: azurite $AZURITE_VERSION present"
    return 0
  fi
  # Debian's nodejs comes without npm, NodeSource's with it (and conflicts with Debian's npm).
  if ! command -v npm >/dev/null 2>&1; then
    log "npm tools: installing npm"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm
  fi
  log "npm tools: installing azurite $AZURITE_VERSION into $dir"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "azurite@$AZURITE_VERSION"
  [ -x "$dir/node_modules/.bin/azurite-blob" ] || die "azurite-blob missing after install"
}

# Runs each named step in the background and waits for them all; fails, naming each, if any did.
# The test tools are independent of one another, so their downloads and builds overlap (two Go
# builds, pip and npm one after another took about 4 minutes of a clean 2-core machine).
side_by_side() {
  local step pids=() steps=() i failed=()
  for step in "$@"; do
    "$step" &
    pids+=("$!")
    steps+=("$step")
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed+=("${steps[$i]}")
  done
  [ "${#failed[@]}" -eq 0 ] || die "failed: ${failed[*]}"
}

main() {
  install_apt_packages
  check_cargo
  if [ "$MODE" = all ]; then
    side_by_side setup_python_venv setup_go_tools setup_fake_gcs setup_npm_tools
  fi
  verify_binaries
  log "done ($MODE)"
}

main "$@"
