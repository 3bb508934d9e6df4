# syntax=docker/dockerfile:1
# The Trellis control plane image. At the repository root:
#
#   docker build -t trellis:dev .
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

# Run: glibc and libgcc only (rustls with ring, no OpenSSL), no shell, a non-root user.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/trellis /usr/local/bin/trellis
USER 65532:65532
EXPOSE 18000 18001
ENTRYPOINT ["/usr/local/bin/trellis"]
CMD ["serve", "--kubernetes", "--xds-address=0.0.0.0:18000", "--admin-address=0.0.0.0:18001"]
