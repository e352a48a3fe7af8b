#!/usr/bin/env bash
# Sends one message as a user would and prints its journey: `kubectl port-forward` to the
# producer and to Zipkin, POST /messages (202 with the trace id), then `journeyctl journey`
# through the Zipkin port-forward until the trace holds producer → relay → sink.
# Used by the kind tests (make test) and by the kind workflow; writes
# $ARTIFACTS/journey.txt and $ARTIFACTS/trace-id.
#
# Environment: see lib.sh; JOURNEYCTL (a journeyctl binary; default: the journey/journeyctl
# image with docker on the host network), JOURNEY_TAG (0.1.0), WAIT_SECONDS (90).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${JOURNEY_TAG:=0.1.0}" "${WAIT_SECONDS:=90}"
mkdir -p "$ARTIFACTS"

journeyctl() {
  if [ -n "${JOURNEYCTL:-}" ]; then
    "$JOURNEYCTL" "$@"
  else
    docker run --rm --network host "journey/journeyctl:${JOURNEY_TAG}" "$@"
  fi
}

forward producer 8080
producer=$PORT
forward zipkin 9411
zipkin=$PORT

say "POST http://127.0.0.1:${producer}/messages"
answer=$(curl -sS --fail-with-body -X POST "http://127.0.0.1:${producer}/messages" \
  -H 'content-type: application/json' \
  -d '{"key": "journey-sh", "payload": {"text": "hello, journey"}}') || die "the producer answered: ${answer:-nothing}"
say "answer: ${answer}"
trace=$(printf '%s' "$answer" | sed -n 's/.*"trace_id":"\([0-9a-f]\{32\}\)".*/\1/p')
[ -n "$trace" ] || die "no trace_id in the answer"
echo "$trace" >"${ARTIFACTS}/trace-id"

start=$(date +%s)
while :; do
  if out=$(NO_COLOR=1 journeyctl journey "$trace" --zipkin-url "http://127.0.0.1:${zipkin}" 2>&1) &&
    grep -q 'producer → relay → sink' <<<"$out"; then
    break
  fi
  [ $(($(date +%s) - start)) -lt "$WAIT_SECONDS" ] || die "trace ${trace} incomplete after ${WAIT_SECONDS}s: ${out}"
  sleep 2
done
printf '%s\n' "$out" | tee "${ARTIFACTS}/journey.txt"
say "trace ${trace} complete after $(($(date +%s) - start))s"
