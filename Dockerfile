# Journey's container images: one build of every binary, then one small runtime image per
# binary on distroless cc (glibc + libgcc, no shell) as the nonroot user (uid 65532).
#
#   DOCKER_BUILDKIT=1 docker build --target producer   -t journey/producer:0.1.0   .
#   DOCKER_BUILDKIT=1 docker build --target consumer   -t journey/consumer:0.1.0   .   # relay and sink (ROLE=...)
#   DOCKER_BUILDKIT=1 docker build --target journeyctl -t journey/journeyctl:0.1.0 .
#
# (`scripts/images.sh journey` runs these three.) BuildKit is required for the cache mounts; no
# `# syntax=` line, so the builder's own Dockerfile frontend is used and no frontend image is
# pulled (Docker 20.10 and later). skaffold.yaml builds the same three targets. The three builds
# share the `builder` stage, so the Rust code is compiled once; the crate registry and the target
# dir live in cache mounts, so a rebuild after a change compiles only the crates that changed,
# and an image whose binary did not change keeps its layers.

ARG RUST_IMAGE=rust:1.95-bookworm
# Debian 12, like the builder: the binaries link against the same glibc.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- build: every binary, compiled once -------------------------------------------------------
FROM ${RUST_IMAGE} AS builder
# A failing command in a pipe fails the RUN.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# cmake: librdkafka's build (rdkafka `cmake-build`); libcurl4-openssl-dev: headers librdkafka's
# cmake build includes (libcurl is not linked); libssl-dev + pkg-config: every TLS client links
# the system OpenSSL, whose libssl3 the runtime image carries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libcurl4-openssl-dev libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# cargo decides what to recompile by modification times, and this cache-mounted target dir is
# shared by every build (other trees, other branches, older checkouts): a file whose content
# differs from what the last build here compiled is touched first, so cargo compiles it again
# whatever its time (`sha256sum --check` fails when any file differs: that is the point).
# The binaries are copied out of the target dir; none may need libz.so at run time (the
# runtime image has no zlib).
RUN --mount=type=cache,id=journey-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=journey-cargo-target,target=/src/target,sharing=locked \
    if [ -f target/journey-sources.sha256 ]; then \
      { sha256sum --check --quiet target/journey-sources.sha256 2>/dev/null || true; } \
        | sed -n 's/: FAILED$//p' | xargs -r -d '\n' touch --; \
    fi \
 && cargo build --release --locked -p producer -p consumer -p journeyctl --bins \
 && find . -path ./target -prune -o -type f -print0 | xargs -0 sha256sum > target/journey-sources.sha256 \
 && mkdir -p /out \
 && cp target/release/producer target/release/consumer target/release/journeyctl /out/ \
 && for bin in /out/*; do \
      if ldd "$bin" | grep -q 'libz\.so'; then echo "$bin links libz.so dynamically" >&2; exit 1; fi; \
    done

# ---- runtime images ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
USER 65532:65532

FROM runtime AS consumer
COPY --from=builder /out/consumer /usr/local/bin/consumer
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/consumer"]

FROM runtime AS journeyctl
COPY --from=builder /out/journeyctl /usr/local/bin/journeyctl
ENTRYPOINT ["/usr/local/bin/journeyctl"]

# Last stage: what a plain `docker build .` produces.
FROM runtime AS producer
COPY --from=builder /out/producer /usr/local/bin/producer
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/producer"]
