# syntax=docker/dockerfile:1
#
# One image for every pricefront binary (producer, consumer, mock-providers, admin).
# There is no ENTRYPOINT: docker-compose.yml picks the binary with `command:`, e.g.
#   docker run --rm pricefront admin get kafka.brokers
#
# Stages: chef (toolchain + cargo-chef) -> planner (dependency recipe) -> builder (dependencies
# cooked in their own cached layer, then the crate) -> runtime (debian slim, non-root).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
# rdkafka-sys builds the librdkafka it bundles with ./configure (bash) and make: it needs a C and
# a C++ compiler (librdkafka's configure requires cxx), make, and zlib found through pkg-config
# (the binaries then link libz.so.1 dynamically). The rust image has them already; they are
# listed so the build does not depend on that. Versions come from the pinned Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends bash g++ gcc make pkg-config zlib1g-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# This layer (every dependency, librdkafka included) is rebuilt only when Cargo.toml or
# Cargo.lock change, not when the project's own sources do.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates for HTTPS price sources and rediss://; libssl3 for librdkafka (Kafka over
# TLS/SASL); libz.so.1, libgcc_s and bash (used by the compose
# health checks through /dev/tcp, so no curl is needed) are already in the slim image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 pricefront \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin pricefront
WORKDIR /app
# Listed one by one, so a binary added later is shipped only once it is added here.
COPY --from=builder \
    /src/target/release/producer \
    /src/target/release/consumer \
    /src/target/release/mock-providers \
    /src/target/release/admin \
    /src/target/release/standalone \
    /usr/local/bin/
COPY config/ /app/config/
# Compiled-in defaults, then this file, then PRICEFRONT__SECTION__KEY env variables.
ENV PRICEFRONT_CONFIG=/app/config/docker.toml
USER 10001:10001
# producer HTTP API, mock price APIs, consumer /metrics
EXPOSE 8080 9100 9101
CMD ["producer"]
