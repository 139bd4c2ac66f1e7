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

# Clippy and the build in one compile: clippy-driver, as the workspace's rustc wrapper (what
# `cargo clippy` sets, with its arguments in CLIPPY_ARGS), lints each of pagecast's crates as it
# builds them, and denies warnings. `cargo clippy` followed by `cargo build` compiled every
# dependency twice (checked, then built): 375 s on a clean 2-core machine, against 304 s for one
# linted build. The tests below run with the same wrapper, so nothing is built again; the lints
# are those of `cargo clippy --workspace --all-targets -- -D warnings`.
clippy_driver="$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver || true)"
[ -x "$clippy_driver" ] || { echo "test: clippy-driver not found: rustup component add clippy" >&2; exit 1; }
export RUSTC_WORKSPACE_WRAPPER="$clippy_driver"
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

step "cargo build --workspace --all-targets, linted by clippy (-D warnings)"
cargo build --workspace --all-targets

# Each heavy test appends the seconds it held the machine-wide lock (testkit::heavy) here; the
# longest are printed at the end, so the suite's time budget shows where it goes.
times="$PWD/target/heavy-test-times.tsv"
rm -f "$times"
export PAGECAST_TEST_TIMES="$times"
# The summary never changes the command's exit status: it keeps the tests' own. (It once did: with
# pipefail, `sort | head` failed with SIGPIPE (141) whenever head closed before sort's last write,
# and a green suite exited 141. sed reads all its input, so nothing is cut off now.)
print_times() {
  [ -s "$times" ] || return 0
  step "the heavy tests that held the lock longest (seconds held, waited, test)"
  sort -rn "$times" | sed -n '1,15p'
  awk -F'\t' '{ s += $1 } END { printf "%d heavy tests held the lock %.0f s in all\n", NR, s }' "$times"
}
trap 'status=$?; print_times || true; exit "$status"' EXIT

if [ "$#" -gt 0 ]; then
  step "cargo test --workspace --all-targets --no-fail-fast -- $*"
  cargo test --workspace --all-targets --no-fail-fast -- "$@"
else
  step "cargo test --workspace --all-targets --no-fail-fast (every test binary runs; any failure fails the command)"
  cargo test --workspace --all-targets --no-fail-fast
fi
