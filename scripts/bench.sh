#!/usr/bin/env bash
# `make bench`: builds release binaries, starts a throwaway Redis (unless ROOKERY_REDIS_URL is
# set) and a server on it, and runs the Cache, Lock, Session, RateLimiter and Events benchmarks
# against their Redis references in one go, then Cache.Get and RateLimiter.Check with fair
# shares on vs off (a second server on the same Redis), and Cache.Get over TLS with JWT auth vs
# plaintext without auth (a third server, credentials from scripts/dev-credentials.sh); then the
# peers: the Events scenarios against NATS (nats-server, JetStream on memory storage) and key reads
# and locks against etcd, each started here on free ports, in alternating rounds with Rookery.
# `scripts/bench.sh peers` runs only the peer comparisons (and their Rookery sides);
# `scripts/bench.sh near` only the near-cache scenarios (a Zipf read workload with 1 % writes,
# near cache off and on, each against redis-benchmark GET).
# BENCH_DURATION (default 5s), BENCH_ROUNDS (default 5) and ROOKERY_WORKER_THREADS (default 1)
# can be set. Binaries are taken from wherever cargo builds (scripts/target-dir.sh:
# CARGO_TARGET_DIR is honoured).
set -euo pipefail
cd "$(dirname "$0")/.."
only="${1:-all}"
case "$only" in all | peers | near) ;; *) echo "usage: $0 [peers|near]" >&2; exit 2 ;; esac
scripts/ensure-tools.sh --peers
cargo build --release -p rookery-server -p rookery-client --features rookery-client/peers
# shellcheck source=scripts/target-dir.sh
. scripts/target-dir.sh
bin="$target_dir/release"
# shellcheck source=scripts/local-redis.sh
. scripts/local-redis.sh
export ROOKERY_LISTEN=127.0.0.1:50151 ROOKERY_ADMIN_LISTEN=127.0.0.1:50152
export ROOKERY_WORKER_THREADS="${ROOKERY_WORKER_THREADS:-1}" ROOKERY_LOG_LEVEL=warn
# The bench namespace may hold more streams than the default share: the idle-subscriber scenario
# opens 10,000 while the fan-out scenario's streams may still be closing.
main_config="$(mktemp --suffix=.toml)"
printf '[fair_share.namespaces.bench]\nmax_open_streams = 20000\n' >"$main_config"
ROOKERY_CONFIG="$main_config" "$bin"/rookery-server &
server_pid=$!
# A second server on the same Redis with fair shares off, for the cost of the fair-share layer.
unshared_config="$(mktemp --suffix=.toml)"
printf '[fair_share]\nenabled = false\n' >"$unshared_config"
ROOKERY_CONFIG="$unshared_config" ROOKERY_LISTEN=127.0.0.1:50153 ROOKERY_ADMIN_LISTEN=127.0.0.1:50154 \
  "$bin"/rookery-server &
unshared_pid=$!
# A third with TLS and JWT auth, for the cost of both.
credentials="$(mktemp -d)"
scripts/dev-credentials.sh "$credentials"
cat >"$credentials/secure.toml" <<TOML
[tls]
cert_file = "$credentials/server.crt"
key_file = "$credentials/server.key"
[auth]
enabled = true
[auth.jwt]
jwks_file = "$credentials/jwks.json"
issuer = "https://rookery.dev"
[[auth.grants]]
identities = ["dev"]
namespaces = ["bench"]
access = "admin"
TOML
ROOKERY_CONFIG="$credentials/secure.toml" ROOKERY_LISTEN=127.0.0.1:50155 ROOKERY_ADMIN_LISTEN=127.0.0.1:50156 \
  "$bin"/rookery-server &
