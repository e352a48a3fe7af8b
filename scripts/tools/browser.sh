# Debian's Chromium, for the UI tests: the Zipkin UI opened through a `kubectl port-forward` and
# read back as a user's browser renders it (headless; screenshots for the docs).
# shellcheck shell=bash
install_browser() {
  if [ ! -x /usr/bin/chromium ]; then
    apt_install chromium
  else
    log "browser: $(/usr/bin/chromium --version 2>/dev/null) present"
  fi
  write_env browser "CHROMIUM=/usr/bin/chromium"
}
