# The binaries of the kind node image (scripts/kind-node.sh) that do not come with the control
# plane's (scripts/tools/controlplane.sh: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl), each built from its Go module (no prebuilt downloads are reachable
# here). runc comes from Debian, inside the node image itself.
#
# Each part has its own versioned dir, so a bump rebuilds only that part, beside the old one:
#   node-containerd-$CONTAINERD_VERSION/bin       containerd, containerd-shim-runc-v2, ctr
#   node-cni-plugins-$CNI_PLUGINS_VERSION/cni-bin host-local, loopback, ptp, portmap (kind's set)
#   node-k8s-$K8S_VERSION/bin                     kubeadm, kubelet, kube-proxy (the tools/k8s module)
#   node-coredns-$COREDNS_VERSION/bin             coredns (the tools/coredns module)
#   node-crictl-$CRICTL_VERSION/bin               crictl (sigs.k8s.io/cri-tools)
#   node-local-path-$LOCAL_PATH_PROVISIONER_VERSION/bin  local-path-provisioner (rancher)
#   node-kindnetd/bin                             kindnetd: Journey's stand-in (tools/kindnetd)
# `.fingerprint` holds a hash of what a part was built from (pins, build commands, and the local
# module's files): when it differs the part is rebuilt in place.
# shellcheck shell=bash

# containerd as upstream's Makefile builds it, minus cgo: CGO_ENABLED=0 already leaves out btrfs
# (its snapshotter needs cgo), the tags drop the devmapper and zfs snapshotters and the urfave/cli
# doc generator; CRI stays in. Without the -X flag the version would read "2.4.2+unknown".
node_build_containerd() {
  local dir=$1 v="v${CONTAINERD_VERSION}" mod=github.com/containerd/containerd/v2
  log "node: go install ${mod}/cmd/{containerd,containerd-shim-runc-v2,ctr}@${v} (cold: about 2 minutes on 2 cores)"
  CGO_ENABLED=0 GOBIN="$dir/bin" go install -trimpath \
    -tags "no_btrfs no_devmapper no_zfs urfave_cli_no_docs" \
    -ldflags "-s -w -X ${mod}/version.Version=${v}" \
    "${mod}/cmd/containerd@${v}" "${mod}/cmd/containerd-shim-runc-v2@${v}" "${mod}/cmd/ctr@${v}" ||
    die "node: go install of containerd ${v} failed (module not served, or Go older than its go.mod asks?)"
  # Outputs are captured before grep: `cmd | grep -q` fails under pipefail when grep exits early
  # and cmd dies of SIGPIPE writing its next line.
  local out
  out=$("$dir/bin/containerd" --version)
  grep -q " ${v}\( \|\$\)" <<<"$out" || die "node: containerd does not report ${v}: ${out}"
  out=$("$dir/bin/ctr" --version)
  grep -q " ${v}\$" <<<"$out" || die "node: ctr does not report ${v}: ${out}"
  out=$("$dir/bin/containerd-shim-runc-v2" -v)
  grep -q "Version: *${v}\$" <<<"$out" || die "node: containerd-shim-runc-v2 does not report ${v}: ${out}"
}

# The plugins kind's base image puts in /opt/cni/bin: host-local (IPAM), loopback (containerd
# runs it for every pod), ptp (kindnet's pod interfaces) and portmap (hostPort). A plugin's file
# name is its CNI `type`.
NODE_CNI_PLUGINS=(ipam/host-local main/loopback main/ptp meta/portmap)

