# syntax=docker/dockerfile:1
#
# ringwatch container image: multi-stage, built with the pinned toolchain and Cargo.lock,
# run as a non-root user from distroless `cc` (glibc + libgcc, no shell, no package manager;
# why this base: docs/operations.md#container-image).
#
#   docker build -t ringwatch:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run -d -p 127.0.0.1:8080:8080 -v ringwatch-data:/var/lib/ringwatch ringwatch:0.1.0
#
# io_uring: Docker's default seccomp profile (Engine 25.0 and later) refuses the io_uring
# syscalls, so ringwatch runs its shards on epoll there, by itself; the `shard started ...
# driver=` log line and `ringwatch_shard_info{driver=...}` say which. docs/operations.md
# explains how to allow io_uring (seccomp profile, memlock on old kernels).

# --- build ------------------------------------------------------------------------------
# Rust 1.95.0 (the toolchain the project is built and tested with) on Debian 13 "trixie";
# the runtime below is the same Debian release, so the binary's glibc matches.
FROM docker.io/library/rust:1.95.0-slim-trixie AS build
WORKDIR /build

# Dependency layer: the manifests, the lock file and empty targets only. This layer and the
# compiled dependencies stay cached until Cargo.toml / Cargo.lock change, not on every edit.
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
COPY bench/Cargo.toml bench/Cargo.toml
COPY packaging/docker/stub-workspace.sh /usr/local/bin/stub-workspace
RUN stub-workspace . \
 && cargo fetch --locked \
 && cargo build --release --locked -p ringwatch --bin ringwatch \
 && rm -rf src target/release/ringwatch target/release/deps/ringwatch-* \
      target/release/deps/libringwatch-* target/release/.fingerprint/ringwatch-*

# The real sources (only what the server needs; see .dockerignore). The stub's fingerprints
# are gone, so cargo rebuilds ringwatch itself even though COPY keeps the older mtimes.
COPY src src
RUN cargo build --release --locked -p ringwatch --bin ringwatch \
 && mkdir -p /out/var/lib/ringwatch \
 && cp target/release/ringwatch /out/ringwatch \
 && /out/ringwatch --version

# --- runtime ----------------------------------------------------------------------------
# distroless cc, Debian 13, `nonroot` variant: uid/gid 65532, no shell.
FROM gcr.io/distroless/cc-debian13:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="ringwatch" \
      org.opencontainers.image.description="Thread-per-core io_uring service-health monitor" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.documentation="docs/operations.md" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian13:nonroot"

COPY --from=build /out/ringwatch /usr/local/bin/ringwatch
# Default config (standalone, SQLite in /var/lib/ringwatch); mount your own over it.
COPY packaging/compose/standalone.yaml /etc/ringwatch/ringwatch.yaml
# The data directory must belong to the runtime user before a volume is created from it.
COPY --from=build --chown=65532:65532 /out/var/lib/ringwatch /var/lib/ringwatch

USER 65532:65532
WORKDIR /var/lib/ringwatch
VOLUME ["/etc/ringwatch", "/var/lib/ringwatch"]
EXPOSE 8080
# ringwatch stops on SIGTERM: in-flight probes finish, the store drains. Give it time
# (`docker stop -t 30`, compose `stop_grace_period: 30s`); Docker's default 10 s may cut a drain.
STOPSIGNAL SIGTERM
# The binary checks itself (no curl in the image): GET /readyz on the config's server.listen.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/usr/local/bin/ringwatch", "healthcheck", "--config", "/etc/ringwatch/ringwatch.yaml"]
ENTRYPOINT ["/usr/local/bin/ringwatch"]
CMD ["run", "--config", "/etc/ringwatch/ringwatch.yaml"]
