# Helpers of the image scripts (scripts/images.sh, scripts/kind-node.sh): the private or local
# Docker daemon they talk to, condensed BuildKit builds, fingerprint labels that let a rebuild be
# skipped, the names of the local base images. Source it after scripts/lib.sh.
# shellcheck shell=bash

: "${DOCKER:=docker}"
export DOCKER_BUILDKIT=1
: "${DOCKER_BUILD_NETWORK:=host}"

# The local bases (names of our own; the third-party stand-ins use the chart's names, from
# values.yaml; kind's images use kind's and kubeadm's names). Read by the sourcing scripts.
# shellcheck disable=SC2034
RUST_BASE="journey-local/rust:${RUST_VERSION%.*}-bookworm"
# shellcheck disable=SC2034
RUNTIME_BASE="journey-local/cc-debian12:nonroot"
# shellcheck disable=SC2034
JRE_BASE="journey-local/jre:17-bookworm"

IMAGES_DIR="${JOURNEY_ROOT}/tools/images"
WORK="${JOURNEY_CACHE}/images"

docker_() { "$DOCKER" "$@"; }

# build <log name> <docker build args...>: a BuildKit build with its plain progress condensed to
# one line per step (plus a count of compiled crates); the whole log stays in $WORK/logs.
build() {
  local name=$1; shift
  local logf="${WORK}/logs/${name}.log"
  mkdir -p "${WORK}/logs"
  log "images: ${name}: docker build $*"
  if ! docker_ build --progress=plain --network="${DOCKER_BUILD_NETWORK}" "$@" 2>&1 | tee "$logf" | awk '
      /^#[0-9]+ \[/ { sub(/^#[0-9]+ /, ""); step = $0; next }
      /^#[0-9]+ CACHED/ { if (step != "") print "    cached  " step; step = ""; next }
      /^#[0-9]+ DONE/ { if (step != "") printf "    %-7s %s\n", $3, step; step = ""; next }
      / Compiling / { n++; if (n % 50 == 0) printf "    ... %d crates compiled\n", n }
      { fflush() }'; then
    tail -n 60 "$logf" >&2
    die "images: ${name}: docker build failed (whole log: ${logf})"
  fi
}

# fingerprint <text...>: what a base image is made from, hashed.
fingerprint() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# up_to_date <image> <fingerprint>: the image exists and carries this fingerprint.
up_to_date() {
  [ "$(docker_ image inspect -f '{{index .Config.Labels "org.journey.fingerprint"}}' "$1" 2>/dev/null)" = "$2" ]
}

# stale <image> <fingerprint>: false (saying so) when <image> exists and carries this
# fingerprint; else true, once what a base build needs is checked (root, mmdebstrap).
stale() {
  if up_to_date "$1" "$2"; then
    log "images: $1 up to date"
    return 1
  fi
  [ "$(id -u)" -eq 0 ] || die "images: assembling the local base images needs root (mmdebstrap, file ownership)"
  need mmdebstrap "run scripts/install-tools.sh docker"
}

# debian_image <image> <fingerprint> <packages, comma-separated> [docker import --change ...]:
# Debian bookworm (mmdebstrap minbase) with <packages>, without docs and apt lists, imported
# as <image> with the fingerprint label and the given image config changes.
debian_image() {
  local image=$1 fp=$2 packages=$3; shift 3
  local w="${WORK}/base-${image//[\/:]/-}"
  rm -rf "$w"; mkdir -p "$w"
  log "images: ${image}: Debian bookworm + ${packages} (mmdebstrap, about a minute)"
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --customize-hook='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/var/lib/apt/lists/*' \
    bookworm "$w/rootfs.tar" || die "images: mmdebstrap failed for ${image}"
  docker_ import "$@" --change "LABEL org.journey.fingerprint=${fp}" "$w/rootfs.tar" "$image" >/dev/null
  rm -rf "$w"
}

# context <name>: a fresh build context with tools/images/<name>/* in it; prints its path.
context() {
  local ctx="${WORK}/ctx/$1"
  rm -rf "$ctx"; mkdir -p "$ctx"
  cp -a "${IMAGES_DIR}/$1/." "$ctx/"
  echo "$ctx"
}

tool_env() {
  local f="${JOURNEY_CACHE}/env.d/$1.env"
  [ -f "$f" ] || die "images: $1 is not installed: run scripts/install-tools.sh $1"
  # shellcheck source=/dev/null
  . "$f"
}

# require_daemon: fail at once when no Docker daemon answers.
require_daemon() {
  docker_ version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
    die "images: no Docker daemon answers at ${DOCKER_HOST:-the default socket} (make images starts one)"
}
