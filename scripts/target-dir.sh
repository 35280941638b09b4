# Sourced by the scripts that keep binaries, virtualenvs or outputs under Cargo's target
# directory. Sets `target_dir` to the directory cargo really builds into, as cargo itself
# reports it: ./target by default, but CARGO_TARGET_DIR, or build.target-dir in a
# .cargo/config.toml, moves it, and a script that assumed ./target would then run a stale
# binary or none at all.
#
# Usage (from any directory; the script finds the workspace beside itself):
#   . scripts/target-dir.sh
#   "$target_dir/release/rookery-server"
#   venv="$target_dir/deploy-venv"
# shellcheck shell=bash

# --no-deps: only the workspace's own manifests are read, so it is quick and needs no network.
# Set for the script that sources this file, which shellcheck cannot see from here.
# shellcheck disable=SC2034
target_dir=$(
  cargo metadata --format-version 1 --no-deps \
    --manifest-path "$(dirname "${BASH_SOURCE[0]}")/../Cargo.toml" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
)
