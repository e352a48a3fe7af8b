# OpenTelemetry Collector: Journey's own distribution, built with the Collector builder (ocb)
# from tools/collector/manifest.yaml (no prebuilt downloads are reachable here).
# The builder and the binary live in $JOURNEY_CACHE/otelcol-$OTELCOL_VERSION; a changed
# manifest triggers a rebuild in place (the builder is kept).
# shellcheck shell=bash
# Every command checks itself, so a failure names its cause.
install_collector() {
  local dir="${JOURNEY_CACHE}/otelcol-${OTELCOL_VERSION}"
  local bin="${dir}/otelcol-journey"
  local rendered
  # The manifest names versions and the output dir as placeholders: fill them in.
  rendered=$(sed -e "s|\${OTELCOL_VERSION}|${OTELCOL_VERSION}|g" \
    -e "s|\${OTELCOL_PROVIDERS_VERSION}|${OTELCOL_PROVIDERS_VERSION}|g" \
    -e "s|\${OTELCOL_BUILD_DIR}|${dir}/build|g" \
    "${JOURNEY_ROOT}/tools/collector/manifest.yaml") || die "collector: cannot read tools/collector/manifest.yaml"

  if installed "$dir" && [ -x "$bin" ] && [ "$rendered" = "$(cat "$dir/manifest.yaml" 2>/dev/null)" ]; then
    log "collector: ${OTELCOL_VERSION} already installed"
  else
    installed "$dir" && log "collector: tools/collector/manifest.yaml changed, rebuilding"
    rm -f "$dir/.installed" "$bin"
    rm -rf "$dir/build"
    mkdir -p "$dir"
    if ! "$dir/builder" version 2>/dev/null | grep -qx "ocb version v${OTELCOL_VERSION}"; then
      log "collector: go install go.opentelemetry.io/collector/cmd/builder@v${OTELCOL_VERSION}"
      GOBIN="$dir" CGO_ENABLED=0 go install -trimpath \
        "go.opentelemetry.io/collector/cmd/builder@v${OTELCOL_VERSION}" \
        || die "collector: go install of the builder v${OTELCOL_VERSION} failed"
    fi
    printf '%s\n' "$rendered" >"$dir/manifest.yaml"
    log "collector: building otelcol-journey ${OTELCOL_VERSION} (components) / ${OTELCOL_PROVIDERS_VERSION} (providers); a cold build takes minutes"
    # CGO off: a static binary. -mod=mod lets go mod tidy/build update the generated go.mod.
    CGO_ENABLED=0 GOFLAGS="${GOFLAGS:+${GOFLAGS} }-mod=mod" \
      "$dir/builder" --config="$dir/manifest.yaml" \
      || die "collector: the builder failed (a module not served at v${OTELCOL_VERSION}? move the whole line in tools/versions.env)"
    mv "$dir/build/otelcol-journey" "$bin" || die "collector: the builder left no binary"
    "$bin" --version >/dev/null || die "collector: the built binary does not run"
    mark_installed "$dir"
  fi
  write_env collector "OTELCOL=$bin" "OTELCOL_VERSION=${OTELCOL_VERSION}"
}
