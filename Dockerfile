# syntax=docker/dockerfile:1

# ---- build stage -----------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/pagecast /out/pagecast

# ---- runtime stage ---------------------------------------------------------
FROM debian:bookworm-slim

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
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 --user-group --shell /bin/bash pagecast \
 && mkdir -p /app/out \
 && chown pagecast:pagecast /app/out

COPY --from=build /out/pagecast /usr/local/bin/pagecast

# Docker's default seccomp profile blocks the user-namespace syscalls
# (unshare/clone with CLONE_NEWUSER) that Chromium's sandbox needs, so inside
# a container Chromium is started with --no-sandbox. The container itself is
# the isolation boundary here, and pagecast runs as an unprivileged user.
ENV PAGECAST_CHROMIUM_NO_SANDBOX=1

WORKDIR /app
USER pagecast

# tini is PID 1: it forwards SIGTERM from `docker stop` to pagecast, which then
# stops the recording and finalizes the MP4, and it reaps orphaned children.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/pagecast"]
