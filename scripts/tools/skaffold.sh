# skaffold's JSON schema for the apiVersion skaffold.yaml uses, read from skaffold's Go module
# source (docs-v2/content/en/schemas/). skaffold itself cannot be `go install`ed (its go.mod
# has replace directives) and no prebuilt binary is reachable here: the tests validate
# skaffold.yaml against this schema instead.
# shellcheck shell=bash
install_skaffold() {
  local dir="${JOURNEY_CACHE}/skaffold-${SKAFFOLD_VERSION}"
  local schema="${dir}/${SKAFFOLD_SCHEMA_VERSION}.json"
  if ! installed "$dir" || [ ! -f "$schema" ]; then
    need go "install Go 1.24+ (https://go.dev/doc/install)"
    local module="github.com/GoogleContainerTools/skaffold/v2@v${SKAFFOLD_VERSION}" src
    log "skaffold: go mod download ${module} (for its JSON schemas)"
    src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p') \
      || die "skaffold: go mod download ${module} failed"
    [ -f "${src}/docs-v2/content/en/schemas/${SKAFFOLD_SCHEMA_VERSION}.json" ] \
      || die "skaffold: ${module} has no schema ${SKAFFOLD_SCHEMA_VERSION} (pick another SKAFFOLD_VERSION)"
    mkdir -p "$dir"
    cp "${src}/docs-v2/content/en/schemas/${SKAFFOLD_SCHEMA_VERSION}.json" "$schema"
    chmod 644 "$schema"
    mark_installed "$dir"
  else
    log "skaffold: schema ${SKAFFOLD_SCHEMA_VERSION} already installed"
  fi
  write_env skaffold "SKAFFOLD_SCHEMA=${schema}" "SKAFFOLD_SCHEMA_VERSION=${SKAFFOLD_SCHEMA_VERSION}"
}
