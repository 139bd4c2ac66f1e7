#!/usr/bin/env bash
# The benchmark (issue #8): installs what is missing, builds pagecast in release mode, runs the
# harness (bench/bench.py) with the project's Python venv, prints the results and writes them into
# BENCHMARKS.md. Needs root (one cgroup v1 per run). Arguments go to the harness:
#   bench/run.sh            the full run (3 repetitions, ~20 minutes)
#   bench/run.sh --quick    1 repetition, short recordings (~5 minutes)
#   bench/run.sh --tune     the tuning candidates against the current defaults
#   bench/run.sh --start    only the start section (record and serve: until the page is on tape)
#   bench/run.sh --density  only the density section (1..--density-max recordings at once)
#   bench/run.sh --help     every option
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  scripts/setup.sh >&2
  if ! command -v cargo >/dev/null 2>&1 && [ -x "${HOME:-/root}/.cargo/bin/cargo" ]; then
    export PATH="${HOME:-/root}/.cargo/bin:$PATH"
  fi
  cargo build --release --bin pagecast >&2
fi
exec "$root/.venv/bin/python" "$root/bench/bench.py" "$@"
