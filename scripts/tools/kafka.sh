# Apache Kafka broker (KRaft) as jars from Maven Central, resolved by tools/kafka/pom.xml,
# with a log4j2 binding (the harness runs them with the committed tools/kafka/log4j2.yaml).
# shellcheck shell=bash
install_kafka() {
  local dir="${JOURNEY_CACHE}/kafka-${KAFKA_VERSION}"
  if ! installed "$dir"; then
    need_java17
    need mvn "install Apache Maven 3.8+ (Debian: apt-get install maven)"
    rm -rf "$dir"; mkdir -p "$dir/libs"
    log "kafka: resolving org.apache.kafka:kafka_2.13:${KAFKA_VERSION} and its dependencies"
    maven -f "${JOURNEY_ROOT}/tools/kafka/pom.xml" -Dkafka.version="${KAFKA_VERSION}" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir/libs"
    mark_installed "$dir"
  else
    log "kafka: ${KAFKA_VERSION} already installed"
  fi
  write_env kafka "KAFKA_LIBS=$dir/libs" "KAFKA_VERSION=${KAFKA_VERSION}"
}
