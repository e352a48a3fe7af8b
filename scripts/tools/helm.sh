# Helm, built from its Go module (no prebuilt downloads are reachable here): Helm 4 (HELM), what
# the tests and the README use, and Helm 3 (HELM3), the other major version users run, which
# skaffold 2.16 also needs (it asks `helm version --client`, a flag Helm 4 removed).
# helm-docs (HELM_DOCS) generates the chart's README from the `# --` comments in values.yaml.
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

# helm_docs_build <dir>: go install helm-docs into <dir>/bin; its version comes from -X main.version.
helm_docs_build() {
  local dir=$1 mod=github.com/norwoodj/helm-docs v="v${HELM_DOCS_VERSION}"
  log "helm-docs: go install ${mod}/cmd/helm-docs@${v} (cold: under a minute)"
  CGO_ENABLED=0 GOBIN="$dir/bin" go install -trimpath -ldflags "-s -w -X main.version=${HELM_DOCS_VERSION}" \
    "${mod}/cmd/helm-docs@${v}" ||
    die "helm-docs: go install ${mod}/cmd/helm-docs@${v} failed (module not served, or Go too old? see above)"
  "$dir/bin/helm-docs" --version | grep -qF "${HELM_DOCS_VERSION}" ||
    die "helm-docs: \`helm-docs --version\` does not name ${HELM_DOCS_VERSION}"
}

install_helm() {
  helm_build "${HELM_VERSION}"
  helm_build "${HELM3_VERSION}"
  local docs="${JOURNEY_CACHE}/helm-docs-${HELM_DOCS_VERSION}"
  build_once "$docs" "$(inputs_hash "HELM_DOCS_VERSION=${HELM_DOCS_VERSION}" "$(declare -f helm_docs_build)")" \
    helm_docs_build "helm-docs: ${HELM_DOCS_VERSION}"
  write_env helm "HELM=${JOURNEY_CACHE}/helm-${HELM_VERSION}/helm" "HELM_VERSION=${HELM_VERSION}" \
    "HELM3=${JOURNEY_CACHE}/helm-${HELM3_VERSION}/helm" "HELM3_VERSION=${HELM3_VERSION}" \
    "HELM_DOCS=${docs}/bin/helm-docs" "HELM_DOCS_VERSION=${HELM_DOCS_VERSION}"
}