secure_pid=$!
# The peers, on free ports: NATS with JetStream (its streams here are on memory storage), and
# etcd with its data in memory (/dev/shm where there is one) as the bench's Redis keeps its own.
free_port() {
  local port=$1
  while port_in_use "$port"; do port=$((port + 1)); done
  echo "$port"
}
peer_dir="$(mktemp -d -p "$( [ -w /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")" rookery-peers.XXXXXX)"
nats_port="$(free_port 4222)"
nats-server --addr 127.0.0.1 --port "$nats_port" --jetstream --store_dir "$peer_dir/nats" \
  --log "$peer_dir/nats.log" &
nats_pid=$!
etcd_port="$(free_port 2379)"
etcd_peer_port="$(free_port $((etcd_port + 1)))"
etcd --name bench --data-dir "$peer_dir/etcd" --log-outputs "$peer_dir/etcd.log" --log-level warn --logger zap \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "bench=http://127.0.0.1:$etcd_peer_port" &
etcd_pid=$!
trap 'kill -TERM "$server_pid" "$unshared_pid" "$secure_pid" "$nats_pid" "$etcd_pid" 2>/dev/null; wait "$server_pid" "$unshared_pid" "$secure_pid" "$nats_pid" "$etcd_pid" 2>/dev/null || true; kill "${redis_pid:-}" 2>/dev/null; rm -rf "${redis_dir:-/nonexistent}" "$main_config" "$unshared_config" "$credentials" "$peer_dir"' EXIT
for port in 50151 50153 50155 "$nats_port" "$etcd_port"; do
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
done
duration="${BENCH_DURATION:-5s}"
rounds="${BENCH_ROUNDS:-5}"
bench() {
  "$bin"/rookery --url http://127.0.0.1:50151 --namespace bench bench --duration "$duration" \
    --rounds "$rounds" --compare-redis --redis-url "$ROOKERY_REDIS_URL" "$@"
}
echo "# server worker threads: $ROOKERY_WORKER_THREADS; $rounds rounds of $duration per scenario"
# Rookery against its peers, alternating rounds: Rookery/peer ratios.
peer() {
  "$bin"/rookery --url http://127.0.0.1:50151 --namespace bench bench --duration "$duration" \
    --rounds "$rounds" "$@"
}
peers() {
  local nats=(--compare-peer nats --peer-url "nats://127.0.0.1:$nats_port")
  local etcd=(--compare-peer etcd --peer-url "http://127.0.0.1:$etcd_port")
  peer --op fanout --concurrency 1 "${nats[@]}"
  peer --op fanout --concurrency 64 "${nats[@]}"
  peer --op fanout-stream --concurrency 1 "${nats[@]}"
  # The same against Redis alone (raw subscribers, PUBLISH, the same window): with the line
  # above, how much of the gap to NATS at 1 in flight is Redis's and how much the gRPC hop's.
  bench --op fanout-stream --concurrency 1
  peer --op fanout-stream --concurrency 64 "${nats[@]}"
  peer --op append --concurrency 1 "${nats[@]}"
  peer --op append --concurrency 64 "${nats[@]}"
  peer --op append-stream --concurrency 1 "${nats[@]}"
  peer --op append-stream --concurrency 64 "${nats[@]}"
  peer --op consume --concurrency 64 --keys 200000 "${nats[@]}"
  peer --op get --concurrency 1 "${etcd[@]}"
  peer --op get --concurrency 64 "${etcd[@]}"
  peer --op lock --concurrency 1 "${etcd[@]}"
  peer --op lock --concurrency 64 "${etcd[@]}"
  peer --op lock-contended --concurrency 16 "${etcd[@]}"
}
near() {
  bench --op zipf-get --keys 100000 --concurrency 64
  bench --op near-get --keys 100000 --concurrency 64
  bench --op zipf-get --keys 100000 --concurrency 1
  bench --op near-get --keys 100000 --concurrency 1
}
if [ "$only" = peers ]; then
  peers
  exit 0
fi
if [ "$only" = near ]; then
  near
  exit 0
fi
bench --op get --concurrency 64
bench --op get --concurrency 1
bench --op set --concurrency 64
bench --op lock --concurrency 64
bench --op lock --concurrency 1
bench --op lock-contended --concurrency 16
bench --op session-get --concurrency 64
bench --op rate-limit --concurrency 64
bench --op publish --concurrency 64
bench --op append --concurrency 64
bench --op consume --concurrency 64 --keys 200000
bench --op fanout --concurrency 16
near
# Fair shares on (50151) vs off (50153), alternating rounds.
shares() {
  "$bin"/rookery --url http://127.0.0.1:50151 --namespace bench bench --duration "$duration" \
    --rounds "$rounds" --compare-url http://127.0.0.1:50153 "$@"
}
shares --op get --concurrency 64
shares --op rate-limit --concurrency 64
# TLS with a JWT on every call (50155) vs plaintext without auth (50151), alternating rounds.
"$bin"/rookery --url https://127.0.0.1:50155 --tls-domain localhost --ca-file "$credentials/ca.crt" \
  --token-file "$credentials/token" --namespace bench bench --duration "$duration" --rounds "$rounds" \
  --compare-url http://127.0.0.1:50151 --op get --concurrency 64
"$bin"/rookery --url http://127.0.0.1:50151 --namespace bench bench --op idle-subscribers \
  --keys 10000 --connections 4 --admin-url http://127.0.0.1:50152
peers
