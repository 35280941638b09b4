#!/usr/bin/env bash
# Runs the Python client's tests (clients/python/tests) against real rookery-server and
# redis-server processes, which the tests start themselves. The packages live in a virtualenv
# under Cargo's target directory (scripts/target-dir.sh), made again only when
# clients/python/pyproject.toml or constraints.txt change (the package is installed editable,
# so source changes need no reinstall). The server is
# $ROOKERY_SERVER_BIN when set, else a debug build made here with cargo. Extra arguments go to
# pytest (e.g. `scripts/test-python.sh -k lock -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/target-dir.sh
. scripts/target-dir.sh
venv="$target_dir/python-venv"
stamp="$venv/.installed"
wanted="$(cat clients/python/pyproject.toml clients/python/constraints.txt)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing the Python client and its test packages into $venv..." >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    -c clients/python/constraints.txt -e "./clients/python[test]"
  printf '%s' "$wanted" >"$stamp"
fi

if [ -z "${ROOKERY_SERVER_BIN:-}" ]; then
  cargo build --quiet -p rookery-server
  ROOKERY_SERVER_BIN="$target_dir/debug/rookery-server"
fi
export ROOKERY_SERVER_BIN

cd clients/python
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
