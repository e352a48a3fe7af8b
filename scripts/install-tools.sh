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

ALL=(apt kafka zipkin collector helm skaffold hadolint controlplane docker node browser)
components=("$@")
[ ${#components[@]} -gt 0 ] || components=("${ALL[@]}")

# Prerequisites the README lists, checked before any work so that a missing one fails at once.
need cargo "install Rust 1.89+ (https://rustup.rs)"
need_java17
need mvn "install Apache Maven 3.8+ (Debian: apt-get install maven)"
need go "install Go 1.24+ (https://go.dev/doc/install)"
need python3 "install Python 3.9+ (Debian: apt-get install python3 python3-venv)"

mkdir -p "${JOURNEY_CACHE}"
log "tool cache: ${JOURNEY_CACHE} (override with JOURNEY_CACHE)"
total=$SECONDS
for c in "${components[@]}"; do
  f="${JOURNEY_ROOT}/scripts/tools/${c}.sh"
  [ -f "$f" ] || die "unknown component '${c}' (known: ${ALL[*]})"
  # shellcheck source=/dev/null
  . "$f"
  step "$c" "install_${c}"
done
log "all tools ready in $((SECONDS - total))s; paths in ${JOURNEY_CACHE}/env.d/"
