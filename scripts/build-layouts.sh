#!/usr/bin/env bash
# Builds pagecast's built-in LiveKit layout page from layouts/ into assets/layouts/.
#
#   scripts/build-layouts.sh          npm ci (only when layouts/node_modules is missing or
#                                     stale), tsc --noEmit, esbuild; writes
#                                     assets/layouts/{index.html,layouts.js,layouts.css,SOURCES.sha256}
#   scripts/build-layouts.sh --check  offline, no node needed: recomputes the sources hash and
#                                     exits 1 when it differs from assets/layouts/SOURCES.sha256
#                                     (or when an output file is missing)
#
# The build output is committed, so building pagecast never needs node or the network; run this
# after changing anything under layouts/ (or this script) and commit assets/layouts/ with it.
# The output is deterministic: the same sources give byte-identical files.
#
# SOURCES HASH RULE (assets/layouts/SOURCES.sha256):
#   files  = layouts/package.json, layouts/package-lock.json, layouts/tsconfig.json,
#            layouts/index.html, scripts/build-layouts.sh, and every regular file under
#            layouts/src/ (recursively);
#            each named by its path relative to the repository root, with '/' separators
#   order  = sorted by that path, bytewise (LC_ALL=C sort; Rust: sort the path Strings)
#   hash   = ONE sha256 over the concatenation, for each file in that order, of
#            <path bytes> 0x00 <file content bytes>       (nothing between files)
#   file   = the lowercase hex digest followed by a single "\n" (65 bytes)
# Rust sketch: let mut h = Sha256::new(); for p in sorted { h.update(p.as_bytes());
#   h.update([0u8]); h.update(fs::read(root.join(p))?); } assert_eq!(hex(h.finalize()) + "\n", file)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/layouts"
OUT="$ROOT/assets/layouts"
OUTPUTS=(index.html layouts.js layouts.css SOURCES.sha256)

log() { printf 'build-layouts: %s\n' "$*" >&2; }
die() { printf 'build-layouts: ERROR: %s\n' "$*" >&2; exit 1; }

# The sources, one path per line, relative to $ROOT, sorted bytewise.
source_files() {
  (
    cd "$ROOT"
    printf '%s\n' layouts/package.json layouts/package-lock.json layouts/tsconfig.json \
      layouts/index.html scripts/build-layouts.sh
    find layouts/src -type f -print
  ) | LC_ALL=C sort
}

sources_hash() {
  local f
  (
    cd "$ROOT"
    source_files | while IFS= read -r f; do
      [ -f "$f" ] || die "missing source file $f"
      printf '%s\0' "$f"
      cat -- "$f"
    done
  ) | sha256sum | cut -d' ' -f1
}

check() {
  local f want have
  for f in "${OUTPUTS[@]}"; do
    [ -s "$OUT/$f" ] || { log "missing $OUT/$f: run scripts/build-layouts.sh"; exit 1; }
  done
  want="$(tr -d '\n' <"$OUT/SOURCES.sha256")"
  have="$(sources_hash)"
  if [ "$want" != "$have" ]; then
    log "assets/layouts/ is stale: sources hash $have, SOURCES.sha256 says $want"
    log "run scripts/build-layouts.sh and commit assets/layouts/"
    exit 1
  fi
  log "assets/layouts/ matches its sources ($have)"
}

# npm ci only when node_modules is missing or was installed from another lockfile.
ensure_node_modules() {
  command -v node >/dev/null 2>&1 || die "node not found (node 18+ and npm are needed to build the layouts)"
  command -v npm >/dev/null 2>&1 || die "npm not found"
  local stamp="$SRC/node_modules/.pagecast-lock.sha256" want
  want="$(cat "$SRC/package.json" "$SRC/package-lock.json" | sha256sum | cut -d' ' -f1)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && [ -x "$SRC/node_modules/.bin/esbuild" ] && [ -x "$SRC/node_modules/.bin/tsc" ]; then
    return 0
  fi
  log "installing node packages (npm ci)"
  (cd "$SRC" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  printf '%s' "$want" >"$stamp"
}

build() {
  ensure_node_modules
  local bin="$SRC/node_modules/.bin"
  log "type checking (tsc --noEmit)"
  (cd "$SRC" && "$bin/tsc" --noEmit -p tsconfig.json)

  TMP_OUT="$(mktemp -d)"
  trap 'rm -rf "$TMP_OUT"' EXIT
  local tmp="$TMP_OUT"
  log "bundling (esbuild)"
  (
    cd "$SRC"
    "$bin/esbuild" src/main.ts --bundle --minify --format=iife --platform=browser \
      --target=es2020 --charset=utf8 --legal-comments=eof --log-level=warning \
      --outfile="$tmp/layouts.js"
    "$bin/esbuild" src/layouts.css --minify --target=chrome100 --charset=utf8 \
      --log-level=warning --outfile="$tmp/layouts.css"
  )
  cp "$SRC/index.html" "$tmp/index.html"
  sources_hash >"$tmp/SOURCES.sha256"

  mkdir -p "$OUT"
  find "$OUT" -mindepth 1 -maxdepth 1 -type f -delete
  local f
  for f in "${OUTPUTS[@]}"; do
    cp "$tmp/$f" "$OUT/$f"
    chmod 644 "$OUT/$f"
  done
  log "wrote $(cd "$ROOT" && printf 'assets/layouts/%s ' "${OUTPUTS[@]}")($(wc -c <"$OUT/layouts.js") bytes of JS)"
}

case "${1:-}" in
  --check) check ;;
  "") build ;;
  -h | --help) sed -n '2,13p' "$0" ;;
  *) die "unknown argument: $1 (use --check, or no argument to build)" ;;
esac
