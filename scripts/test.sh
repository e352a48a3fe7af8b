#!/usr/bin/env bash
# `make test`: every test, in tiers from the fastest to the slowest, each one timed, then the
# teardown proof. A failing tier does not stop the later ones; the run fails at the end if any
# tier failed, and the summary names it.
#
#   scripts/test.sh                      every tier
#   scripts/test.sh images kind          only these tiers (names below)
#   scripts/test.sh --tools stack chart  the tools these tiers need (scripts/install-tools.sh's
#                                        names; none printed: every tool), for `make test TIERS=`
#
# Each integration test binary (tests/Cargo.toml [[test]]) belongs to exactly one tier: a binary
# in none of them would never run, so that is an error.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$JOURNEY_ROOT"

CARGO=${CARGO:-cargo}
declare -A TIERS=(
  [unit]=""
  [stack]="harness journey producer_api dlq shutdown ordering faults journeyctl_seed journeyctl_verify"
  [chart]="chart control_plane journeyctl_wait workflow"
  [images]="images"
  [kind]="kind"
)
ORDER=(unit stack chart images kind)
# The tools each tier's tests use (apt: the headers rdkafka builds with); "all" for every one.
declare -A TOOLS=(
  [unit]="apt"
  [stack]="apt kafka zipkin collector"
  [chart]="apt kafka collector helm skaffold hadolint controlplane actionlint"
  [images]="all"
  [kind]="all"
)
declare -A DESCRIBE=(
  [unit]="unit tests of every crate"
  [stack]="the local stack: Kafka, the Collector, Zipkin and the services as processes"
  [chart]="the chart: Helm, the Collector config, Kafka env, a kube-apiserver with kwok, the kind workflow"
  [images]="the images: built on a private dockerd, the chart's pods as containers"
  [kind]="the chart on a real kind cluster: the README's commands, helm test, port-forward, Zipkin UI, NetworkPolicies, volumes, faults, skaffold dev"
)

# Every [[test]] is in a tier.
declare -A seen=()
for t in "${ORDER[@]}"; do for b in ${TIERS[$t]}; do seen[$b]=1; done; done
while read -r b; do
  [ -n "${seen[$b]:-}" ] || die "tests/Cargo.toml: test binary '$b' is in no tier of scripts/test.sh"
done < <(awk '/^\[\[test\]\]/ {t=1; next} t && /^name *=/ {gsub(/[" ]/, "", $0); sub(/name=/, ""); print; t=0}' tests/Cargo.toml)

list_tools=false
if [ "${1:-}" = --tools ]; then list_tools=true; shift; fi
selected=("$@")
[ ${#selected[@]} -gt 0 ] || selected=("${ORDER[@]}")
for t in "${selected[@]}"; do
  [ -n "${TIERS[$t]+x}" ] || die "unknown tier '$t' (tiers: ${ORDER[*]})"
done

if $list_tools; then
  declare -A wanted=()
  for t in "${selected[@]}"; do for c in ${TOOLS[$t]}; do wanted[$c]=1; done; done
  # Every tool: print nothing (install-tools.sh without names installs all of them).
  [ -z "${wanted[all]:-}" ] || exit 0
  printf '%s\n' "${!wanted[@]}" | sort
  exit 0
fi

summary=()
failed=()
total=$SECONDS
for t in "${ORDER[@]}"; do
  [[ " ${selected[*]} " == *" $t "* ]] || continue
  printf '\n==> tier %s: %s\n' "$t" "${DESCRIBE[$t]}"
  start=$SECONDS
  if [ "$t" = unit ]; then
    cmd=("$CARGO" test --locked --workspace --lib --bins --no-fail-fast)
  else
    cmd=("$CARGO" test --locked -p journey-tests --no-fail-fast)
    for b in ${TIERS[$t]}; do cmd+=(--test "$b"); done
  fi
  echo "    ${cmd[*]}"
  if "${cmd[@]}"; then result=ok; else result=FAILED; failed+=("$t"); fi
  secs=$((SECONDS - start))
  summary+=("$(printf '  %-8s %-7s %4dm%02ds' "$t" "$result" $((secs / 60)) $((secs % 60)))")
  printf '==> tier %s: %s in %dm%02ds\n' "$t" "$result" $((secs / 60)) $((secs % 60))
done

printf '\n==> teardown: nothing the tests started or created is left\n'
start=$SECONDS
if "$CARGO" run --locked --quiet -p journey-tests --bin journey-stack -- check-ledger; then
  result=ok
else
  result=FAILED; failed+=(teardown)
fi
secs=$((SECONDS - start))
summary+=("$(printf '  %-8s %-7s %4dm%02ds' teardown "$result" $((secs / 60)) $((secs % 60)))")

secs=$((SECONDS - total))
printf '\n==> summary (%dm%02ds in all)\n' $((secs / 60)) $((secs % 60))
printf '%s\n' "${summary[@]}"
[ ${#failed[@]} -eq 0 ] || die "failed tiers: ${failed[*]}"
