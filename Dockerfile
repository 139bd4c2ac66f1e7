# syntax=docker/dockerfile:1
#
# pagecast's container image: one recording per `docker run` (or `pagecast serve`).
#
#   docker build -t pagecast .
#
# Both base images are build arguments, so the image can be built where no registry is
# reachable (scripts/container-image.sh makes a Debian bookworm base with debootstrap):
#
#   --build-arg DEBIAN_IMAGE=localhost/debian:bookworm   the runtime's base
#   --build-arg RUST_IMAGE=...                           the build stage's base
#
# Where the Rust build stage cannot run, the target `runtime-host` takes a binary built on the
# host (Debian bookworm, so the same libc) from the build context instead; the image is the same
# runtime with the same binary either way:
#
#   mkdir ctx && strip -o ctx/pagecast target/release/pagecast
#   docker build --target runtime-host -f Dockerfile -t pagecast ctx
#
# (the build context is then a folder holding just the binary, named `pagecast`).

ARG RUST_IMAGE=rust:1-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

# ---- the binary, built from source ------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && install -D -m 0755 -s target/release/pagecast /out/pagecast

# ---- the runtime, everything but pagecast -----------------------------------
FROM ${DEBIAN_IMAGE} AS runtime-base

# Keep what the packages ship for people out of the image: documentation, manuals and
# translations (about 140 MB with Chromium and ffmpeg), and every Chromium UI translation but
# the one it falls back to. Copyright files stay.
RUN printf '%s\n' \
      'path-exclude /usr/share/doc/*' \
      'path-include /usr/share/doc/*/copyright' \
      'path-exclude /usr/share/man/*' \
      'path-exclude /usr/share/info/*' \
      'path-exclude /usr/share/groff/*' \
      'path-exclude /usr/share/lintian/*' \
      'path-exclude /usr/share/linda/*' \
      'path-exclude /usr/share/locale/*' \
      'path-exclude /usr/lib/chromium/locales/*' \
      'path-include /usr/lib/chromium/locales/en-US.pak' \
      > /etc/dpkg/dpkg.cfg.d/pagecast-slim \
 && printf '%s\n' \
      'APT::Install-Recommends "false";' \
      'APT::Install-Suggests "false";' \
      > /etc/apt/apt.conf.d/90pagecast-slim

# What a recording runs (scripts/setup.sh --recording installs the same on a machine), the
# fonts pages expect (Latin, CJK, color emoji), and tini as PID 1. The downloaded packages,
# apt's lists and its logs are removed in the same layer, so they never reach the image.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      chromium \
      chromium-driver \
      xvfb \
      x11-xserver-utils \
      pulseaudio \
      pulseaudio-utils \
      ffmpeg \
      util-linux \
      ca-certificates \
      fonts-liberation \
      fonts-noto-core \
      fonts-noto-cjk \
      fonts-noto-color-emoji \
      tini \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old \
      /var/log/apt /var/log/dpkg.log /var/log/alternatives.log

RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash pagecast \
 && mkdir -p /app/out \
 && chown pagecast:pagecast /app/out

# Chromium in a container, without extra `docker run` flags:
# - its sandbox needs user namespaces, which Docker's default seccomp profile blocks, so it runs
#   with --no-sandbox here; the container is the isolation boundary, and pagecast runs as an
#   unprivileged user;
# - /dev/shm is 64 MiB by default in Docker, too small for a page with many composited layers
#   at 1080p (the tab crashes): pagecast always starts Chromium with --disable-dev-shm-usage
#   (its shared memory in /tmp instead), so no --shm-size is needed (tests/container.rs).
ENV PAGECAST_CHROMIUM_NO_SANDBOX=1

WORKDIR /app
USER pagecast

# tini is PID 1: it forwards SIGTERM from `docker stop` to pagecast, which then stops the
# recording in order and finishes the MP4 (and its upload), and it reaps orphaned children.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/pagecast"]

# ---- the runtime with a binary built on the host (--target runtime-host) ----
FROM runtime-base AS runtime-host
COPY pagecast /usr/local/bin/pagecast

# ---- the runtime with the binary built above (the default) ------------------
FROM runtime-base AS runtime
COPY --from=build /out/pagecast /usr/local/bin/pagecast
