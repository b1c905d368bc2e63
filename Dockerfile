# syntax=docker/dockerfile:1
#
# Container image of the device-logs worker.
#   docker build -t device-logs:0.1.0 .
# Build stage: release build of the one binary (librdkafka, OpenSSL and zlib
# linked statically). Runtime stage: distroless (glibc, CA certificates, no
# shell), the binary, its default config, numeric non-root user 10001 (the
# chart's securityContext uses the same uid/gid).

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Static zlib: the runtime image has no libz.
ENV LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin device-logs \
 && install -D -m 0755 target/release/device-logs /out/device-logs \
 && /out/device-logs check-config --config config/default.toml >/dev/null

# The Debian release of the runtime must match the build stage (glibc).
FROM gcr.io/distroless/cc-debian12 AS runtime
LABEL org.opencontainers.image.title="device-logs" \
      org.opencontainers.image.description="Event-driven worker of the MFA device logs request state machine" \
      org.opencontainers.image.source="https://github.com/example/device-logs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/device-logs /usr/local/bin/device-logs
COPY config/default.toml /etc/device-logs/config.toml
# CA bundle of the image for Kafka (librdkafka) and Redis (rediss://) TLS; a
# pod can point SSL_CERT_FILE at a mounted private CA instead.
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/device-logs"]
CMD ["run", "--config", "/etc/device-logs/config.toml"]
