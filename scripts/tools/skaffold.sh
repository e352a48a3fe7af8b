# skaffold, built from its Go module by the wrapper module tools/skaffold (no prebuilt binary is
# reachable here, and `go install …/cmd/skaffold@v…` is refused: skaffold's go.mod has replace
# directives, which only apply in the main module, so tools/skaffold/go.mod repeats them), plus
# the JSON schema of the apiVersion skaffold.yaml uses, copied out of the module source
# (docs-v2/content/en/schemas/) for tests/tests/chart.rs.
#
#   skaffold-$SKAFFOLD_VERSION/bin/skaffold
#   skaffold-$SKAFFOLD_VERSION/$SKAFFOLD_SCHEMA_VERSION.json
#
# The build is upstream's release build (Makefile: GO_LDFLAGS, GO_BUILD_TAGS, GO_BUILD_TAGS_linux)
# minus cgo. Upstream first runs hack/generate-embedded-files.sh, which copies the schemas into
# fs/assets/schemas_generated/ (embedded; `skaffold schema get` prints them from there): the module
# zip lacks them, and Go refuses -overlay for files in the module cache, so the build points the
# skaffold module at a copy of itself with those files added (a temporary -modfile, which differs
# from tools/skaffold/go.mod by that one replace).
#
# To bump: SKAFFOLD_VERSION in tools/versions.env, then in tools/skaffold copy the replace and
# exclude lines of the new skaffold go.mod into go.mod (checked below), and
#   go get github.com/GoogleContainerTools/skaffold/v2@vX && go mod tidy
# shellcheck shell=bash

SKAFFOLD_MODULE=github.com/GoogleContainerTools/skaffold/v2

# skaffold_fingerprint: what the install was built from; a change rebuilds it.
skaffold_fingerprint() {
  local src="${JOURNEY_ROOT}/tools/skaffold"
  {
    echo "SKAFFOLD_VERSION=${SKAFFOLD_VERSION} SKAFFOLD_SCHEMA_VERSION=${SKAFFOLD_SCHEMA_VERSION}"
    cat "$src/go.mod" "$src/go.sum"
    declare -f skaffold_build skaffold_directives
  } | sha256sum | cut -d' ' -f1
}

# skaffold_directives <go.mod file>: its replace and exclude directives, normalised.
skaffold_directives() {
  go mod edit -json "$1" | sed -n '/^\t"Replace": \[/,/^\t\]/p; /^\t"Exclude": \[/,/^\t\]/p'
}

