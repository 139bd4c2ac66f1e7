#!/usr/bin/env bash
# The project's test command: install prerequisites, build everything, run all tests.
# Extra arguments go to the test binaries: scripts/test.sh -- --nocapture
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

if [ "${1:-}" = "--" ]; then
  shift
fi

step "scripts/setup.sh"
bash scripts/setup.sh

# setup.sh runs in a child shell; make cargo findable here too.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
  export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi

step "scripts/build-layouts.sh --check (the embedded layout bundle is the build of its sources)"
bash scripts/build-layouts.sh --check

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

if [ "$#" -gt 0 ]; then
  step "cargo test --workspace --all-targets --no-fail-fast -- $*"
  cargo test --workspace --all-targets --no-fail-fast -- "$@"
else
  step "cargo test --workspace --all-targets --no-fail-fast (every test binary runs; any failure fails the command)"
  cargo test --workspace --all-targets --no-fail-fast
fi
