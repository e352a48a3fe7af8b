#!/usr/bin/env bash
# kind's node image, kindest/node:v$K8S_VERSION, assembled without a registry (no image or base
# can be pulled here) the way kind builds it:
#
# 1. the images the node carries, under the exact names kubeadm (`kubeadm config images list`)
#    and kind (its containerd config's sandbox image, its CNI and storage manifests) use, built
#    from the binaries scripts/install-tools.sh built (controlplane, node) on local bases;
# 2. the base image of kind's images/base/Dockerfile: Debian bookworm (its systemd 252 still
#    runs on cgroup v1 hosts; kind 0.33's base is trixie) with the same packages, kind's own
#    base files (entrypoint, containerd config, kubelet units) from its module, containerd, runc
#    (Debian's), crictl and the CNI plugins, the same units enabled and removed;
# 3. what `kind build node-image` adds: kubeadm, kubelet and kubectl in /usr/bin, /kind/version,
#    kind's default CNI and storage manifests in /kind/manifests, and the images of step 1
#    imported into the node's containerd (`ctr images import`, pinned, not unpacked), in a
#    container of the base that is then committed.
#
#   scripts/kind-node.sh          build what changed (fingerprint labels; a second run: seconds)
#
# Needs root (mmdebstrap), a Docker daemon in DOCKER_HOST (`make test` runs a private one) and
# `scripts/install-tools.sh controlplane node kind docker` (the tests' `make tools` does it).
# The README lists every way this image differs from kind's published one.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib-images.sh"

NODE_IMAGE="kindest/node:v${K8S_VERSION}"
KIND_BASE="journey-local/kind-base:bookworm"
IPTABLES_BASE="journey-local/iptables:bookworm"

# What kind's images/base/Dockerfile installs (clean-install), plus Debian's runc (kind builds
# runc from source into /usr/local/sbin; here it is a link to Debian's).
KIND_BASE_PACKAGES=(systemd conntrack iptables nftables iproute2 ethtool util-linux mount kmod
  libseccomp2 pigz fuse-overlayfs nfs-common open-iscsi e2fsprogs bash ca-certificates curl jq
  procps runc)
# kube-proxy (iptables mode) and kindnetd (nft) run these; upstream's distroless-iptables has
# the same tools.
IPTABLES_BASE_PACKAGES=(iptables nftables conntrack ipset)

# sha <file...>: one hash of the files' contents.
sha() { cat "$@" | sha256sum | cut -c1-16; }

# --- base: Debian with iptables (kube-proxy, kindnetd) -----------------------------------------
build_iptables_base() {
  local fp
  fp=$(fingerprint "${IPTABLES_BASE_PACKAGES[*]}" "$(declare -f build_iptables_base)")
  stale "$IPTABLES_BASE" "$fp" || return 0
  debian_image "$IPTABLES_BASE" "$fp" "$(IFS=,; echo "${IPTABLES_BASE_PACKAGES[*]}")"
}

# --- step 1: the images the node carries ---------------------------------------------------------
IMAGES=()

# image <name> <context dir> <Dockerfile dir under tools/images> <base>: build one image of the
# node under <name> from <context dir> (which holds what the Dockerfile copies).
image() {
  local name=$1 ctx=$2 dockerfile=$3 base=$4
  cp "${IMAGES_DIR}/${dockerfile}/Dockerfile" "$ctx/Dockerfile"
  build "kind-${name##*/}" -t "$name" --build-arg "BASE=${base}" "$ctx"
  IMAGES+=("$name")
}

# stage <name> <file>:<path in image>...: a context with root/<path> copied from each <file>.
stage() {
  local ctx="${WORK}/ctx/kind-$1" spec; shift
  rm -rf "$ctx"; mkdir -p "$ctx/root"
  for spec in "$@"; do
    mkdir -p "$ctx/root$(dirname "${spec#*:}")"
    cp -L "${spec%%:*}" "$ctx/root${spec#*:}"
  done
  echo "$ctx"
}

# helper_root <dir>: sh (bash), rm and mkdir with the libraries they load, as kind's
# local-path-helper image stages them, from this (Debian bookworm) machine, in /bin where the
# provisioner's helper pods run them (`/bin/sh`).
helper_root() {
  local root=$1 bin lib
  mkdir -p "$root/bin"
  cp -L /bin/bash "$root/bin/sh"
  cp -L /bin/rm /bin/mkdir "$root/bin/"
  for bin in /bin/bash /bin/rm /bin/mkdir; do
    for lib in $(ldd "$bin" | awk '/=> \// {print $3}'); do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
}

node_images() {
  tool_env controlplane; tool_env node; tool_env kind
  local kubeadm_images ref ctx
  kubeadm_images=$("$KUBEADM" config images list --kubernetes-version "v${K8S_VERSION}") ||
    die "kind node: kubeadm config images list failed"
  for ref in $kubeadm_images; do
    case "$ref" in
      */kube-apiserver:v"${K8S_VERSION}")
        image "$ref" "$(stage apiserver "$KUBE_APISERVER:/usr/local/bin/kube-apiserver")" kube "$RUNTIME_BASE" ;;
      */kube-controller-manager:v"${K8S_VERSION}")
        image "$ref" "$(stage controller-manager "$KUBE_CONTROLLER_MANAGER:/usr/local/bin/kube-controller-manager")" kube "$RUNTIME_BASE" ;;
      */kube-scheduler:v"${K8S_VERSION}")
        image "$ref" "$(stage scheduler "$KUBE_SCHEDULER:/usr/local/bin/kube-scheduler")" kube "$RUNTIME_BASE" ;;
      */kube-proxy:v"${K8S_VERSION}")
        image "$ref" "$(stage proxy "$KUBE_PROXY:/usr/local/bin/kube-proxy")" kube "$IPTABLES_BASE" ;;
      */etcd:"${ETCD_VERSION}"-*)
        image "$ref" "$(stage etcd "$ETCD:/usr/local/bin/etcd")" kube "$RUNTIME_BASE" ;;
      */coredns/coredns:v"${COREDNS_VERSION}")
        ctx="${WORK}/ctx/kind-coredns"; rm -rf "$ctx"; mkdir -p "$ctx"; cp "$COREDNS" "$ctx/coredns"
        image "$ref" "$ctx" coredns "$RUNTIME_BASE" ;;
      */pause:*) ;; # kind replaces it with its containerd config's sandbox image (below)
      *) die "kind node: kubeadm ${K8S_VERSION} wants ${ref}, which no pinned build makes (tools/versions.env: ETCD_VERSION ${ETCD_VERSION}, COREDNS_VERSION ${COREDNS_VERSION})" ;;
    esac
  done

  local sandbox
  sandbox=$(sed -n 's/^ *sandbox_image *= *"\(.*\)"/\1/p' "${KIND_BASE_FILES}/etc/containerd/config.toml")
  [ -n "$sandbox" ] || die "kind node: no sandbox_image in kind's containerd config"
  ctx=$(context pause)
  build "kind-pause" -t "$sandbox" --build-arg "BUILD_IMAGE=${RUST_BASE}" "$ctx"
  IMAGES+=("$sandbox")

  ctx="${WORK}/ctx/kind-kindnetd"; rm -rf "$ctx"; mkdir -p "$ctx"; cp "$KINDNETD" "$ctx/kindnetd"
  image "$(cat "${KIND_NODEIMAGE}/kindnetdImage")" "$ctx" kindnetd "$IPTABLES_BASE"
  image "$(cat "${KIND_NODEIMAGE}/storageProvisionerImage")" \
    "$(stage local-path-provisioner "$LOCAL_PATH_PROVISIONER:/usr/local/bin/local-path-provisioner")" kube "$RUNTIME_BASE"
  ctx="${WORK}/ctx/kind-local-path-helper"; rm -rf "$ctx"; mkdir -p "$ctx"; helper_root "$ctx/root"
  image "$(cat "${KIND_NODEIMAGE}/storageHelperImage")" "$ctx" kube "$RUNTIME_BASE"
}

