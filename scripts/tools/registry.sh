# The `registry` binary of CNCF Distribution (the OCI registry server behind the `registry`
# image), built from its Go module with `go install` (its go.mod has no replace directives; no
# prebuilt binary is reachable here). A local plain-HTTP registry the kind node pulls from.
#
#   registry-$REGISTRY_VERSION/bin/registry
#
# The build is upstream's release build (Dockerfile: CGO_ENABLED=0, -trimpath, "-s -w", no build
# tags) with its version ldflags (version.revision, unset here, is printed nowhere).
# shellcheck shell=bash

# registry_build <dir>: go install the registry into <dir>/bin.
registry_build() {
  local dir=$1 mod=github.com/distribution/distribution/v3 v="v${REGISTRY_VERSION}"
  log "registry: go install ${mod}/cmd/registry@${v} (cold: about a minute on 2 cores)"
  # As upstream's Dockerfile: the version without its v, the main package's module path.
  CGO_ENABLED=0 GOBIN="$dir/bin" go install -trimpath \
    -ldflags "-s -w -X ${mod}/version.version=${REGISTRY_VERSION} -X ${mod}/version.mainpkg=${mod}" \
    "${mod}/cmd/registry@${v}" ||
    die "registry: go install ${mod}/cmd/registry@${v} failed (module not served, or Go older than its go.mod asks? see above)"
  # `registry --version` prints "<argv0> <module> <version>".
  local out
  out=$("$dir/bin/registry" --version)
  [ "${out#* }" = "${mod} ${REGISTRY_VERSION}" ] || die "registry: \`registry --version\` says '${out}', not ${REGISTRY_VERSION}"
}

install_registry() {
  local dir="${JOURNEY_CACHE}/registry-${REGISTRY_VERSION}"
  build_once "$dir" "$(inputs_hash "REGISTRY_VERSION=${REGISTRY_VERSION}" "$(declare -f registry_build)")" \
    registry_build "registry: ${REGISTRY_VERSION}"
  write_env registry "REGISTRY=$dir/bin/registry" "REGISTRY_VERSION=${REGISTRY_VERSION}"
}
