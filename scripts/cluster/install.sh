#!/usr/bin/env bash
# Installs the chart the way the README tells users to: a namespace that enforces Pod Security
# "restricted", then `helm install --wait`. Prints how long install → every pod Ready took.
# Used by the kind tests (make test) and by the kind workflow (.github/workflows/kind.yaml).
#
#   scripts/cluster/install.sh [-f values.yaml ...] [--set k=v ...]
#
# Environment: NAMESPACE (journey), RELEASE (journey), TIMEOUT (10m), KUBECTL (kubectl),
# HELM (helm), and the usual KUBECONFIG.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
: "${NAMESPACE:=journey}" "${RELEASE:=journey}" "${TIMEOUT:=10m}" "${KUBECTL:=kubectl}" "${HELM:=helm}"

say() { printf '[install] %s\n' "$*" >&2; }

if ! "$KUBECTL" get namespace "$NAMESPACE" >/dev/null 2>&1; then
  say "creating namespace ${NAMESPACE} (Pod Security: restricted)"
  "$KUBECTL" create namespace "$NAMESPACE" >/dev/null
fi
"$KUBECTL" label --overwrite namespace "$NAMESPACE" \
  pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/warn=restricted \
  pod-security.kubernetes.io/audit=restricted >/dev/null

say "helm install ${RELEASE} charts/journey -n ${NAMESPACE} --wait --timeout ${TIMEOUT} $*"
start=$(date +%s)
# A progress line every 15 s while Helm waits: which pods are not Ready yet.
(
  while sleep 15; do
    not_ready=$("$KUBECTL" get pods -n "$NAMESPACE" --no-headers 2>/dev/null |
      awk '{split($2, r, "/"); if (r[1] != r[2] && $3 != "Completed") printf "%s(%s %s) ", $1, $2, $3}')
    say "waiting $(($(date +%s) - start))s: ${not_ready:-all pods ready, Helm finishing}"
  done
) &
progress=$!
trap 'kill "$progress" 2>/dev/null || true' EXIT
if ! "$HELM" install "$RELEASE" "${root}/charts/journey" -n "$NAMESPACE" --wait --timeout "$TIMEOUT" "$@"; then
  say "helm install failed after $(($(date +%s) - start))s; pods and events:"
  # Diagnostics only (the failure is reported above and below): a kubectl error must not hide it.
  "$KUBECTL" get pods -n "$NAMESPACE" -o wide >&2 || true
  "$KUBECTL" get events -n "$NAMESPACE" --sort-by=.lastTimestamp >&2 || true
  exit 1
fi
say "every pod Ready $(($(date +%s) - start))s after helm install started"
