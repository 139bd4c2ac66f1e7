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
