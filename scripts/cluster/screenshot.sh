#!/usr/bin/env bash
# The Zipkin UI as a user's browser shows it, through `kubectl port-forward`: headless Chromium
# renders the trace page of a trace and the dependency graph of the last hour; writes
# $ARTIFACTS/zipkin-trace.{png,html} and $ARTIFACTS/zipkin-dependencies.{png,html} (the
# rendered DOM). Used by the kind tests (make test) and by the kind workflow.
#
#   scripts/cluster/screenshot.sh <trace-id>
#
# Environment: see lib.sh; CHROMIUM (default: chromium, else google-chrome).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
trace=${1:?usage: screenshot.sh <trace-id>}
mkdir -p "$ARTIFACTS"
if [ -z "${CHROMIUM:-}" ]; then
  CHROMIUM=$(command -v chromium || command -v google-chrome || command -v chromium-browser) ||
    die "no Chromium or Chrome (set CHROMIUM)"
fi
profile=$(mktemp -d)
cleanup() { stop_forwards; rm -rf "$profile"; }
trap cleanup EXIT

# Headless, as root too; no requests to Google's services (the page must not need them).
browse() {
  "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-quic \
    --no-first-run --disable-background-networking --disable-component-update --disable-sync \
    --hide-scrollbars --window-size=1440,900 --user-data-dir="$profile" \
    --virtual-time-budget=20000 "$@" 2>/dev/null
}

forward zipkin 9411
zipkin=$PORT
base="http://127.0.0.1:${zipkin}/zipkin"
now=$(($(date +%s) * 1000))
for page in "trace|traces/${trace}" "dependencies|dependency?startTime=$((now - 3600000))&endTime=${now}"; do
  name=${page%%|*} path=${page#*|}
  browse --dump-dom "${base}/${path}" >"${ARTIFACTS}/zipkin-${name}.html" || die "chromium could not render ${base}/${path}"
  browse --screenshot="${ARTIFACTS}/zipkin-${name}.png" "${base}/${path}" || die "chromium could not screenshot ${base}/${path}"
  say "${base}/${path} → ${ARTIFACTS}/zipkin-${name}.png"
done
