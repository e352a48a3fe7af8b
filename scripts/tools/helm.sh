# Helm, built from its Go module (no prebuilt downloads are reachable here): Helm 4 (HELM), what
# the tests and the README use, and Helm 3 (HELM3), the other major version users run, which
# skaffold 2.16 also needs (it asks `helm version --client`, a flag Helm 4 removed).
# shellcheck shell=bash
helm_build() {
  local version=$1 dir="${JOURNEY_CACHE}/helm-$1"
  if ! installed "$dir"; then
    rm -rf "$dir"; mkdir -p "$dir"
    local major=${version%%.*}
    log "helm: go install helm.sh/helm/v${major}/cmd/helm@v${version}"
    GOBIN="$dir" CGO_ENABLED=0 go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v${major}/internal/version.version=v${version}" \
      "helm.sh/helm/v${major}/cmd/helm@v${version}"
    mark_installed "$dir"
  else
    log "helm: ${version} already installed"
  fi
}

install_helm() {
  helm_build "${HELM_VERSION}"
  helm_build "${HELM3_VERSION}"
  write_env helm "HELM=${JOURNEY_CACHE}/helm-${HELM_VERSION}/helm" "HELM_VERSION=${HELM_VERSION}" \
    "HELM3=${JOURNEY_CACHE}/helm-${HELM3_VERSION}/helm" "HELM3_VERSION=${HELM3_VERSION}"
}
