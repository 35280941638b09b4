#!/usr/bin/env bash
# The Node example: `--install` puts its packages into examples/node/node_modules; without it,
# runs the example against the server scripts/examples.sh started (ROOKERY_ADDRESS,
# ROOKERY_CA_FILE, ROOKERY_TOKEN).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --install ]; then
  if [ ! -d examples/node/node_modules ] || [ examples/node/package.json -nt examples/node/node_modules ]; then
    echo "installing the Node example's packages into examples/node/node_modules..." >&2
    (cd examples/node && npm install --no-audit --no-fund --silent)
  fi
  exit 0
fi
node examples/node/example.js
