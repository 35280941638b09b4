#!/usr/bin/env bash
# The Python example: `--install` puts its packages into a virtualenv under target/; without
# it, runs the example against the server scripts/examples.sh started (ROOKERY_ADDRESS,
# ROOKERY_CA_FILE, ROOKERY_TOKEN).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/examples-venv
generated=target/examples-py
if [ "${1:-}" = --install ]; then
  stamp="$venv/.requirements"
  if ! cmp -s examples/python/requirements.txt "$stamp" 2>/dev/null; then
    echo "installing the Python example's packages into $venv..." >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r examples/python/requirements.txt
    cp examples/python/requirements.txt "$stamp"
  fi
  rm -rf "$generated" && mkdir -p "$generated"
  "$venv/bin/python" -m grpc_tools.protoc -I proto --python_out="$generated" --grpc_python_out="$generated" \
    proto/rookery/v1/*.proto
  exit 0
fi
PYTHONPATH="$generated" "$venv/bin/python" examples/python/rookery_example.py
