#!/usr/bin/env bash
# Runs the Python and Node example clients (examples/) against a real server and Redis: the
# protos work outside Rust. Each language's runner (scripts/example-python.sh,
# scripts/example-node.sh) installs its packages locally; nothing is installed globally.
# The server binary is taken from wherever cargo builds (scripts/target-dir.sh: CARGO_TARGET_DIR
# is honoured). The server runs with TLS and auth on, as in production: a throwaway CA and server certificate
# (scripts/dev-credentials.sh) and a random bearer token, in a temporary directory that is
# removed on exit. The examples get the CA and the token as ROOKERY_CA_FILE and ROOKERY_TOKEN.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each language's packages, before the server starts.
scripts/example-python.sh --install
scripts/example-node.sh --install

cargo build --quiet -p rookery-server
# shellcheck source=scripts/target-dir.sh
. scripts/target-dir.sh
# shellcheck source=scripts/local-redis.sh
. scripts/local-redis.sh
server_pid=
tls_dir=$(mktemp -d -t rookery-examples.XXXXXX)
# Replaces local-redis.sh's trap, so it stops that Redis too.
trap '[ -z "$server_pid" ] || { kill -TERM "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
  kill "${redis_pid:-}" 2>/dev/null; rm -rf "${redis_dir:-/nonexistent}" "$tls_dir"' EXIT

# The server's certificate (for localhost and 127.0.0.1) and the CA that clients trust.
scripts/dev-credentials.sh "$tls_dir"
# A bearer token; the server's config holds only its SHA-256.
token=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
token_sha256=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
cat >"$tls_dir/rookery.toml" <<EOF
[tls]
cert_file = "$tls_dir/server.crt"
key_file = "$tls_dir/server.key"

[auth]
enabled = true

[[auth.tokens]]
identity = "examples"
sha256 = "$token_sha256"

[[auth.grants]]
identities = ["examples"]
namespaces = ["*"]
access = "admin"
EOF

export ROOKERY_LISTEN=127.0.0.1:50161 ROOKERY_ADMIN_LISTEN=127.0.0.1:50162 ROOKERY_LOG_LEVEL=warn
ROOKERY_CONFIG="$tls_dir/rookery.toml" "$target_dir/debug/rookery-server" &
server_pid=$!
# Ready when the port accepts TCP connections (the TLS handshake comes with the first call).
ready=
for _ in $(seq 200); do
  if (exec 3<>/dev/tcp/127.0.0.1/50161) 2>/dev/null; then ready=1 && break; fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.05
done
if [ -z "$ready" ]; then
  echo "the server did not start listening on 127.0.0.1:50161" >&2
  exit 1
fi

# The examples dial the server by the name in its certificate: given an IP address, grpc-js would
# send it as the TLS server name (SNI), which RFC 6066 forbids and both ends warn about.
export ROOKERY_ADDRESS=localhost:50161 ROOKERY_CA_FILE="$tls_dir/ca.crt" ROOKERY_TOKEN="$token"
scripts/example-python.sh
scripts/example-node.sh
