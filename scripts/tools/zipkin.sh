# Zipkin server exec jar from Maven Central.
# shellcheck shell=bash
install_zipkin() {
  local dir="${JOURNEY_CACHE}/zipkin-${ZIPKIN_VERSION}"
  if ! installed "$dir"; then
    need_java17
    need mvn "install Apache Maven 3.8+ (Debian: apt-get install maven)"
    rm -rf "$dir"; mkdir -p "$dir"
    log "zipkin: fetching io.zipkin:zipkin-server:${ZIPKIN_VERSION}:exec"
    maven dependency:copy -Dartifact="io.zipkin:zipkin-server:${ZIPKIN_VERSION}:jar:exec" \
      -DoutputDirectory="$dir" -Dmdep.stripVersion=true -Dmdep.stripClassifier=true
    mv "$dir"/zipkin-server*.jar "$dir/zipkin.jar"
    mark_installed "$dir"
  else
    log "zipkin: ${ZIPKIN_VERSION} already installed"
  fi
  write_env zipkin "ZIPKIN_JAR=$dir/zipkin.jar" "ZIPKIN_VERSION=${ZIPKIN_VERSION}"
}
