# syntax=docker/dockerfile:1
# Two images from one build of the workspace:
#   docker build --target operator    -t eventpipe:0.1.0 .
#   docker build --target transformer -t eventpipe-transformer:0.1.0 .
# Both targets share the builder stage, so the second build reuses the first one's binaries.

FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cargo registry and the target directory are cache mounts: they survive between builds but
# are not part of any layer, so the binaries are copied out of target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin eventpipe --bin eventpipe-transformer \
 && mkdir -p /out \
 && cp target/release/eventpipe target/release/eventpipe-transformer /out/

# distroless/cc: glibc, libgcc and CA certificates (TLS is rustls, no OpenSSL needed), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot AS transformer
COPY --from=builder /out/eventpipe-transformer /usr/local/bin/eventpipe-transformer
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/eventpipe-transformer"]

# Last, so that a plain `docker build .` gives the operator.
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=builder /out/eventpipe /usr/local/bin/eventpipe
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/eventpipe"]
CMD ["operator"]
