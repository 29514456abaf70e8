#!/usr/bin/env bash
# Lint, render and validate the Helm chart helm/lark-bridge, offline once the tools are cached.
#
#   .ci/helm.sh                  # default values + every helm/lark-bridge/ci/*-values.yaml
#   KUBE_VERSIONS=1.30.0 .ci/helm.sh
#   KEEP_RENDERED=1 .ci/helm.sh  # keep the rendered manifests and print where they are
#
# Tools, cached under ${XDG_CACHE_HOME:-$HOME/.cache}/lark-bridge and built/installed only once:
#   - helm $HELM_VERSION, built from source with `go install` (needs Go >= 1.26 and the Go module
#     proxy on the first run);
#   - kubernetes-validate $KUBERNETES_VALIDATE_VERSION from PyPI in its own venv. Its wheel ships
#     the Kubernetes JSON schemas (1.25 ... 1.37), so validation needs no network.
#
# kubernetes-validate only *warns* (exit 0) when it has no schema for a kind, which would also let
# a mistyped or removed apiVersion pass. So the check below treats a missing schema as an error,
# except for the CRD kinds in IGNORED_KINDS (ServiceMonitor and PrometheusRule,
# monitoring.coreos.com/v1; the rules themselves are checked by tests/integration/test_monitoring.py
# with Prometheus's own rule parser), which are
# reported as skipped.
set -euo pipefail

HELM_VERSION=v3.22.0
# Kubernetes minor of the client-go that helm $HELM_VERSION builds with (k8s.io/client-go v0.37):
# helm's Makefile bakes it in as the default `--kube-version`; plain `go install` would leave 1.20.
HELM_K8S_MINOR=37
KUBERNETES_VALIDATE_VERSION=1.37.0
# Oldest Kubernetes we validate against and the newest schema kubernetes-validate ships.
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.30.0 1.37.0"}
IGNORED_KINDS="monitoring.coreos.com/v1/ServiceMonitor monitoring.coreos.com/v1/PrometheusRule"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART=$ROOT/helm/lark-bridge
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/lark-bridge
BIN=$CACHE/bin
HELM=$BIN/helm
KV_VENV=$CACHE/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION

log() { printf '==> %s\n' "$*" >&2; }

install_helm() {
  if [[ -x $HELM ]] && [[ $("$HELM" version --template '{{.Version}}' 2>/dev/null) == "$HELM_VERSION" ]]; then
    return
  fi
  log "building helm $HELM_VERSION with $(go version) (takes a few minutes the first time)"
  mkdir -p "$BIN"
  # The same -X flags as helm's Makefile, so that `helm version` and the default Kubernetes
  # version match an official release build.
  local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  local pkg
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  GOBIN=$BIN go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

install_kubernetes_validate() {
  if [[ -x $KV_VENV/bin/python ]] \
      && "$KV_VENV/bin/python" -c "import kubernetes_validate, sys; sys.exit(kubernetes_validate.__version__ != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
    return
  fi
  log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $KV_VENV"
  rm -rf "$KV_VENV"
  "${PYTHON:-python3}" -m venv "$KV_VENV"
  "$KV_VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
}

validate_manifests() {  # validate_manifests <kube-version> <file>...
  "$KV_VENV/bin/python" - "$IGNORED_KINDS" "$@" <<'PY'
import sys

import yaml
import kubernetes_validate as kv

ignored = set(sys.argv[1].split())
version = sys.argv[2]
failed = 0
for path in sys.argv[3:]:
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')} ({doc.get('apiVersion')})"
        if f"{doc.get('apiVersion')}/{doc.get('kind')}" in ignored:
            print(f"  skip  {what}: CRD, no schema in kubernetes-validate")
            continue
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as e:
            where = ".".join(str(p) for p in e.path)
            print(f"  FAIL  {path}: {what}: {where}: {e.message}")
            failed = 1
        except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
            print(f"  FAIL  {path}: {what}: no schema for Kubernetes {version}: {getattr(e, 'message', e)}")
            failed = 1
        else:
            print(f"  ok    {what}")
sys.exit(failed)
PY
}

main() {
  install_helm
  install_kubernetes_validate
  log "$("$HELM" version --short) / kubernetes-validate $("$KV_VENV/bin/python" -c 'import kubernetes_validate as k; print(k.__version__)')"

  out=$(mktemp -d)  # global: the EXIT trap reads it after main returns
  if [[ -n ${KEEP_RENDERED:-} ]]; then
    log "rendered manifests are kept in $out"
  else
    trap 'rm -rf "$out"' EXIT
  fi

  # "default" = the chart's values.yaml alone; then each CI values file on top of it.
  local -a cases=(default)
  local f
  for f in "$CHART"/ci/*-values.yaml; do cases+=("$f"); done

  local case name kube rc=0
  local -a args
  for case in "${cases[@]}"; do
    if [[ $case == default ]]; then
      name=chart-defaults; args=()
    else
      name=$(basename "$case" .yaml); args=(--values "$case")
    fi
    for kube in $KUBE_VERSIONS; do
      log "$name: helm lint --strict (Kubernetes $kube)"
      "$HELM" lint --strict --kube-version "$kube" "$CHART" "${args[@]}" || rc=1
      log "$name: helm template + kubernetes-validate --strict (Kubernetes $kube)"
      if "$HELM" template ci-release "$CHART" --namespace lark-bridge --kube-version "$kube" \
          "${args[@]}" >"$out/$name-$kube.yaml"; then
        validate_manifests "$kube" "$out/$name-$kube.yaml" || rc=1
      else
        rc=1
      fi
    done
  done

  if [[ $rc -ne 0 ]]; then
    log "FAILED"
    return "$rc"
  fi
  log "chart OK (HELM=$HELM for: python -m pytest tests/helm)"
}

main "$@"
