# Helm, built from its Go module (no prebuilt downloads are reachable here).
# shellcheck shell=bash
install_helm() {
  local dir="${JOURNEY_CACHE}/helm-${HELM_VERSION}"
  if ! installed "$dir"; then
    rm -rf "$dir"; mkdir -p "$dir"
    local major=${HELM_VERSION%%.*}
    log "helm: go install helm.sh/helm/v${major}/cmd/helm@v${HELM_VERSION}"
    GOBIN="$dir" CGO_ENABLED=0 go install -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v${major}/internal/version.version=v${HELM_VERSION}" \
      "helm.sh/helm/v${major}/cmd/helm@v${HELM_VERSION}"
    mark_installed "$dir"
  else
    log "helm: ${HELM_VERSION} already installed"
  fi
  write_env helm "HELM=$dir/helm" "HELM_VERSION=${HELM_VERSION}"
}
