#!/usr/bin/env bash
# Runs the Python and Node example clients (examples/) against a real server and Redis: the
# protos work outside Rust. Python packages go to a virtualenv under target/, Node packages to
# examples/node/node_modules; nothing is installed globally.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/examples-venv
stamp="$venv/.requirements"
if ! cmp -s examples/python/requirements.txt "$stamp" 2>/dev/null; then
  echo "installing the Python example's packages into $venv..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r examples/python/requirements.txt
  cp examples/python/requirements.txt "$stamp"
fi
generated=target/examples-py
rm -rf "$generated" && mkdir -p "$generated"
"$venv/bin/python" -m grpc_tools.protoc -I proto --python_out="$generated" --grpc_python_out="$generated" \
  proto/rookery/v1/*.proto
if [ ! -d examples/node/node_modules ] || [ examples/node/package.json -nt examples/node/node_modules ]; then
  echo "installing the Node example's packages into examples/node/node_modules..." >&2
  (cd examples/node && npm install --no-audit --no-fund --silent)
fi

cargo build --quiet -p rookery-server
# shellcheck source=local-redis.sh
. scripts/local-redis.sh
export ROOKERY_LISTEN=127.0.0.1:50161 ROOKERY_ADMIN_LISTEN=127.0.0.1:50162 ROOKERY_LOG_LEVEL=warn
target/debug/rookery-server &
server_pid=$!
trap 'kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; kill "${redis_pid:-}" 2>/dev/null; rm -rf "${redis_dir:-/nonexistent}"' EXIT
for _ in $(seq 200); do
  (exec 3<>/dev/tcp/127.0.0.1/50161) 2>/dev/null && break
  sleep 0.05
done

export ROOKERY_ADDRESS=127.0.0.1:50161
PYTHONPATH="$generated" "$venv/bin/python" examples/python/rookery_example.py
node examples/node/example.js
