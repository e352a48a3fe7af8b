#!/usr/bin/env bash
# Installs every tool the local stack and the tests need, pinned by tools/versions.env,
# into $JOURNEY_CACHE (default ~/.cache/journey). Idempotent: a warm run only checks stamps.
#
#   scripts/install-tools.sh              # everything
#   scripts/install-tools.sh kafka zipkin # only these components
#
# Each component lives in scripts/tools/<name>.sh and defines install_<name>.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL=(apt kafka zipkin collector helm skaffold hadolint controlplane docker node kind browser registry actionlint)
# The named components (all when none is named), in ALL's order: apt and docker before what
# builds with them, whatever order they were named in.
for c in "$@"; do
  [[ " ${ALL[*]} " == *" $c "* ]] || die "unknown component '${c}' (known: ${ALL[*]})"
done
components=()
for c in "${ALL[@]}"; do
  [ $# -eq 0 ] || [[ " $* " == *" $c "* ]] && components+=("$c")
done

# The toolchains the selected components build with (the README's prerequisites), checked
# before any work so that a missing or too old one fails at once, naming what to install.
for c in "${components[@]}"; do
  case "$c" in
    kafka | zipkin) need_java17; need mvn "install Apache Maven 3.8+ (Debian: apt-get install maven)" ;;
    collector) need_go 1.25.0 ;;
    helm | skaffold | actionlint | kind) need_go 1.25.0 ;;
    registry) need_go 1.26.0 ;; # distribution v3.1.2's go.mod says go 1.26.0
    # k8s.io/kubernetes 1.37 and containerd 2.4 need 1.26; the CNI plugins v1.10 and
    # cri-tools v1.37 1.26.8.
    controlplane) need_go 1.26.0 ;;
    node) need_go 1.26.8 ;;
    hadolint) need python3 "install Python 3.9+ with venv (Debian: apt-get install python3 python3-venv)" ;;
  esac
done

mkdir -p "${JOURNEY_CACHE}"
log "tool cache: ${JOURNEY_CACHE} (override with JOURNEY_CACHE)"
total=$SECONDS
for c in "${components[@]}"; do
  f="${JOURNEY_ROOT}/scripts/tools/${c}.sh"
  # shellcheck source=/dev/null
  . "$f"
  step "$c" "install_${c}"
done
log "all tools ready in $((SECONDS - total))s; paths in ${JOURNEY_CACHE}/env.d/"
