#!/usr/bin/env bash
# Installs what `make run`, `make test` and `make bench` need and a fresh Debian/Ubuntu machine
# with Rust lacks: redis-server and redis-benchmark (Debian's redis-server / redis-tools),
# redis-sentinel (the Sentinel failover test runs three), and
# the rustfmt and clippy components, openssl (the Redis TLS test and scripts/dev-credentials.sh
# make throwaway certificates with it), Python's venv (the deployment checks and the Python
# example run in virtualenvs), and Node.js with npm (the Node example). With --peers (for
# `make bench` only, never `make test`), also the peers the bench compares with: NATS
# (nats-server) and etcd (etcd-server). With --deploy (scripts/validate-deploy.sh asks for it),
# only what the deploy/ checks need beyond Python: promtool (Debian's prometheus package), which
# checks and unit-tests the alerting rules, and kubectl with kustomize v5, which renders the
# manifests; kubectl cannot come from Debian (its kubernetes-client is 1.20, whose kustomize v2
# reads neither `labels` nor `patches`), so a missing or older one stops this script with a
# hint. Does nothing when everything is there.
set -euo pipefail

need_apt=()
if [ "${1:-}" = "--deploy" ]; then
  command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
  # `kubectl version --client` names its kustomize ("Kustomize Version: v5.5.0"); a kubectl too
  # old to print one has a kustomize too old for these manifests, and no kubectl prints nothing.
  kustomize_major=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p') || true
  if [ "${kustomize_major:-0}" -lt 5 ]; then
    {
      echo "scripts/validate-deploy.sh renders deploy/k8s with 'kubectl kustomize', which needs kubectl 1.27"
      echo "or newer (kustomize v5); found: $(command -v kubectl || echo 'no kubectl')."
      echo "Install kubectl from the Kubernetes project's apt repository, as"
      echo "https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/ shows (Debian's"
      echo "kubernetes-client is 1.20, too old), then run this again."
    } >&2
    exit 1
  fi
else
  command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
  command -v redis-benchmark >/dev/null 2>&1 || need_apt+=(redis-tools)
  command -v redis-sentinel >/dev/null 2>&1 || need_apt+=(redis-sentinel)
  command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
  command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then need_apt+=(python3-venv); fi
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
  command -v npm >/dev/null 2>&1 || need_apt+=(npm)
  if [ "${1:-}" = "--peers" ]; then
    command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
    command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
  fi
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]} (apt-get)..." >&2
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root or sudo to install ${need_apt[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts a system-wide Redis (and Sentinel, NATS, etcd) on install; Rookery never uses
  # them unless told to, and the bench starts its own peers on free ports. Its Prometheus
  # server, though, would take *:9090, the port `make run` serves /metrics on, and only
  # promtool is wanted: the service just installed is stopped and kept from starting at boot.
  if [[ " ${need_apt[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

if [ "${1:-}" = "--rust-components" ]; then
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi
