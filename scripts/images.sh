#!/usr/bin/env bash
# Journey's container images.
#
#   scripts/images.sh journey   the three Journey images from the Dockerfile:
#                               journey/{producer,consumer,journeyctl}:<chart appVersion>
#   scripts/images.sh local     what a machine that cannot pull from any registry needs (the CI
#                               machine): base images assembled from Debian packages (also under
#                               the names of the Dockerfile's bases, for which they stand in),
#                               stand-ins for the chart's three third-party images under their
#                               exact names and tags, then the Journey images built on them
#   scripts/images.sh bases | standins    one part of `local`
#
# Talks to the daemon in DOCKER_HOST with the client in DOCKER (default: docker); the build uses
# BuildKit (`RUN --mount`), so the client must run BuildKit builds (Docker 23+ with buildx, or a
# 20.10 client with DOCKER_BUILDKIT=1, which is set here). `make images` runs `local` on a private
# daemon. Idempotent: a base image is rebuilt only when what it is made from changed (a
# fingerprint label), everything else is cached by BuildKit, and the Rust build keeps its crate
# registry and target dir in cache mounts, so a changed service recompiles only its crate.
#
# Environment: RUST_IMAGE / RUNTIME_IMAGE override the Dockerfile's bases (`journey` only);
# JOURNEY_TAG (default: the chart's appVersion);
# DOCKER_BUILD_NETWORK (default: host, so RUN steps reach the package registries without a
# bridge network on the daemon).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/lib-images.sh"

APP_VERSION=$(awk -F'"' '/^appVersion:/ {print $2}' "${JOURNEY_ROOT}/charts/journey/Chart.yaml")
[ -n "$APP_VERSION" ] || die "images: no appVersion in charts/journey/Chart.yaml"
: "${JOURNEY_TAG:=${APP_VERSION}}"

