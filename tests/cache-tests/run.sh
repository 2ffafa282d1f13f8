#!/usr/bin/env bash
# The http-tests/cache-tests suite (cache-tests.fyi) against patchgate with one catch-all
# `freshness = "http"` route, compared with the nginx and Varnish results the suite ships.
# Not part of `cargo test`: it needs Node (>= 14.8) and npm.
#
#   tests/cache-tests/run.sh [SUITE_DIR]
#
# Without SUITE_DIR, installs the pinned npm package `http-cache-tests@0.4.5` into a scratch
# directory. With it, uses that directory instead: an unpacked package or a git checkout
# (`git clone https://github.com/http-tests/cache-tests`; the checkout's newer layout keeps
# its engine under test-engine/, which this script also finds).
#
# Environment: ORIGIN_PORT (8000), PROXY_PORT (8001), PATCHGATE (the binary; default: a
# release build of this repository), FRESHNESS (the route's freshness, default "http"), ID
# (run one test id verbosely), KEEP=1 (keep the scratch directory), OUT (where results.json
# goes; default: the scratch directory).
set -euo pipefail

VERSION=0.4.5
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
origin_port=${ORIGIN_PORT:-8000}
proxy_port=${PROXY_PORT:-8001}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/cache-tests.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then rm -rf "$scratch"; else echo "kept $scratch" >&2; fi
}
trap cleanup EXIT

suite=${1:-}
if [ -z "$suite" ]; then
  echo "installing http-cache-tests@$VERSION from npm into $scratch" >&2
  (cd "$scratch" && npm install --no-audit --no-fund --loglevel=error "http-cache-tests@$VERSION" >&2)
  suite="$scratch/node_modules/http-cache-tests"
fi
suite=$(cd "$suite" && pwd)
engine="$suite"
[ -d "$suite/test-engine" ] && engine="$suite/test-engine"
if [ ! -d "$suite/node_modules" ] && [ ! -d "$scratch/node_modules" ]; then
  (cd "$suite" && npm install --no-audit --no-fund --loglevel=error >&2)
fi

binary=${PATCHGATE:-}
if [ -z "$binary" ]; then
  cargo build --release --locked --quiet --manifest-path "$repo/Cargo.toml" >&2
  binary="$repo/target/release/patchgate"
fi

cat > "$scratch/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:$proxy_port"
request_timeout = "30s"

[[route]]
name = "all"
path = "/{*rest}"
upstream = "http://127.0.0.1:$origin_port"
freshness = "${FRESHNESS:-http}"
TOML

# The suite's origin reads its settings the way `npm run server` would pass them.
(cd "$suite" && npm_config_protocol=http npm_config_port="$origin_port" \
  npm_config_pidfile="$scratch/origin.pid" exec node "$engine/server/server.mjs") \
  > "$scratch/origin.log" 2>&1 &
pids+=($!)
"$binary" --config "$scratch/proxy.toml" > "$scratch/patchgate.log" 2>&1 &
pids+=($!)

for port in "$origin_port" "$proxy_port"; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
done

run_cli() {
  (cd "$suite" && npm_config_base="http://127.0.0.1:$proxy_port" npm_config_id="${1:-}" \
    npm_package_config_id="" exec node --no-warnings "$engine/cli.mjs")
}

if [ -n "${ID:-}" ]; then
  run_cli "$ID"
  exit 0
fi

out=${OUT:-$scratch/results.json}
echo "running the suite through patchgate (127.0.0.1:$proxy_port -> origin 127.0.0.1:$origin_port)" >&2
run_cli > "$out"
echo "results: $out" >&2
node "$here/compare.mjs" "$suite" "$out"
