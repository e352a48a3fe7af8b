# kind (sigs.k8s.io/kind), built from its Go module (no replace directives: `go install` works),
# and what its node image is made of that lives in the same module: the files kind's
# images/base/Dockerfile copies into the base image (entrypoint, containerd config, kubelet
# units, ...), and the default CNI and storage manifests `kind build node-image` writes into
# the node image with the images they name (string constants of pkg/build/nodeimage, read out
# by tools/kindconsts). scripts/kind-node.sh assembles the node image from these.
#
#   kind-$KIND_VERSION/bin/kind
#   kind-$KIND_VERSION/base-files/      images/base/files of the module
#   kind-$KIND_VERSION/nodeimage/       defaultCNIManifest, defaultStorageManifest, kindnetdImage,
#                                       storageProvisionerImage, storageHelperImage
#
# To bump: KIND_VERSION in tools/versions.env (and the kind workflow's pin, which the workflow
# test checks). kind's own CI stopped testing cgroup v1 hosts in December 2025: check
# k8s/kind.yaml's notes when bumping.
# shellcheck shell=bash

KIND_MODULE=sigs.k8s.io/kind

kind_build() {
  local dir=$1 v="v${KIND_VERSION}" src
  log "kind: go install ${KIND_MODULE}@${v} (cold: about 30 seconds on 2 cores)"
  CGO_ENABLED=0 GOBIN="$dir/bin" go install -trimpath -ldflags "-s -w" "${KIND_MODULE}@${v}" ||
    die "kind: go install ${KIND_MODULE}@${v} failed (module not served? see above)"
  local out
  out=$("$dir/bin/kind" version)
  grep -q "^kind ${v} " <<<"$out" || die "kind: \`kind version\` says '${out}', not ${v}"

  src=$(go mod download -json "${KIND_MODULE}@${v}" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$src/images/base/files" ] || die "kind: no images/base/files in the ${v} module (${src})"
  cp -r "$src/images/base/files" "$dir/base-files"
  chmod -R u+w "$dir/base-files"
  # (Module zips keep no file modes: scripts/kind-node.sh gives them the Dockerfile's.)
  [ -f "$dir/base-files/usr/local/bin/entrypoint" ] || die "kind: the module's base files lack usr/local/bin/entrypoint"

  local pkg="$src/pkg/build/nodeimage"
  (cd "${JOURNEY_ROOT}/tools/kindconsts" && go run . -out "$dir/nodeimage" \
    "$pkg/const_cni.go" "$pkg/const_storage.go" -- \
    defaultCNIManifest defaultStorageManifest kindnetdImage storageProvisionerImage storageHelperImage) ||
    die "kind: reading the node image's manifests out of ${pkg} failed (their constants moved?)"
  grep -q "image: $(cat "$dir/nodeimage/kindnetdImage")\$" "$dir/nodeimage/defaultCNIManifest" ||
    die "kind: the default CNI manifest does not run $(cat "$dir/nodeimage/kindnetdImage")"
}

install_kind() {
  local dir="${JOURNEY_CACHE}/kind-${KIND_VERSION}" fp
  fp=$(inputs_hash "KIND_VERSION=${KIND_VERSION}" "$(declare -f kind_build)" \
    "$(cat "${JOURNEY_ROOT}/tools/kindconsts/go.mod" "${JOURNEY_ROOT}/tools/kindconsts/main.go")")
  build_once "$dir" "$fp" kind_build "kind: ${KIND_VERSION}"
  write_env kind "KIND=$dir/bin/kind" "KIND_VERSION=${KIND_VERSION}" \
    "KIND_BASE_FILES=$dir/base-files" "KIND_NODEIMAGE=$dir/nodeimage"
}
