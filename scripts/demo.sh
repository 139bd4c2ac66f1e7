#!/usr/bin/env bash
# The project's demo command: record the bundled demo page (10 s by default)
# to ./recordings/demo.mp4. Extra arguments go to `pagecast demo`,
# e.g. scripts/demo.sh --duration 30s
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "scripts/setup.sh --recording (only what a recording needs)"
bash scripts/setup.sh --recording

if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
  export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

step "cargo build --release"
cargo build --release

OUTPUT=./recordings/demo.mp4
mkdir -p "$(dirname "$OUTPUT")"

step "pagecast demo --overwrite --output $OUTPUT $*"
target/release/pagecast demo --overwrite --output "$OUTPUT" "$@"

if command -v ffprobe >/dev/null 2>&1 && [ -f "$OUTPUT" ]; then
  summary="$(ffprobe -v error -select_streams v:0 \
    -show_entries format=duration:stream=width,height \
    -of default=noprint_wrappers=1 "$OUTPUT" 2>/dev/null \
    | awk -F= '{v[$1]=$2} END {
        d = (v["duration"] == "" || v["duration"] == "N/A") ? "?" : sprintf("%.2f s", v["duration"]);
        printf "duration %s, resolution %sx%s", d, v["width"], v["height"] }')" || summary=""
  printf '\n%s: %s\n' "$OUTPUT" "${summary:-ffprobe could not read the file}"
fi