# skaffold_build <dir>: build <dir>/bin/skaffold and copy the schema to <dir>.
skaffold_build() {
  local dir=$1 src="${JOURNEY_ROOT}/tools/skaffold" mod=${SKAFFOLD_MODULE}
  local want="v${SKAFFOLD_VERSION}" got
  got=$(cd "$src" && go list -m -f '{{.Version}}' "$mod") ||
    die "skaffold: go list in tools/skaffold failed (see above; after a bump run go mod tidy there)"
  [ "$got" = "$want" ] ||
    die "skaffold: tools/skaffold/go.mod resolves ${got}, tools/versions.env wants ${want}: update one of them"

  log "skaffold: go mod download ${mod}@${want}"
  local json moddir info
  json=$(cd "$src" && go mod download -json "$mod") || die "skaffold: go mod download ${mod}@${want} failed (see above)"
  moddir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  info=$(sed -n 's/^[[:space:]]*"Info": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")
  { [ -d "$moddir" ] && [ -f "$info" ]; } || die "skaffold: go mod download gave no module dir for ${mod}@${want}: ${json}"

  # The wrapper must resolve what upstream builds with: the same replace and exclude directives.
  [ "$(skaffold_directives "$src/go.mod")" = "$(skaffold_directives "$moddir/go.mod")" ] ||
    die "skaffold: the replace/exclude directives of tools/skaffold/go.mod differ from skaffold ${want}'s go.mod (${moddir}/go.mod): copy them over, then go mod tidy there"

  local schema="${moddir}/docs-v2/content/en/schemas/${SKAFFOLD_SCHEMA_VERSION}.json"
  [ -f "$schema" ] || die "skaffold: ${mod}@${want} has no schema ${SKAFFOLD_SCHEMA_VERSION} (pick another SKAFFOLD_SCHEMA_VERSION)"
  cp "$schema" "$dir/${SKAFFOLD_SCHEMA_VERSION}.json"
  chmod 644 "$dir/${SKAFFOLD_SCHEMA_VERSION}.json"

  # The module copy with hack/generate-embedded-files.sh's output (minus Google's secrets and
  # firelog key), and the -modfile that points the skaffold module at it.
  local work="$dir/build"
  log "skaffold: copying the module source to ${work}, adding the embedded schemas"
  mkdir -p "$work"
  {
    cp -R "$moddir" "$work/skaffold" && chmod -R u+w "$work/skaffold" &&
      cp -R "$work/skaffold/docs-v2/content/en/schemas" "$work/skaffold/fs/assets/schemas_generated" &&
      echo "Used for marking generating embedded files task complete, don't modify this." >"$work/skaffold/fs/assets/check.txt" &&
      cp "$src/go.mod" "$src/go.sum" "$work/" &&
      go mod edit -replace "${mod}=${work}/skaffold" "$work/go.mod"
  } || die "skaffold: preparing the build copy in ${work} failed (disk full? see above)"

  # Version ldflags as upstream's Makefile sets them: the tag, its commit (from the module proxy's
  # origin record, when it has one) and, as with SOURCE_DATE_EPOCH, the commit's date.
  local pkg="${mod}/pkg/skaffold/version" commit date
  commit=$(sed -n 's/.*"Hash":"\([0-9a-f]\{40\}\)".*/\1/p' "$info")
  [ -n "$commit" ] || log "skaffold: the module proxy recorded no commit for ${want}; \`skaffold version -o '{{.GitCommit}}'\` stays empty"
  date=$(cd "$src" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$mod")

  log "skaffold: go build ${mod}/cmd/skaffold ${want} in tools/skaffold (cold: about 3 to 5 minutes on 2 cores)"
  mkdir -p "$dir/bin"
  (cd "$src" && CGO_ENABLED=0 go build -modfile "$work/go.mod" -trimpath -buildvcs=false \
    -tags "timetzdata osusergo netgo static_build release" \
    -ldflags "-s -w -X ${pkg}.version=${want} -X ${pkg}.gitCommit=${commit} -X ${pkg}.buildDate=${date}" \
    -o "$dir/bin/skaffold" "${mod}/cmd/skaffold") ||
    die "skaffold: go build failed in tools/skaffold (see above; after a bump run go mod tidy there)"
  rm -rf "$work"

  # The binary must say its version, read the pinned schema version and embed its schema.
  local bin="$dir/bin/skaffold" out newest
  out=$(SKAFFOLD_UPDATE_CHECK=false "$bin" version)
  [ "$out" = "$want" ] || die "skaffold: \`skaffold version\` says '${out}', not ${want}"
  out=$(SKAFFOLD_UPDATE_CHECK=false "$bin" schema list)
  grep -qx "skaffold/${SKAFFOLD_SCHEMA_VERSION}" <<<"$out" ||
    die "skaffold: ${want} does not list the schema skaffold/${SKAFFOLD_SCHEMA_VERSION}: ${out//$'\n'/ }"
  newest=${out##*$'\n'}
  SKAFFOLD_UPDATE_CHECK=false "$bin" schema get "skaffold/${SKAFFOLD_SCHEMA_VERSION}" | cmp -s - "$dir/${SKAFFOLD_SCHEMA_VERSION}.json" ||
    die "skaffold: \`skaffold schema get skaffold/${SKAFFOLD_SCHEMA_VERSION}\` differs from the module's ${SKAFFOLD_SCHEMA_VERSION}.json (embedded schemas missing?)"
  log "skaffold: ${want} (commit ${commit:-unknown}, ${date}); newest schema it reads: ${newest}"
}

install_skaffold() {
  local dir="${JOURNEY_CACHE}/skaffold-${SKAFFOLD_VERSION}"
  local fp
  fp=$(skaffold_fingerprint)
  build_once "$dir" "$fp" skaffold_build "skaffold: ${SKAFFOLD_VERSION} and schema ${SKAFFOLD_SCHEMA_VERSION}"
  write_env skaffold "SKAFFOLD=$dir/bin/skaffold" "SKAFFOLD_SCHEMA=$dir/${SKAFFOLD_SCHEMA_VERSION}.json" \
    "SKAFFOLD_SCHEMA_VERSION=${SKAFFOLD_SCHEMA_VERSION}" "SKAFFOLD_VERSION=${SKAFFOLD_VERSION}"
}
