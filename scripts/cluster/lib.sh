# Helpers of the cluster scripts (source it). They run against the current kube context
# (KUBECONFIG), with KUBECTL (kubectl), NAMESPACE (journey) and RELEASE (journey).
# shellcheck shell=bash
: "${NAMESPACE:=journey}" "${RELEASE:=journey}" "${KUBECTL:=kubectl}"
: "${ARTIFACTS:=journey-artifacts}"
FORWARDS=()

say() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# forward <service> <port>: `kubectl port-forward svc/<release>-<service>` on a free local port
# of 127.0.0.1, which it puts in PORT (not printed: a command substitution would run it in a
# subshell, and the forward would outlive the script). The forward stops when the script exits.
forward() {
  local svc="${RELEASE}-$1" log
  log=$(mktemp)
  "$KUBECTL" port-forward --address 127.0.0.1 -n "$NAMESPACE" "svc/${svc}" ":$2" >"$log" 2>&1 &
  FORWARDS+=("$!")
  local i port=""
  for i in $(seq 1 100); do
    port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log" | head -n1)
    [ -n "$port" ] && break
    kill -0 "${FORWARDS[-1]}" 2>/dev/null || die "kubectl port-forward svc/${svc} stopped: $(cat "$log")"
    [ "$i" -lt 100 ] || die "kubectl port-forward svc/${svc}: no local port after 20s: $(cat "$log")"
    sleep 0.2
  done
  rm -f "$log"
  say "svc/${svc}:$2 forwarded to 127.0.0.1:${port}"
  # shellcheck disable=SC2034 # read by the sourcing script
  PORT=$port
}

stop_forwards() {
  local p
  for p in "${FORWARDS[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap stop_forwards EXIT
