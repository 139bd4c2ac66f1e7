#!/usr/bin/env bash
# Builds pagecast's container image with podman where no container registry is reachable and
# no Docker daemon runs:
# - the base is Debian bookworm made with `debootstrap --variant=minbase` from this machine's
#   Debian mirror, slimmed like the official slim image and imported as localhost/debian:bookworm
#   (made once, then reused);
# - the binary is one built on this machine (Debian bookworm too), stripped and taken by the
#   Dockerfile's runtime (target runtime-host), so no Rust build runs in the container.
#
#   scripts/container-image.sh [--binary FILE] [--tag TAG]
#     --binary  the pagecast binary (default target/release/pagecast)
#     --tag     the image's name (default localhost/pagecast:latest)
#
# A rerun takes seconds: podman reuses every layer whose input is unchanged. The first run takes
# minutes (debootstrap, then apt in the build). Needs root, podman, runc and debootstrap
# (scripts/setup.sh installs them with the test tools). Podman runs with runc (Debian's default
# crun fails on hosts with hybrid cgroups) and with ulimits within the host's hard limits
# (podman's defaults are higher, and runc refuses them). DEBIAN_MIRROR overrides the mirror.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

BASE_IMAGE=localhost/debian:bookworm
BINARY=target/release/pagecast
TAG=localhost/pagecast:latest

log() { printf 'container-image: %s\n' "$*" >&2; }
die() { printf 'container-image: ERROR: %s\n' "$*" >&2; exit 1; }

while [ "$#" -gt 0 ]; do
  case "$1" in
    --binary) BINARY="${2:?--binary needs a file}"; shift 2 ;;
    --tag) TAG="${2:?--tag needs a name}"; shift 2 ;;
    *) die "unknown argument $1 (expected --binary FILE or --tag TAG)" ;;
  esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (podman builds and debootstrap need it)"
for program in podman runc debootstrap strip; do
  command -v "$program" >/dev/null 2>&1 \
    || die "$program is missing (scripts/setup.sh installs it with the test tools)"
done
[ -x "$BINARY" ] || die "$BINARY is not an executable (build it first: cargo build --release)"

# Open files: this shell's hard limit. Processes: the same, but at most 32768, the highest
# value runc accepted here (podman runs with a lower process limit than the shell).
ulimit_flags() {
  local nofile nproc
  nofile="$(ulimit -Hn)"
  nproc="$(ulimit -Hu)"
  if [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; then
    nproc=32768
  fi
  [ "$nofile" = unlimited ] || printf -- '--ulimit\nnofile=%s:%s\n' "$nofile" "$nofile"
  printf -- '--ulimit\nnproc=%s:%s\n' "$nproc" "$nproc"
}
mapfile -t ULIMITS < <(ulimit_flags)
PODMAN=(podman --runtime runc)

debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then
    printf '%s\n' "$DEBIAN_MIRROR"
    return
  fi
  apt-get indextargets --format '$(REPO_URI)' 'Release: bookworm' 'Identifier: Packages' \
    | sed -n 1p # sed reads everything: head could end apt-get with SIGPIPE, fatal under pipefail
}

# Every temporary file lives here, and goes when the script ends.
work="$(mktemp -d)"
# shellcheck disable=SC2064 # expand now: the trap must remove this directory
trap "rm -rf '$work'" EXIT

make_base_image() {
  local mirror root="$work/rootfs"
  mirror="$(debian_mirror)"
  [ -n "$mirror" ] || die "no Debian bookworm mirror in this machine's apt sources; set DEBIAN_MIRROR"
  log "making $BASE_IMAGE: debootstrap --variant=minbase bookworm from $mirror (a minute or two)"
  if ! debootstrap --variant=minbase bookworm "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    tail -n 20 "$work/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  # What the official slim image leaves out: downloaded packages, apt lists, documentation
  # (copyright files stay), manuals and translations.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/var/cache/debconf/*-old
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  tar -C "$root" -c . | "${PODMAN[@]}" import --quiet - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
}

if "${PODMAN[@]}" image exists "$BASE_IMAGE"; then
  log "base image $BASE_IMAGE present"
else
  make_base_image
fi

context="$work/context"
mkdir "$context"
strip -o "$context/pagecast" "$BINARY"

log "building $TAG from $BINARY on $BASE_IMAGE"
previous="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)"
started=$SECONDS
if ! "${PODMAN[@]}" build "${ULIMITS[@]}" \
  --build-arg "DEBIAN_IMAGE=$BASE_IMAGE" \
  --target runtime-host \
  --file Dockerfile --tag "$TAG" "$context" >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  die "podman build failed"
fi
log "built $TAG in $((SECONDS - started)) s: $("${PODMAN[@]}" image inspect --format '{{.Size}}' "$TAG") bytes"
# A new binary makes a new image: the one it replaces would only take space (unless a
# container still uses it, then it stays).
current="$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$TAG")"
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
  "${PODMAN[@]}" rmi "$previous" >/dev/null 2>&1 || true
fi