# --- step 2: kind's base image --------------------------------------------------------------------
# kind_base_files <rootfs>: kind's images/base/files with the modes its Dockerfile gives them
# (executables in usr/local/bin and kind/bin, everything else 0644).
kind_base_files() {
  local root=$1 f
  (cd "${KIND_BASE_FILES}" && find . -type f) | while read -r f; do
    f=${f#./}
    mkdir -p "$root/$(dirname "$f")"
    case "$f" in
      usr/local/bin/* | kind/bin/*) install -m 0755 "${KIND_BASE_FILES}/$f" "$root/$f" ;;
      *) install -m 0644 "${KIND_BASE_FILES}/$f" "$root/$f" ;;
    esac
  done
}

# The customize hook (runs on this machine with the new root file system as $1): the steps of
# kind's base Dockerfile after its package install.
write_base_hook() {
  cat >"$1" <<'HOOK'
#!/bin/sh
set -eu
root=$1
rm -f "$root"/lib/systemd/system/sysinit.target.wants/systemd-tmpfiles-setup.service
rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
  "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
  "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >>"$root/etc/systemd/journald.conf"
ln -sf /usr/lib/systemd/systemd "$root/sbin/init"
chroot "$root" systemctl enable kubelet.service containerd.service undo-mount-hacks.service
chroot "$root" systemctl mask systemd-binfmt.service
mkdir -p "$root/etc/kubernetes/manifests" "$root/usr/local/sbin"
ln -sf /usr/sbin/runc "$root/usr/local/sbin/runc"
chroot "$root" sh -c 'ctr oci spec | jq ".hooks.createContainer[.hooks.createContainer| length] |= . + {\"path\": \"/kind/bin/mount-product-files.sh\"}" | jq "del(.process.rlimits)" > /etc/containerd/cri-base.json'
chroot "$root" containerd --version >/dev/null
chroot "$root" runc --version >/dev/null
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/usr/share/doc/* "$root"/usr/share/doc-base/* \
  "$root"/usr/share/man/* "$root"/usr/share/local/*
HOOK
  chmod +x "$1"
}

build_kind_base() {
  tool_env node; tool_env kind
  local fp
  fp=$(fingerprint "${KIND_BASE_PACKAGES[*]}" "$(declare -f build_kind_base kind_base_files write_base_hook)" \
    "$(cd "${KIND_BASE_FILES}" && find . -type f | LC_ALL=C sort | xargs sha256sum)" \
    "$(sha "$CONTAINERD" "$CTR" "$CONTAINERD_SHIM" "$CRICTL" "$CNI_BIN_DIR"/*)")
  stale "$KIND_BASE" "$fp" || return 0
  local w="${WORK}/kind-base"
  rm -rf "$w"; mkdir -p "$w/overlay/usr/local/bin" "$w/overlay/opt/cni/bin"
  kind_base_files "$w/overlay"
  cp "$CONTAINERD" "$CTR" "$CONTAINERD_SHIM" "$CRICTL" "$w/overlay/usr/local/bin/"
  cp "$CNI_BIN_DIR"/* "$w/overlay/opt/cni/bin/"
  write_base_hook "$w/hook"
  log "kind node: ${KIND_BASE}: Debian bookworm + kind's packages and base files (mmdebstrap, about 2 minutes)"
  mmdebstrap --quiet --variant=minbase --include="$(IFS=,; echo "${KIND_BASE_PACKAGES[*]}")" \
    --customize-hook="cp -a '$w/overlay/.' \"\$1/\"" \
    --customize-hook="'$w/hook' \"\$1\"" \
    bookworm "$w/rootfs.tar" || die "kind node: mmdebstrap failed for ${KIND_BASE}"
  docker_ import "$w/rootfs.tar" "${KIND_BASE}-rootfs" >/dev/null
  rm -rf "$w"
  # The image config of kind's base (`docker import` cannot set a stop signal).
  printf '%s\n' "FROM ${KIND_BASE}-rootfs" "ENV container=docker" "STOPSIGNAL SIGRTMIN+3" \
    'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' "LABEL org.journey.fingerprint=${fp}" |
    docker_ build --quiet -t "$KIND_BASE" - >/dev/null
  docker_ rmi "${KIND_BASE}-rootfs" >/dev/null
}

# --- step 3: the node image -------------------------------------------------------------------------
build_node() {
  tool_env controlplane; tool_env node; tool_env kind
  local ids fp
  ids=$(docker_ image inspect -f '{{.Id}}' "$KIND_BASE" "${IMAGES[@]}")
  fp=$(fingerprint "$ids" "$(sha "$KUBEADM" "$KUBELET" "$KUBECTL")" "${K8S_VERSION}" \
    "$(sha "${KIND_NODEIMAGE}/defaultCNIManifest" "${KIND_NODEIMAGE}/defaultStorageManifest")" \
    "$(declare -f build_node)")
  if up_to_date "$NODE_IMAGE" "$fp"; then
    log "kind node: ${NODE_IMAGE} up to date"
    return
  fi
  local c="kind-build-$$"
  log "kind node: ${NODE_IMAGE}: kubeadm, kubelet, kubectl, /kind/version, manifests, ${#IMAGES[@]} images imported"
  # --init: a PID 1 that reaps, so that containerd, once stopped, is gone (not a zombie).
  docker_ run -d --init --name "$c" --entrypoint=sleep --security-opt seccomp=unconfined --network none \
    "$KIND_BASE" infinity >/dev/null
  # The build container goes whatever happens below.
  trap 'docker_ rm -f -v "$c" >/dev/null 2>&1 || true' EXIT
  local b
  for b in "$KUBEADM" "$KUBELET" "$KUBECTL"; do
    docker_ cp "$b" "$c:/usr/bin/$(basename "$b")"
  done
  docker_ exec "$c" chown root:root /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl
  docker_ exec "$c" chmod 0755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl
  docker_ exec "$c" mkdir -p /kind/manifests
  printf 'v%s' "${K8S_VERSION}" | docker_ exec -i "$c" sh -c 'cat >/kind/version'
  docker_ exec -i "$c" sh -c 'cat >/kind/manifests/default-cni.yaml' <"${KIND_NODEIMAGE}/defaultCNIManifest"
  docker_ exec -i "$c" sh -c 'cat >/kind/manifests/default-storage.yaml' <"${KIND_NODEIMAGE}/defaultStorageManifest"
  docker_ exec "$c" bash -c 'nohup containerd >/dev/null 2>&1 &'
  docker_ exec "$c" bash -c 'for i in $(seq 1 50); do [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; exit 1' ||
    die "kind node: containerd did not start in the build container"
  log "kind node: importing ${IMAGES[*]}"
  docker_ save "${IMAGES[@]}" | docker_ exec -i "$c" ctr --namespace=k8s.io images import \
    --label=io.cri-containerd.pinned=pinned --all-platforms --no-unpack --digests - >/dev/null ||
    die "kind node: ctr images import failed"
  local listed missing=() ref
  listed=$(docker_ exec "$c" ctr --namespace=k8s.io images list -q)
  for ref in "${IMAGES[@]}"; do
    # containerd names images in full: a first part without a dot or colon is a Docker Hub path.
    case "${ref%%/*}" in *.* | *:* | localhost) ;; *) ref="docker.io/$ref" ;; esac
    grep -qx "$ref" <<<"$listed" || missing+=("$ref")
  done
  [ ${#missing[@]} -eq 0 ] || die "kind node: not in the node's containerd after the import: ${missing[*]} (it has: ${listed})"
  docker_ exec "$c" pkill containerd
  docker_ exec "$c" bash -c 'for i in $(seq 1 50); do pgrep -x containerd >/dev/null || exit 0; sleep 0.2; done; exit 1' ||
    die "kind node: containerd did not stop in the build container"
  docker_ commit \
    --change 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' \
    --change "LABEL org.journey.fingerprint=${fp}" \
    "$c" "$NODE_IMAGE" >/dev/null
  docker_ rm -f -v "$c" >/dev/null
  trap - EXIT
}

require_daemon
start=$SECONDS
"${JOURNEY_ROOT}/scripts/images.sh" bases
step "kind base ${KIND_BASE}" build_kind_base
step "iptables base ${IPTABLES_BASE}" build_iptables_base
step "the node's images" node_images
step "node image ${NODE_IMAGE}" build_node
log "kind node: ${NODE_IMAGE} ready in $((SECONDS - start))s ($(docker_ image inspect -f '{{.Size}}' "$NODE_IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
