# Shared shell helpers for Journey's scripts. Source it; do not run it.
# shellcheck shell=bash

: "${JOURNEY_CACHE:=${HOME}/.cache/journey}"
export JOURNEY_CACHE
JOURNEY_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export JOURNEY_ROOT

# shellcheck source=../tools/versions.env
. "${JOURNEY_ROOT}/tools/versions.env"

log() { printf '[journey] %s\n' "$*" >&2; }
die() { printf '[journey] error: %s\n' "$*" >&2; exit 1; }

# maven <args>: Maven, quiet and in batch mode, without the colour resets Debian's Maven 3.8
# prints even then (they would land in the install log).
maven() {
  local rc=0
  mvn -q -B "$@" 2>&1 | sed -u 's/\x1b\[[0-9;]*m//g' || rc=$?
  return "$rc"
}

# need <command> <what to install>: fail at once, naming the missing prerequisite.
need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed: $2"
}

need_java17() {
  need java "install a Java 17+ JDK (Debian: apt-get install openjdk-17-jdk-headless)"
  local v
  v=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
  [ "${v%%.*}" -ge 17 ] 2>/dev/null || die "java ${v:-unknown} found, Kafka 4 and Zipkin 3 need Java 17+ (set JAVA_HOME/PATH)"
}

# need_go <min version>: Go at least that version (e.g. 1.26.8), else fail naming it.
need_go() {
  need go "install Go $1+ (https://go.dev/doc/install)"
  local have
  have=$(go env GOVERSION 2>/dev/null | sed 's/^go//; s/[^0-9.].*$//')
  # sort -V puts the lower version first: the minimum must come first (or be equal).
  [ "$(printf '%s\n%s\n' "$1" "$have" | sort -V | head -n1)" = "$1" ] ||
    die "Go ${have:-unknown} found, $1+ needed: install Go $1+ (https://go.dev/doc/install)"
}

# step <name> <command...>: run a step, print how long it took. Called plainly (not after
# `||` or in `if`), so `set -e` stays in force inside the step; the ERR trap names the step.
step() {
  local name=$1; shift
  local start=$SECONDS
  JOURNEY_STEP=$name
  log "${name}: start"
  "$@"
  log "${name}: done in $((SECONDS - start))s"
  JOURNEY_STEP=
}
on_error() {
  local rc=$?
  [ -z "${JOURNEY_STEP:-}" ] || log "error: ${JOURNEY_STEP} failed (exit ${rc}; see the output above)"
}
trap on_error ERR
set -o errtrace

# apt_install <package...>: install Debian packages (as root, or with sudo), naming them first.
apt_install() {
  need apt-get "install $* with your system's package manager"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "apt: installing $*"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" |
    { grep -v '^\(Selecting\|Preparing\|Unpacking\|Setting up\|Processing\)' || true; }
}

# installed <dir>: true when <dir> holds a finished install (written by mark_installed).
installed() { [ -f "$1/.installed" ]; }
mark_installed() { date -u +%FT%TZ >"$1/.installed"; }

# inputs_hash <text...>: a hash of what a build is made from (pins, build functions, sources).
inputs_hash() { printf '%s\n' "$@" | sha256sum | cut -d' ' -f1; }

# build_once <dir> <fingerprint> <build function> <what>: build <dir> unless it holds a finished
# build of the same fingerprint (its `.fingerprint`); a different one rebuilds it in place. The
# build function gets <dir> (emptied) and fills it. <what> names it in the log ("node: coredns").
build_once() {
  local dir=$1 fp=$2 build=$3 what=$4
  if installed "$dir" && [ "$(cat "$dir/.fingerprint" 2>/dev/null)" = "$fp" ]; then
    log "${what} already installed"
    return 0
  fi
  installed "$dir" && log "${what}: pins or build inputs changed, rebuilding"
  rm -rf "$dir"; mkdir -p "$dir"
  local start=$SECONDS
  "$build" "$dir"
  echo "$fp" >"$dir/.fingerprint"
  mark_installed "$dir"
  log "${what} built in $((SECONDS - start))s"
}

# write_env <component> KEY=VALUE...: record where a tool lives for the harness and the Makefile.
write_env() {
  local name=$1; shift
  mkdir -p "${JOURNEY_CACHE}/env.d"
  printf '%s\n' "$@" >"${JOURNEY_CACHE}/env.d/${name}.env.tmp"
  mv "${JOURNEY_CACHE}/env.d/${name}.env.tmp" "${JOURNEY_CACHE}/env.d/${name}.env"
}
