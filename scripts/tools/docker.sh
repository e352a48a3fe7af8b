# Docker from Debian's packages: dockerd 20.10 and its own 20.10 client, whose `docker build`
# runs BuildKit without the buildx plugin (a newer client without buildx would fall back to the
# legacy builder, which has no `RUN --mount`), with runc (the harness runs it through
# runc-in-bounds, tests/src/runc_bounds.rs) and docker-proxy (published ports: kind's API
# server). mmdebstrap assembles the local base images and kind's node image.
# Nothing is started here: the harness starts a private dockerd (its own socket, exec root and a
# data root under the tool cache) only for the tests and `make images`, and stops it after.
# shellcheck shell=bash
install_docker() {
  local missing=()
  [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || missing+=(docker.io)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
  else
    log "docker: dockerd $(/usr/sbin/dockerd --version | awk '{print $3}' | tr -d ,) and mmdebstrap present"
  fi
  /usr/bin/docker --version | grep -q '^Docker version 20\.10\.' ||
    die "docker: /usr/bin/docker is not Debian's 20.10 client ($(/usr/bin/docker --version))"
  local b
  for b in /usr/sbin/runc /usr/sbin/docker-proxy; do
    [ -x "$b" ] || die "docker: ${b} is missing (it comes with Debian's docker.io and runc packages)"
  done
  write_env docker "DOCKERD=/usr/sbin/dockerd" "DOCKER=/usr/bin/docker" "RUNC=/usr/sbin/runc" \
    "DOCKER_PROXY=/usr/sbin/docker-proxy" "DOCKER_DATA_ROOT=${JOURNEY_CACHE}/docker"
}
