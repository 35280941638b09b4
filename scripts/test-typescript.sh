#!/usr/bin/env bash
# Tests the TypeScript client (clients/typescript) against real Redis and rookery-server
# processes that its tests start themselves: installs the package's dev dependencies locally
# (npm ci, from the committed package-lock.json, only when they changed), builds the package
# and its tests with tsc, and runs them with node:test, one file at a time (each file starts
# its own Redis and servers; the machine may have only two cores).
# The server binary is $ROOKERY_SERVER_BIN when set; otherwise the debug build, made here first
# where cargo builds (scripts/target-dir.sh: CARGO_TARGET_DIR honoured).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${ROOKERY_SERVER_BIN:-}" ]; then
  cargo build --quiet -p rookery-server
  # shellcheck source=scripts/target-dir.sh
  . scripts/target-dir.sh
  ROOKERY_SERVER_BIN="$target_dir/debug/rookery-server"
fi
export ROOKERY_SERVER_BIN
command -v redis-server >/dev/null || { echo "redis-server is missing: apt-get install redis-server" >&2; exit 1; }

cd clients/typescript
# npm ci only when the lock file changed since the last install (npm keeps a copy of it).
if ! cmp -s package-lock.json node_modules/.package-lock.json.installed 2>/dev/null; then
  echo "installing the TypeScript client's dev dependencies into clients/typescript/node_modules..." >&2
  npm ci --no-audit --no-fund --silent
  cp package-lock.json node_modules/.package-lock.json.installed
fi
npx --no-install tsc -p tsconfig.json
rm -rf build
npx --no-install tsc -p tsconfig.test.json
node --test --test-concurrency=1 --test-timeout=300000 build/test/*.test.js
