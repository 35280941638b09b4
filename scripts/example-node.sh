#!/usr/bin/env bash
# The Node example (examples/node), which uses the TypeScript client package of
# clients/typescript. `--install` installs and builds that package (npm ci when its lock file
# changed, then tsc) and links it into examples/node/node_modules; without it, runs the example
# against the server scripts/examples.sh started (ROOKERY_ADDRESS, ROOKERY_CA_FILE,
# ROOKERY_TOKEN).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = --install ]; then
  (
    cd clients/typescript
    if ! cmp -s package-lock.json node_modules/.package-lock.json.installed 2>/dev/null; then
      echo "installing the TypeScript client's packages into clients/typescript/node_modules..." >&2
      npm ci --no-audit --no-fund --silent
      cp package-lock.json node_modules/.package-lock.json.installed
    fi
    npx --no-install tsc -p tsconfig.json
  )
  if [ ! -e examples/node/node_modules/@rookery/client ] || [ examples/node/package.json -nt examples/node/node_modules ]; then
    echo "linking the TypeScript client into examples/node/node_modules..." >&2
    (cd examples/node && npm install --no-audit --no-fund --silent)
  fi
  exit 0
fi
node examples/node/example.mjs
