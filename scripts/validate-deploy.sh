#!/usr/bin/env bash
# Checks deploy/ offline (no Docker, no cluster), as `make test` runs it:
#   - yamllint on every YAML file;
#   - the base and each overlay rendered by real kustomize (`kubectl kustomize`, what
#     `kubectl apply -k` applies), validated against the Kubernetes schemas
#     (kubernetes-validate --strict), then checkov on the rendered manifests and the Dockerfile,
#     where every skipped check carries its reason in the manifest;
#   - the Prometheus rules in deploy/observability/: `promtool check rules`, and `promtool test
#     rules` on their unit tests, which fire and clear every alert;
#   - scripts/check_dashboard_metrics.py: every metric the Grafana dashboard and the rules query
#     is one the server exports (read from server/src); and promtool parses the dashboard's
#     queries as well.
# The Python tools live in a virtualenv under Cargo's target directory, installed on first use
# from deploy/requirements.txt; promtool and kubectl come from scripts/ensure-tools.sh --deploy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-tools.sh --deploy
# shellcheck source=scripts/target-dir.sh
. scripts/target-dir.sh

venv="$target_dir/deploy-venv"
stamp="$venv/.requirements"
if ! cmp -s deploy/requirements.txt "$stamp" 2>/dev/null; then
  echo "installing the deployment checkers into $venv..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements.txt
  cp deploy/requirements.txt "$stamp"
fi
# Emptied first: the render of an overlay since removed must not be validated again.
out="$target_dir/deploy-rendered"
rm -rf "$out"
mkdir -p "$out"

"$venv/bin/yamllint" --strict -c deploy/.yamllint deploy

rendered=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  name=$(basename "$dir")
  kubectl kustomize "$dir" >"$out/$name.yaml"
  "$venv/bin/kubernetes-validate" --strict --quiet "$out/$name.yaml"
  rendered+=("$out/$name.yaml")
done

# --skip-download: no network; the checks themselves are bundled.
checkov() {
  "$venv/bin/checkov" --quiet --compact --skip-download "$@"
}
files=()
for file in "${rendered[@]}"; do files+=(-f "$file"); done
checkov --framework kubernetes "${files[@]}"
checkov --framework dockerfile -f deploy/Dockerfile

promtool check rules deploy/observability/rookery-alerts.yaml
# The test file names its rule file relative to itself.
promtool test rules deploy/observability/rookery-alerts.test.yaml
"$venv/bin/python" scripts/check_dashboard_metrics.py --write-rules "$out/dashboard-queries.yaml"
# The dashboard's queries, parsed by Prometheus itself too.
promtool check rules "$out/dashboard-queries.yaml" >/dev/null

echo "deploy/: yamllint, kustomize, Kubernetes schemas, checkov, promtool (rules and their tests) and the" \
  "dashboard's metrics all pass (${rendered[*]})"
