# syntax=docker/dockerfile:1
#
# Journey's container images: one build of every binary, then one small runtime image per
# binary on distroless cc (glibc + libgcc, no shell) as the nonroot user (uid 65532).
#
#   docker build --target producer   -t journey/producer:dev   .
#   docker build --target consumer   -t journey/consumer:dev   .   # relay and sink (ROLE=...)
#   docker build --target journeyctl -t journey/journeyctl:dev .
#
# skaffold.yaml builds the same three targets. The three builds share every layer up to
# `builder`, so the Rust code is compiled once.

ARG RUST_IMAGE=rust:1.95-bookworm
# Debian 12, like the builder: the binaries link against the same glibc.
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- toolchain: Rust + what rdkafka's bundled librdkafka needs to build -----------------------
FROM ${RUST_IMAGE} AS chef
# A failing command in a pipe fails the RUN.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# cmake: librdkafka's build (rdkafka `cmake-build`); perl: OpenSSL's build (`ssl-vendored`);
# libcurl4-openssl-dev: headers librdkafka's cmake build includes (libcurl is not linked).
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake perl libcurl4-openssl-dev \
 && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --version 0.1.78 --locked
WORKDIR /src

# ---- dependency recipe: only Cargo manifests and the lock file matter --------------------------
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- build: dependencies first (a cached layer until Cargo.lock changes), then the workspace ---
FROM chef AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --workspace --bins --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --workspace --bins \
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