# chart_image <component>: repository:tag of a third-party image as charts/journey/values.yaml sets it.
chart_image() {
  awk -v c="$1" '
    /^[a-z]/ { top = $1 }
    top == c":" && /^  image:/ { in_image = 1; next }
    in_image && /^    repository:/ { repo = $2 }
    in_image && /^    tag:/ { tag = $2; gsub(/"/, "", tag) }
    in_image && /^  [a-z]/ { in_image = 0 }
    END { if (repo != "" && tag != "") print repo ":" tag }
  ' "${JOURNEY_ROOT}/charts/journey/values.yaml"
}

# --- base: rust -------------------------------------------------------------------------------
# What the official rust:<v>-bookworm image offers a Dockerfile: Debian bookworm with the build
# tools of buildpack-deps (compilers, make, git, curl, the common -dev headers), apt working, and
# the Rust toolchain RUST_VERSION (profile minimal: rustc, cargo, rust-std) under
# RUSTUP_HOME=/usr/local/rustup and CARGO_HOME=/usr/local/cargo. The toolchain is the host's own
# (rustup's copy of that exact version): no toolchain download is reachable here. The host's
# extra CA certificates are added so builds inside reach the package registries through this
# machine's TLS proxy.
RUST_BASE_PACKAGES=(ca-certificates curl gnupg netbase wget git openssh-client procps autoconf
  automake bzip2 dpkg-dev file g++ gcc libc6-dev libcurl4-openssl-dev libssl-dev libtool make
  patch pkg-config unzip xz-utils zlib1g-dev)

rust_sysroot() {
  local sysroot
  sysroot=$(rustc "+${RUST_VERSION}" --print sysroot 2>/dev/null) ||
    die "images: no Rust ${RUST_VERSION} toolchain on this machine (rustup toolchain install ${RUST_VERSION} --profile minimal)"
  "$sysroot/bin/rustc" --version | grep -q "^rustc ${RUST_VERSION} " ||
    die "images: ${sysroot} is not rustc ${RUST_VERSION}"
  echo "$sysroot"
}

# stage_rust <sysroot> <dir>: the toolchain laid out as rustup-init --profile minimal leaves it.
stage_rust() {
  local sysroot=$1 dir=$2 host=x86_64-unknown-linux-gnu
  local tc="$dir/usr/local/rustup/toolchains/${RUST_VERSION}-${host}"
  rm -rf "$dir"; mkdir -p "$tc/lib/rustlib" "$dir/usr/local/cargo/bin"
  local c files=()
  for c in rustc cargo rust-std; do
    [ -f "$sysroot/lib/rustlib/manifest-$c-$host" ] || die "images: the ${RUST_VERSION} toolchain has no $c component"
    mapfile -t -O ${#files[@]} files < <(cut -d: -f2 "$sysroot/lib/rustlib/manifest-$c-$host")
    files+=("lib/rustlib/manifest-$c-$host")
  done
  (cd "$sysroot" && tar cf - "${files[@]}" lib/rustlib/rust-installer-version lib/rustlib/multirust-channel-manifest.toml) |
    tar xf - -C "$tc"
  printf '%s\n' "rustc-$host" "cargo-$host" "rust-std-$host" >"$tc/lib/rustlib/components"
  cp "$(command -v rustup)" "$dir/usr/local/cargo/bin/rustup"
  for c in cargo cargo-clippy cargo-fmt clippy-driver rust-analyzer rust-gdb rust-gdbgui rust-lldb rustc rustdoc rustfmt; do
    ln -s rustup "$dir/usr/local/cargo/bin/$c"
  done
  printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "${RUST_VERSION}-${host}" \
    >"$dir/usr/local/rustup/settings.toml"
  chmod -R a+w "$dir/usr/local/rustup" "$dir/usr/local/cargo"
}

# The customize hook: the host's CA certificates that Debian's bundle lacks, as local CAs.
write_ca_hook() {
  cat >"$1" <<'HOOK'
#!/bin/sh
# $1: the new root file system. Adds each certificate of the host's bundle that is not in the
# image's bundle to /usr/local/share/ca-certificates, then regenerates the bundle.
set -eu
root=$1
mkdir -p "$root/usr/local/share/ca-certificates"
awk -v out="$root/usr/local/share/ca-certificates/journey-host-" -v known="$root/etc/ssl/certs/ca-certificates.crt" '
  BEGIN { while ((getline line < known) > 0) have[line] = 1 }
  /-----BEGIN CERTIFICATE-----/ { cert = ""; body = ""; inside = 1 }
  inside { cert = cert $0 "\n"; if ($0 !~ /-----/) body = body $0 }
  /-----END CERTIFICATE-----/ {
    inside = 0; new = 0
    n = split(cert, lines, "\n")
    for (i = 1; i <= n; i++) if (lines[i] != "" && lines[i] !~ /-----/ && !(lines[i] in have)) new = 1
    if (new) { k++; printf "%s", cert > (out k ".crt"); close(out k ".crt") }
  }' /etc/ssl/certs/ca-certificates.crt
chroot "$root" update-ca-certificates >/dev/null
HOOK
  chmod +x "$1"
}

build_rust_base() {
  local sysroot fp
  sysroot=$(rust_sysroot)
  fp=$(fingerprint "${RUST_BASE_PACKAGES[*]}" "$(cat "$sysroot/lib/rustlib/multirust-channel-manifest.toml" | sha256sum)" \
    "$(sha256sum </etc/ssl/certs/ca-certificates.crt)" "$(declare -f stage_rust write_ca_hook build_rust_base)")
  stale "$RUST_BASE" "$fp" || return 0
  local w="${WORK}/rust-base"
  rm -rf "$w"; mkdir -p "$w"
  log "images: ${RUST_BASE}: Rust ${RUST_VERSION} from ${sysroot} + Debian bookworm (mmdebstrap, about a minute)"
  stage_rust "$sysroot" "$w/rust"
  write_ca_hook "$w/ca-hook"
  local include
  include=$(IFS=,; echo "${RUST_BASE_PACKAGES[*]}")
  mmdebstrap --quiet --variant=minbase --include="$include" \
    --customize-hook="cp -a '$w/rust/.' \"\$1/\"" \
    --customize-hook="'$w/ca-hook' \"\$1\"" \
    bookworm "$w/rootfs.tar" || die "images: mmdebstrap failed for ${RUST_BASE}"
  docker_ import \
    --change "ENV RUSTUP_HOME=/usr/local/rustup" \
    --change "ENV CARGO_HOME=/usr/local/cargo" \
    --change "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV RUST_VERSION=${RUST_VERSION}" \
    --change 'CMD ["bash"]' \
    --change "LABEL org.journey.fingerprint=${fp}" \
    "$w/rootfs.tar" "$RUST_BASE" >/dev/null
  rm -rf "$w"
  docker_ run --rm --network none "$RUST_BASE" cargo --version >/dev/null ||
    die "images: cargo does not run in ${RUST_BASE}"
}

# --- base: runtime (distroless cc's contract) ---------------------------------------------------
# The Debian packages distroless cc-debian12 is made of, extracted (no maintainer scripts, no
# package manager, no shell), with the CA bundle generated from ca-certificates' Mozilla set,
# users root, nobody and nonroot (65532) and a world-writable /tmp.
RUNTIME_BASE_PACKAGES=(base-files netbase tzdata media-types libc6 libssl3 libgomp1 libstdc++6
  libgcc-s1 gcc-12-base ca-certificates)

build_runtime_base() {
  local fp
  fp=$(fingerprint "${RUNTIME_BASE_PACKAGES[*]}" "$(declare -f build_runtime_base)")
  stale "$RUNTIME_BASE" "$fp" || return 0
  local w="${WORK}/runtime-base"
  rm -rf "$w"; mkdir -p "$w/debs" "$w/root"
  log "images: ${RUNTIME_BASE}: extracting ${RUNTIME_BASE_PACKAGES[*]}"
  # The packages of this Debian release (the binaries link against its glibc).
  grep -q '^VERSION_CODENAME=bookworm$' /etc/os-release ||
    die "images: the runtime base is assembled from this machine's apt (Debian 12 bookworm needed)"
  (cd "$w/debs" && { apt-get download -qq "${RUNTIME_BASE_PACKAGES[@]}" 2>/dev/null ||
    { apt-get update -qq && apt-get download -qq "${RUNTIME_BASE_PACKAGES[@]}"; }; }) ||
    die "images: apt-get download failed"
  local deb
  for deb in "$w"/debs/*.deb; do dpkg-deb -x "$deb" "$w/root"; done
  local r="$w/root"
  rm -rf "$r"/usr/share/{man,info,lintian,doc-base}
  find "$r/usr/share/doc" -type f ! -name copyright -delete
  mkdir -p "$r/etc/ssl/certs" "$r/tmp" "$r/root" "$r/home/nonroot"
  cat "$r"/usr/share/ca-certificates/mozilla/*.crt >"$r/etc/ssl/certs/ca-certificates.crt"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$r/etc/passwd"
  printf '%s\n' 'root:x:0:' 'tty:x:5:' 'staff:x:50:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$r/etc/group"
  printf '%s\n' 'passwd: compat' 'group: compat' 'shadow: compat' 'hosts: files dns' >"$r/etc/nsswitch.conf"
  chmod 1777 "$r/tmp"; chmod 700 "$r/root" "$r/home/nonroot"
  chown 65532:65532 "$r/home/nonroot"
  tar --numeric-owner -C "$r" -cf "$w/rootfs.tar" .
  docker_ import \
    --change "USER 65532" \
    --change "WORKDIR /home/nonroot" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    --change "LABEL org.journey.fingerprint=${fp}" \
    "$w/rootfs.tar" "$RUNTIME_BASE" >/dev/null
  rm -rf "$w"
}

# --- base: JRE (for the Kafka and Zipkin stand-ins) ---------------------------------------------
JRE_BASE_PACKAGES=(openjdk-17-jre-headless procps)

build_jre_base() {
  local fp
  fp=$(fingerprint "${JRE_BASE_PACKAGES[*]}" "$(declare -f build_jre_base)")
  stale "$JRE_BASE" "$fp" || return 0
  debian_image "$JRE_BASE" "$fp" "$(IFS=,; echo "${JRE_BASE_PACKAGES[*]}")" \
    --change "ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64" \
    --change "ENV PATH=/usr/lib/jvm/java-17-openjdk-amd64/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change 'CMD ["bash"]'
}

# dockerfile_default <ARG name>: the default the Dockerfile gives a build argument.
dockerfile_default() {
  sed -n "s/^ARG $1=//p" "${JOURNEY_ROOT}/Dockerfile"
}

# The Rust and runtime bases are stand-ins for the Dockerfile's own bases, so they carry those
# names too: `docker build` and `skaffold` then build the Dockerfile as it is, as on a machine
# that pulls (the README lists how the stand-ins differ).
tag_upstream_names() {
  local rust runtime
  rust=$(dockerfile_default RUST_IMAGE); runtime=$(dockerfile_default RUNTIME_IMAGE)
  [ -n "$rust" ] && [ -n "$runtime" ] || die "images: no RUST_IMAGE/RUNTIME_IMAGE defaults in the Dockerfile"
  docker_ tag "$RUST_BASE" "$rust"
  docker_ tag "$RUNTIME_BASE" "$runtime"
  log "images: ${RUST_BASE} is also ${rust}, ${RUNTIME_BASE} also ${runtime}"
}

bases() {
  mkdir -p "$WORK"
  step "rust base" build_rust_base
  step "runtime base" build_runtime_base
  step "jre base" build_jre_base
  tag_upstream_names
}

# --- stand-ins for the chart's third-party images ------------------------------------------------
standin_kafka() {
  tool_env kafka
  local ctx image
  ctx=$(context kafka); image=$(chart_image kafka)
  # Hard links: the jars are not copied, only named in the context.
  cp -al "${KAFKA_LIBS}" "$ctx/libs"
  cp "${JOURNEY_ROOT}/tools/kafka/log4j2.yaml" "$ctx/log4j2.yaml"
  build kafka -t "$image" --build-arg "JRE_IMAGE=${JRE_BASE}" --label "org.journey.kafka.version=${KAFKA_VERSION}" "$ctx"
}

standin_zipkin() {
  tool_env zipkin
  local ctx image
  ctx=$(context zipkin); image=$(chart_image zipkin)
  cp -l "${ZIPKIN_JAR}" "$ctx/zipkin.jar"
  build zipkin -t "$image" --build-arg "JRE_IMAGE=${JRE_BASE}" --build-arg "UNPACK_IMAGE=${RUST_BASE}" "$ctx"
}

standin_collector() {
  tool_env collector
  local ctx image
  ctx=$(context collector); image=$(chart_image collector)
  cp -l "${OTELCOL}" "$ctx/otelcol-contrib"
  build collector -t "$image" --build-arg "RUNTIME_IMAGE=${RUNTIME_BASE}" "$ctx"
}

standins() {
  step "kafka stand-in $(chart_image kafka)" standin_kafka
  step "zipkin stand-in $(chart_image zipkin)" standin_zipkin
  step "collector stand-in $(chart_image collector)" standin_collector
}

# --- Journey's images ------------------------------------------------------------------------------
journey() {
  local args=() t
  [ -z "${RUST_IMAGE:-}" ] || args+=(--build-arg "RUST_IMAGE=${RUST_IMAGE}")
  [ -z "${RUNTIME_IMAGE:-}" ] || args+=(--build-arg "RUNTIME_IMAGE=${RUNTIME_IMAGE}")
  for t in producer consumer journeyctl; do
    step "journey/${t}:${JOURNEY_TAG}" build "journey-${t}" --target "$t" -t "journey/${t}:${JOURNEY_TAG}" \
      "${args[@]}" -f "${JOURNEY_ROOT}/Dockerfile" "${JOURNEY_ROOT}"
  done
}

local_all() {
  bases
  standins
  journey
}

require_daemon
start=$SECONDS
case "${1:-}" in
  journey) journey ;;
  local) local_all ;;
  bases) bases ;;
  standins) standins ;;
  *) die "usage: scripts/images.sh journey|local|bases|standins" ;;
esac
log "images: done in $((SECONDS - start))s"
docker_ image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' |
  { grep -E '^  (journey|apache|openzipkin|otel|localhost)' || true; } >&2
