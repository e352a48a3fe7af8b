# The binaries of a real Kubernetes node (pods run in containers, not faked by kwok): containerd
# with its runc shim and ctr, the CNI plugins containerd calls, kubelet, kube-proxy and CoreDNS,
# each built from its Go module (no prebuilt downloads are reachable here); runc and iptables
# come from Debian (runc needs cgo and libseccomp to build, and Debian's is patched for its CVEs).
#
# Each part has its own versioned dir, so a bump rebuilds only that part, beside the old one:
#   node-containerd-$CONTAINERD_VERSION/bin      containerd, containerd-shim-runc-v2, ctr
#   node-cni-plugins-$CNI_PLUGINS_VERSION/cni-bin bridge, host-local, loopback, portmap
#   node-k8s-$K8S_VERSION/bin                    kubelet, kube-proxy (the tools/k8s module)
#   node-coredns-$COREDNS_VERSION/bin            coredns (the tools/coredns module)
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

# Only the plugins the node's conflist names (bridge + host-local IPAM, portmap for hostPort) and
# loopback, which containerd runs for every pod. The dir holds nothing else: it is CNI's bin dir,
# and a plugin's file name is its CNI `type`.
node_build_cni() {
  local dir=$1 v="v${CNI_PLUGINS_VERSION}" mod=github.com/containernetworking/plugins
  local pkgs=(main/bridge ipam/host-local main/loopback meta/portmap) p args=()
  for p in "${pkgs[@]}"; do args+=("${mod}/plugins/${p}@${v}"); done
  log "node: go install ${args[*]} (cold: under a minute)"
  CGO_ENABLED=0 GOBIN="$dir/cni-bin" go install -trimpath \
    -ldflags "-s -w -X ${mod}/pkg/utils/buildversion.BuildVersion=${v}" "${args[@]}" ||
    die "node: go install of the CNI plugins ${v} failed (they need Go >= 1.26.8; see above)"
  # Without CNI_COMMAND a plugin prints "CNI <name> plugin <version>"; VERSION must answer JSON.
  local out
  for p in bridge host-local loopback portmap; do
    out=$("$dir/cni-bin/$p" 2>&1 </dev/null)
    grep -qx "CNI $p plugin ${v}" <<<"$out" || die "node: CNI plugin $p does not report ${v}: ${out}"
    out=$(CNI_COMMAND=VERSION "$dir/cni-bin/$p" </dev/null)
    grep -q '"supportedVersions"' <<<"$out" || die "node: CNI plugin $p does not answer CNI_COMMAND=VERSION: ${out}"
  done
}

# kubelet and kube-proxy from the control plane's module, with the same version ldflags as
# scripts/tools/controlplane.sh (else they report v0.0.0). Upstream links kubelet with cgo only for
# the libc DNS resolver and user lookup; Go's own serve here, and share the control plane's cache.
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
  log "node: go build kubelet, kube-proxy ${K8S_VERSION} in tools/k8s (cold: about 8 minutes on 2 cores, under 1 after the control plane's build)"
  mkdir -p "$dir/bin"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$dir/bin/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy) ||
    die "node: go build of kubelet/kube-proxy failed in tools/k8s (see above; after a bump run go mod tidy there)"
  local b
  for b in kubelet kube-proxy; do
    [ "$("$dir/bin/$b" --version)" = "Kubernetes v${K8S_VERSION}" ] || die "node: $b does not report v${K8S_VERSION}"
  done
}

# CoreDNS from the wrapper module tools/coredns (a main with only the plugins the node uses).
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
  for p in bind cache errors forward health kubernetes loadbalance log loop ready reload; do
    grep -qx "${p}" <<<"$out" || die "node: coredns lacks the plugin ${p}: ${out}"
  done
}

# runc and iptables (kube-proxy's iptables mode runs iptables, iptables-save and iptables-restore)
# from Debian.
node_host_packages() {
  local missing=() b
  [ -x /usr/sbin/runc ] || missing+=(runc)
  for b in iptables iptables-save iptables-restore; do
    [ -x "/usr/sbin/$b" ] || { missing+=(iptables); break; }
  done
  [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
  [ -x /usr/sbin/runc ] || die "node: /usr/sbin/runc missing after installing runc"
  [ -x /usr/sbin/iptables ] || die "node: /usr/sbin/iptables missing after installing iptables"
  local runc
  runc=$(/usr/sbin/runc --version)
  log "node: ${runc%%$'\n'*}, $(/usr/sbin/iptables --version) (Debian)"
}

install_node() {
  local c="${JOURNEY_CACHE}/node-containerd-${CONTAINERD_VERSION}"
  local n="${JOURNEY_CACHE}/node-cni-plugins-${CNI_PLUGINS_VERSION}"
  local k="${JOURNEY_CACHE}/node-k8s-${K8S_VERSION}"
  local d="${JOURNEY_CACHE}/node-coredns-${COREDNS_VERSION}"
  local fp

  node_host_packages

  fp=$(inputs_hash "CONTAINERD_VERSION=${CONTAINERD_VERSION}" "$(declare -f node_build_containerd)")
  build_once "$c" "$fp" node_build_containerd "node: containerd ${CONTAINERD_VERSION}"

  fp=$(inputs_hash "CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION}" "$(declare -f node_build_cni)")
  build_once "$n" "$fp" node_build_cni "node: CNI plugins ${CNI_PLUGINS_VERSION}"

  fp=$(inputs_hash "K8S_VERSION=${K8S_VERSION}" "$(declare -f node_build_k8s)" \
    "$(cat "${JOURNEY_ROOT}/tools/k8s/go.mod" "${JOURNEY_ROOT}/tools/k8s/go.sum")")
  build_once "$k" "$fp" node_build_k8s "node: kubelet, kube-proxy ${K8S_VERSION}"

  fp=$(inputs_hash "COREDNS_VERSION=${COREDNS_VERSION}" "$(declare -f node_build_coredns)" \
    "$(cd "${JOURNEY_ROOT}/tools/coredns" && cat go.mod go.sum ./*.go)")
  build_once "$d" "$fp" node_build_coredns "node: coredns ${COREDNS_VERSION}"

  write_env node "CONTAINERD=$c/bin/containerd" "CONTAINERD_SHIM=$c/bin/containerd-shim-runc-v2" \
    "CTR=$c/bin/ctr" "CNI_BIN_DIR=$n/cni-bin" "KUBELET=$k/bin/kubelet" "KUBE_PROXY=$k/bin/kube-proxy" \
    "COREDNS=$d/bin/coredns" "RUNC=/usr/sbin/runc" "IPTABLES=/usr/sbin/iptables" \
    "CONTAINERD_VERSION=${CONTAINERD_VERSION}" "CNI_PLUGINS_VERSION=${CNI_PLUGINS_VERSION}" \
    "COREDNS_VERSION=${COREDNS_VERSION}" "PAUSE_IMAGE=${PAUSE_IMAGE}"
}
