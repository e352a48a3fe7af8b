# actionlint, the GitHub Actions workflow linter, built from its Go module with `go install` (no
# prebuilt binary is reachable here), and Debian's shellcheck, which actionlint runs on every
# `run:` script (without it those go unchecked, silently).
#
#   actionlint-$ACTIONLINT_VERSION/bin/actionlint
#
# With `go install …@vX` actionlint reads its version from the build info, so no ldflags -X.
# shellcheck shell=bash

# actionlint_fingerprint: what the install was built from; a change rebuilds it.
actionlint_fingerprint() {
  {
    echo "ACTIONLINT_VERSION=${ACTIONLINT_VERSION}"
    declare -f actionlint_build actionlint_check_shellcheck
  } | sha256sum | cut -d' ' -f1
}

# actionlint_build <dir>: go install actionlint into <dir>/bin.
actionlint_build() {
  local dir=$1 mod=github.com/rhysd/actionlint v="v${ACTIONLINT_VERSION}"
  log "actionlint: go install ${mod}/cmd/actionlint@${v} (cold: under a minute)"
  CGO_ENABLED=0 GOBIN="$dir/bin" go install -trimpath -ldflags "-s -w" "${mod}/cmd/actionlint@${v}" ||
    die "actionlint: go install ${mod}/cmd/actionlint@${v} failed (module not served, or Go older than its go.mod asks? see above)"
  local out
  out=$("$dir/bin/actionlint" --version)
  [ "${out%%$'\n'*}" = "$v" ] || die "actionlint: \`actionlint --version\` does not start with ${v}: ${out}"
  actionlint_check_shellcheck "$dir/bin/actionlint"
}

# actionlint_check_shellcheck <actionlint>: actionlint must run shellcheck on a `run:` script.
actionlint_check_shellcheck() {
  local wf out
  wf=$(mktemp --suffix=.yaml)
  # shellcheck disable=SC2016 # the $ is for the workflow's shell, on purpose unquoted there
  printf '%s\n' 'on: push' 'jobs:' '  t:' '    runs-on: ubuntu-latest' '    steps:' \
    '      - run: echo $HOME' >"$wf"
  out=$("$1" -no-color -shellcheck /usr/bin/shellcheck "$wf" 2>&1) && true
  rm -f "$wf"
  grep -q 'shellcheck reported issue.*SC2086' <<<"$out" ||
    die "actionlint: does not report shellcheck's SC2086 for an unquoted \$HOME in a run: script: ${out}"
}

install_actionlint() {
  local dir="${JOURNEY_CACHE}/actionlint-${ACTIONLINT_VERSION}"
  [ -x /usr/bin/shellcheck ] || apt_install shellcheck
  [ -x /usr/bin/shellcheck ] || die "actionlint: /usr/bin/shellcheck missing after installing shellcheck"
  local fp
  fp=$(actionlint_fingerprint)
  build_once "$dir" "$fp" actionlint_build "actionlint: ${ACTIONLINT_VERSION}"
  log "actionlint: shellcheck $(/usr/bin/shellcheck --version | sed -n 's/^version: //p') (Debian)"
  write_env actionlint "ACTIONLINT=$dir/bin/actionlint" "SHELLCHECK=/usr/bin/shellcheck" \
    "ACTIONLINT_VERSION=${ACTIONLINT_VERSION}"
}
