# syntax=docker/dockerfile:1
# The Trellis control plane image, and the sidecar image. At the repository root:
#
#   docker build -t trellis:dev .
#   docker build --target sidecar -t trellis-sidecar:dev .
#
# deploy/kubernetes/base/deployment.yaml runs it as `trellis serve --kubernetes ...`.

# Build: the toolchain the project is tested with; only the `trellis` binary is built.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p trellis \
 && install -D target/release/trellis /out/trellis

# The sidecar image (`docker build --target sidecar -t trellis-sidecar:dev .`): what the
# injection webhook puts in each meshed pod. `trellis capture` (the init container) needs
# iptables; `trellis agent` (the native sidecar) starts Envoy, taken from Envoy's own release
# image. Runs as the proxy's uid 1337 (capture runs as root with NET_ADMIN and NET_RAW only).
FROM envoyproxy/envoy:distroless-v1.40.0 AS envoy
FROM debian:bookworm-slim AS sidecar
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/trellis /usr/local/bin/trellis
COPY --from=envoy /usr/local/bin/envoy /usr/local/bin/envoy
USER 1337:1337
ENTRYPOINT ["/usr/local/bin/trellis"]

# The control plane (the default target; listed last).
# Run: glibc and libgcc only (rustls with ring, no OpenSSL), no shell, a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/trellis /usr/local/bin/trellis
USER 65532:65532
EXPOSE 18000 18001
ENTRYPOINT ["/usr/local/bin/trellis"]
CMD ["serve", "--kubernetes", "--xds-address=0.0.0.0:18000", "--admin-address=0.0.0.0:18001"]
