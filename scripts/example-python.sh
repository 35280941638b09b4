#!/usr/bin/env bash
# The Python example: `--install` pip-installs the `rookery` package (clients/python) into a
# virtualenv under Cargo's target directory; without it, runs the example against the server scripts/examples.sh
# started (ROOKERY_ADDRESS, ROOKERY_CA_FILE, ROOKERY_TOKEN).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/target-dir.sh
. scripts/target-dir.sh
venv="$target_dir/examples-venv"
if [ "${1:-}" = --install ]; then
  stamp="$venv/.constraints"
  if ! cmp -s clients/python/constraints.txt "$stamp" 2>/dev/null; then
    echo "making $venv for the Python example..." >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    cp clients/python/constraints.txt "$stamp"
  fi
  # The package from this tree, every time (pip rebuilds a local directory), with pinned
  # dependencies; setuptools' build/ folder could carry a removed module into the wheel.
  rm -rf clients/python/build
  "$venv/bin/pip" install --quiet --disable-pip-version-check -c clients/python/constraints.txt ./clients/python
  exit 0
fi
"$venv/bin/python" examples/python/rookery_example.py
