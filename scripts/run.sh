#!/usr/bin/env bash
# `make run`: installs what is missing, starts a throwaway Redis unless ROOKERY_REDIS_URL is
# set, and runs the server in the foreground (Ctrl-C stops both). The binary is taken from
# wherever cargo builds (scripts/target-dir.sh: CARGO_TARGET_DIR is honoured).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh
cargo build --release -p rookery-server
# shellcheck source=scripts/target-dir.sh
. scripts/target-dir.sh
# shellcheck source=scripts/local-redis.sh
. scripts/local-redis.sh
echo "rookery-server: gRPC on ${ROOKERY_LISTEN:-127.0.0.1:50051}, metrics on http://${ROOKERY_ADMIN_LISTEN:-127.0.0.1:9090}/metrics" >&2
"$target_dir/release/rookery-server" "$@" &
server_pid=$!
trap 'kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; kill "${redis_pid:-}" 2>/dev/null; rm -rf "${redis_dir:-/nonexistent}"' EXIT INT TERM
wait "$server_pid"
