#!/usr/bin/env bash
# Checks deploy/ offline (no Docker, no cluster): yamllint on every YAML file; the base and each
# overlay rendered (scripts/kustomize_lite.py) and validated against the Kubernetes schemas
# (kubernetes-validate --strict); checkov on the rendered manifests and the Dockerfile, where
# every skipped check carries its reason in the manifest. The tools live in a virtualenv under
# target/, installed on first use from deploy/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/deploy-venv
stamp="$venv/.requirements"
if ! cmp -s deploy/requirements.txt "$stamp" 2>/dev/null; then
  echo "installing the deployment checkers into $venv..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements.txt
  cp deploy/requirements.txt "$stamp"
fi
out=target/deploy-rendered
mkdir -p "$out"

"$venv/bin/yamllint" --strict -c deploy/.yamllint deploy

rendered=()
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  name=$(basename "$dir")
  "$venv/bin/python" scripts/kustomize_lite.py "$dir" >"$out/$name.yaml"
  "$venv/bin/kubernetes-validate" --strict --quiet "$out/$name.yaml"
  rendered+=("$out/$name.yaml")
done

# --skip-download: no network; the checks themselves are bundled.
checkov() {
  "$venv/bin/checkov" --quiet --compact --skip-download "$@"
}
checkov --framework kubernetes $(printf -- '-f %s ' "${rendered[@]}")
checkov --framework dockerfile -f deploy/Dockerfile
echo "deploy/: yamllint, Kubernetes schemas and checkov all pass (${rendered[*]})"
