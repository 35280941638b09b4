#!/usr/bin/env bash
# Sourced by run.sh, bench.sh and examples.sh: starts a throwaway Redis (noeviction, lazy freeing, no
# persistence, in a temporary directory, on a free port from 6380 up) unless ROOKERY_REDIS_URL
# is set, and stops it when the calling script exits. Exports ROOKERY_REDIS_URL either way.

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if [ -z "${ROOKERY_REDIS_URL:-}" ]; then
  redis_dir=$(mktemp -d -t rookery-redis.XXXXXX)
  redis_port=6380
  while port_in_use "$redis_port"; do redis_port=$((redis_port + 1)); done
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --maxmemory-policy noeviction --lazyfree-lazy-expire yes --lazyfree-lazy-server-del yes \
    --lazyfree-lazy-user-del yes --dir "$redis_dir" --logfile "$redis_dir/redis.log" &
  redis_pid=$!
  trap 'kill "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null; rm -rf "$redis_dir"' EXIT
  for _ in $(seq 100); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.05
  done
  export ROOKERY_REDIS_URL="redis://127.0.0.1:$redis_port"
  echo "started a throwaway Redis at $ROOKERY_REDIS_URL (stopped on exit)" >&2
else
  echo "using Redis at ${ROOKERY_REDIS_URL%%@*}..." >&2
fi