node_build_cni() {
  local dir=$1 v="v${CNI_PLUGINS_VERSION}" mod=github.com/containernetworking/plugins
  local p args=()
  for p in "${NODE_CNI_PLUGINS[@]}"; do args+=("${mod}/plugins/${p}@${v}"); done
  log "node: go install ${args[*]} (cold: under a minute)"
  CGO_ENABLED=0 GOBIN="$dir/cni-bin" go install -trimpath \
    -ldflags "-s -w -X ${mod}/pkg/utils/buildversion.BuildVersion=${v}" "${args[@]}" ||
    die "node: go install of the CNI plugins ${v} failed (they need Go >= 1.26.8; see above)"
  # Without CNI_COMMAND a plugin prints "CNI <name> plugin <version>"; VERSION must answer JSON.
  local out
  for p in "${NODE_CNI_PLUGINS[@]}"; do
    p=${p#*/}
    out=$("$dir/cni-bin/$p" 2>&1 </dev/null)
    grep -qx "CNI $p plugin ${v}" <<<"$out" || die "node: CNI plugin $p does not report ${v}: ${out}"
    out=$(CNI_COMMAND=VERSION "$dir/cni-bin/$p" </dev/null)
    grep -q '"supportedVersions"' <<<"$out" || die "node: CNI plugin $p does not answer CNI_COMMAND=VERSION: ${out}"
  done
}

# kubeadm, kubelet and kube-proxy from the control plane's module, with the same version ldflags
# as scripts/tools/controlplane.sh (else they report v0.0.0). Upstream links kubelet with cgo
# only for the libc DNS resolver and user lookup; Go's own serve here, and share the control
# plane's cache.
node_build_k8s() {
  local dir=$1 src="${JOURNEY_ROOT}/tools/k8s"
  local minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  local staging="v0.${K8S_VERSION#*.}" want got
  want="v${K8S_VERSION} ${staging} ${staging}"
  got=$(cd "$src" && go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' \
    k8s.io/kubernetes k8s.io/kubelet k8s.io/kube-proxy | tr '\n' ' ')
  got=${got% }
  [ "$got" = "$want" ] ||
    die "node: tools/k8s/go.mod resolves '${got}', tools/versions.env wants '${want}' (kubernetes kubelet kube-proxy): update one of them"

  local pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version
  local ldflags="-s -w" kv
  for kv in "gitVersion=v${K8S_VERSION}" "gitMajor=1" "gitMinor=${minor}" "gitTreeState=clean" \
    "buildDate=$(date -u +%FT%TZ)"; do
    ldflags+=" -X ${pkg}.${kv} -X ${cgo}.${kv}"
  done
  log "node: go build kubeadm, kubelet, kube-proxy ${K8S_VERSION} in tools/k8s (cold: about 8 minutes on 2 cores, 1 to 2 after the control plane's build)"
  mkdir -p "$dir/bin"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/bin/" \
    k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy) ||
    die "node: go build of kubeadm/kubelet/kube-proxy failed in tools/k8s (see above; after a bump run go mod tidy there)"
  local b
  for b in kubelet kube-proxy; do
    [ "$("$dir/bin/$b" --version)" = "Kubernetes v${K8S_VERSION}" ] || die "node: $b does not report v${K8S_VERSION}"
  done
  [ "$("$dir/bin/kubeadm" version -o short)" = "v${K8S_VERSION}" ] || die "node: kubeadm does not report v${K8S_VERSION}"
}

# CoreDNS from the wrapper module tools/coredns (a main with only the plugins kubeadm's Corefile
# uses); COREDNS_VERSION is the one kubeadm deploys (`kubeadm config images list`).
node_build_coredns() {
  local dir=$1 src="${JOURNEY_ROOT}/tools/coredns" got
  got=$(cd "$src" && go list -m -f '{{.Version}}' github.com/coredns/coredns)
  [ "$got" = "v${COREDNS_VERSION}" ] ||
    die "node: tools/coredns/go.mod resolves coredns ${got}, tools/versions.env wants v${COREDNS_VERSION}: update one of them"
  log "node: go build coredns ${COREDNS_VERSION} in tools/coredns (cold: about 2 minutes on 2 cores)"
  mkdir -p "$dir/bin"
  # -buildvcs=false: the binary must not depend on the state of the Journey checkout around it.
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$dir/bin/coredns" .) ||
    die "node: go build of coredns failed in tools/coredns (see above; after a bump run go mod tidy there)"
  local out p
  out=$("$dir/bin/coredns" -version)
  grep -qx "CoreDNS-${COREDNS_VERSION}" <<<"$out" || die "node: coredns does not report ${COREDNS_VERSION}: ${out}"
  out=$("$dir/bin/coredns" -plugins)
  # Every plugin of kubeadm's Corefile (`prometheus` is the metrics plugin).
  for p in cache errors forward health kubernetes loadbalance loop prometheus ready reload; do
    grep -qx "${p}" <<<"$out" || die "node: coredns lacks the plugin ${p}: ${out}"
  done
}

# crictl, as kind's base image carries it (its version flag as cri-tools' Makefile sets it).
node_build_crictl() {
  local dir=$1 v="v${CRICTL_VERSION}" mod=sigs.k8s.io/cri-tools
  log "node: go install ${mod}/cmd/crictl@${v} (cold: about a minute on 2 cores)"
  CGO_ENABLED=0 GOBIN="$dir/bin" go install -trimpath \
    -ldflags "-s -w -X ${mod}/pkg/version.Version=${v}" "${mod}/cmd/crictl@${v}" ||
    die "node: go install ${mod}/cmd/crictl@${v} failed (module not served? see above)"
  local out
  out=$("$dir/bin/crictl" --version)
  [ "$out" = "crictl version ${v}" ] || die "node: crictl says '${out}', not ${v}"
}

# The local-path provisioner kind's default StorageClass runs (rancher/local-path-provisioner;
# kind builds its image from upstream's source with upstream's script, which sets main.VERSION).
node_build_local_path() {
  local dir=$1 v="v${LOCAL_PATH_PROVISIONER_VERSION}" mod=github.com/rancher/local-path-provisioner
  log "node: go install ${mod}@${v} (cold: about 2 minutes on 2 cores)"
  CGO_ENABLED=0 GOBIN="$dir/bin" go install -trimpath -ldflags "-s -w -X main.VERSION=${v}" "${mod}@${v}" ||
    die "node: go install ${mod}@${v} failed (module not served? see above)"
  local out
  out=$("$dir/bin/local-path-provisioner" --version 2>&1)
  grep -q "${v}" <<<"$out" || die "node: local-path-provisioner says '${out}', not ${v}"
}

# kindnetd: Journey's stand-in for kind's CNI daemon (tools/kindnetd; see its package comment for
# why and how it differs). Its unit tests run first: a failing test fails the build.
node_build_kindnetd() {
  local dir=$1 src="${JOURNEY_ROOT}/tools/kindnetd"
  log "node: go test and go build kindnetd (the stand-in) in tools/kindnetd (cold: about 2 minutes on 2 cores)"
  (cd "$src" && go test -count=1 ./...) || die "node: the kindnetd stand-in's tests failed in tools/kindnetd (see above)"
  mkdir -p "$dir/bin"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$dir/bin/kindnetd" .) ||
    die "node: go build of kindnetd failed in tools/kindnetd (see above)"
  "$dir/bin/kindnetd" --help >/dev/null 2>&1 || die "node: kindnetd --help failed"
}

install_node() {
  local c="${JOURNEY_CACHE}/node-containerd-${CONTAINERD_VERSION}"
  local n="${JOURNEY_CACHE}/node-cni-plugins-${CNI_PLUGINS_VERSION}"
  local k="${JOURNEY_CACHE}/node-k8s-${K8S_VERSION}"
  local d="${JOURNEY_CACHE}/node-coredns-${COREDNS_VERSION}"
  local r="${JOURNEY_CACHE}/node-crictl-${CRICTL_VERSION}"
  local l="${JOURNEY_CACHE}/node-local-path-${LOCAL_PATH_PROVISIONER_VERSION}"
  local w="${JOURNEY_CACHE}/node-kindnetd"
  local fp

  fp=$(inputs_hash "CONTAINERD_VERSION=${CONTAINERD_VERSION}" "$(declare -f node_build_containerd)")
  build_once "$c" "$fp" node_build_containerd "node: containerd ${CONTAINERD_VERSION}"

  fp=$(inputs_hash "CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION}" "${NODE_CNI_PLUGINS[*]}" "$(declare -f node_build_cni)")
  build_once "$n" "$fp" node_build_cni "node: CNI plugins ${CNI_PLUGINS_VERSION}"

  fp=$(inputs_hash "K8S_VERSION=${K8S_VERSION}" "$(declare -f node_build_k8s)" \
    "$(cat "${JOURNEY_ROOT}/tools/k8s/go.mod" "${JOURNEY_ROOT}/tools/k8s/go.sum")")
  build_once "$k" "$fp" node_build_k8s "node: kubeadm, kubelet, kube-proxy ${K8S_VERSION}"

  fp=$(inputs_hash "COREDNS_VERSION=${COREDNS_VERSION}" "$(declare -f node_build_coredns)" \
    "$(cd "${JOURNEY_ROOT}/tools/coredns" && cat go.mod go.sum ./*.go)")
  build_once "$d" "$fp" node_build_coredns "node: coredns ${COREDNS_VERSION}"

  fp=$(inputs_hash "CRICTL_VERSION=${CRICTL_VERSION}" "$(declare -f node_build_crictl)")
  build_once "$r" "$fp" node_build_crictl "node: crictl ${CRICTL_VERSION}"

  fp=$(inputs_hash "LOCAL_PATH_PROVISIONER_VERSION=${LOCAL_PATH_PROVISIONER_VERSION}" "$(declare -f node_build_local_path)")
  build_once "$l" "$fp" node_build_local_path "node: local-path-provisioner ${LOCAL_PATH_PROVISIONER_VERSION}"

  fp=$(inputs_hash "$(declare -f node_build_kindnetd)" \
    "$(cd "${JOURNEY_ROOT}/tools/kindnetd" && cat go.mod go.sum ./*.go)")
  build_once "$w" "$fp" node_build_kindnetd "node: kindnetd (stand-in)"

  write_env node "CONTAINERD=$c/bin/containerd" "CONTAINERD_SHIM=$c/bin/containerd-shim-runc-v2" \
    "CTR=$c/bin/ctr" "CNI_BIN_DIR=$n/cni-bin" "KUBEADM=$k/bin/kubeadm" "KUBELET=$k/bin/kubelet" \
    "KUBE_PROXY=$k/bin/kube-proxy" "COREDNS=$d/bin/coredns" "CRICTL=$r/bin/crictl" \
    "LOCAL_PATH_PROVISIONER=$l/bin/local-path-provisioner" "KINDNETD=$w/bin/kindnetd" \
    "CONTAINERD_VERSION=${CONTAINERD_VERSION}" "CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION}" \
    "COREDNS_VERSION=${COREDNS_VERSION}" "CRICTL_VERSION=${CRICTL_VERSION}" \
    "LOCAL_PATH_PROVISIONER_VERSION=${LOCAL_PATH_PROVISIONER_VERSION}"
}
