# Docker from Debian's packages: dockerd 20.10 and its own 20.10 client, whose `docker build`
# runs BuildKit without the buildx plugin (a newer client without buildx would fall back to the
# legacy builder, which has no `RUN --mount`). mmdebstrap assembles the local base images.
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
  write_env docker "DOCKERD=/usr/sbin/dockerd" "DOCKER=/usr/bin/docker" \
    "DOCKER_DATA_ROOT=${JOURNEY_CACHE}/docker"
}
