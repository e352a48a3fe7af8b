# A real Kubernetes control plane as local binaries: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl and kwok (fake nodes whose pods turn Ready),
# built from their Go modules by the tools module tools/k8s (no prebuilt downloads are reachable
# here), plus kwok's stock Stage definitions copied out of its module.
#
# tools/k8s/go.mod pins the versions; they must match K8S_VERSION, ETCD_VERSION and KWOK_VERSION
# in tools/versions.env (checked below). To bump: edit both, then in tools/k8s run
#   go get k8s.io/kubernetes@vX go.etcd.io/etcd/server/v3@vY sigs.k8s.io/kwok@vZ
# with every `replace` of a k8s.io staging module moved to v0.<minor>.<patch>, and `go mod tidy`.
# The etcd version is the one k8s.io/kubernetes itself requires: any other moves the shared
# dependencies (grpc, otel, x/net) of the Kubernetes binaries away from what upstream tested.
# shellcheck shell=bash

# controlplane_fingerprint: what the install was built from; a change rebuilds it.
controlplane_fingerprint() {
  local src="${JOURNEY_ROOT}/tools/k8s"
  {
    echo "K8S_VERSION=${K8S_VERSION} ETCD_VERSION=${ETCD_VERSION} KWOK_VERSION=${KWOK_VERSION}"
    cat "$src/go.mod" "$src/go.sum"
    find "$src/cmd" -type f -name '*.go' | LC_ALL=C sort | xargs cat
    declare -f controlplane_build
  } | sha256sum | cut -d' ' -f1
}

# controlplane_build <dir>: build every binary into <dir>/bin and the stages into <dir>/kwok-stages.
controlplane_build() {
  local dir=$1 src="${JOURNEY_ROOT}/tools/k8s"
  local minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  local staging="v0.${K8S_VERSION#*.}"

  # The versions go.mod resolves must be the pinned ones (one source of truth for the rest).
  local want got
  want="v${K8S_VERSION} v${ETCD_VERSION} v${KWOK_VERSION} ${staging}"
  got=$(cd "$src" && go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' \
    k8s.io/kubernetes go.etcd.io/etcd/server/v3 sigs.k8s.io/kwok k8s.io/api | tr '\n' ' ')
  got=${got% }
  [ "$got" = "$want" ] ||
    die "tools/k8s/go.mod resolves '${got}', tools/versions.env wants '${want}' (kubernetes etcd kwok staging): update one of them"

  local pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version
  local ldflags="-s -w"
  local kv
  for kv in "gitVersion=v${K8S_VERSION}" "gitMajor=1" "gitMinor=${minor}" "gitTreeState=clean" \
    "buildDate=$(date -u +%FT%TZ)"; do
    ldflags+=" -X ${pkg}.${kv} -X ${cgo}.${kv}"
  done

  log "controlplane: go build etcd ${ETCD_VERSION}, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl ${K8S_VERSION}, kwok ${KWOK_VERSION} (cold: about 10 minutes on 2 cores)"
  mkdir -p "$dir/bin"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/bin/" \
    ./cmd/etcd \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl \
    sigs.k8s.io/kwok/cmd/kwok)

  # Each binary must say the version it was pinned to.
  "$dir/bin/etcd" --version | grep -q "etcd Version: ${ETCD_VERSION}\$" || die "etcd does not report ${ETCD_VERSION}"
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    [ "$("$dir/bin/$b" --version)" = "Kubernetes v${K8S_VERSION}" ] || die "$b does not report v${K8S_VERSION}"
  done
  "$dir/bin/kubectl" version --client | grep -q "Client Version: v${K8S_VERSION}\$" || die "kubectl does not report v${K8S_VERSION}"
  "$dir/bin/kwok" --version | grep -q "${KWOK_VERSION}" || die "kwok does not report ${KWOK_VERSION}"

  # kwok's stock Stage definitions (node-initialize, node-heartbeat, pod-ready, ...), as shipped
  # in its module under kustomize/stage/, minus tests and kustomize files.
  local kwokdir
  kwokdir=$(cd "$src" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  [ -d "$kwokdir/kustomize/stage" ] || die "kwok module has no kustomize/stage/ (${kwokdir})"
  (cd "$kwokdir/kustomize/stage" &&
    find . -name '*.yaml' ! -path '*/testdata/*' ! -name kustomization.yaml -print0 |
    while IFS= read -r -d '' f; do
      mkdir -p "$dir/kwok-stages/$(dirname "$f")"
      cp "$f" "$dir/kwok-stages/$f"
    done)
  chmod -R u+w "$dir/kwok-stages"
  [ -f "$dir/kwok-stages/pod/fast/pod-ready.yaml" ] && [ -f "$dir/kwok-stages/node/fast/node-initialize.yaml" ] ||
    die "kwok stages missing pod/fast/pod-ready.yaml or node/fast/node-initialize.yaml"
}

install_controlplane() {
  local dir="${JOURNEY_CACHE}/k8s-${K8S_VERSION}"
  local fp
  fp=$(controlplane_fingerprint)
  build_once "$dir" "$fp" controlplane_build \
    "controlplane: kubernetes ${K8S_VERSION}, etcd ${ETCD_VERSION}, kwok ${KWOK_VERSION}"
  local bin="$dir/bin"
  write_env controlplane "ETCD=$bin/etcd" "KUBE_APISERVER=$bin/kube-apiserver" \
    "KUBE_CONTROLLER_MANAGER=$bin/kube-controller-manager" "KUBE_SCHEDULER=$bin/kube-scheduler" \
    "KWOK=$bin/kwok" "KUBECTL=$bin/kubectl" "KWOK_STAGES=$dir/kwok-stages" \
    "K8S_VERSION=${K8S_VERSION}" "ETCD_VERSION=${ETCD_VERSION}" "KWOK_VERSION=${KWOK_VERSION}"
}
