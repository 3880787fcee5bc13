# syntax=docker/dockerfile:1
# Tollgate: release build in a Rust image, run as a non-root user on debian:bookworm-slim.
#   docker build -t tollgate .
# To package a binary built elsewhere (glibc of Debian 12 or older) instead, put it at
# dist/tollgate and build the `prebuilt` target: docker build --target prebuilt -t tollgate .

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src src
COPY migrations migrations
# The release profile keeps line tables for backtraces: 80 of the binary's 110 MB. The image
# drops them (function names stay in backtraces).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tollgate \
    && mkdir -p /out && cp target/release/tollgate /out/tollgate \
    && strip --strip-debug /out/tollgate

# Everything but the binary, shared by the two ways of getting it.
FROM debian:bookworm-slim AS runtime-base
# CA certificates for HTTPS providers; bash (already in the image) runs the health check.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid tollgate --no-create-home \
        --home-dir /var/lib/tollgate tollgate \
    && mkdir -p /etc/tollgate /var/lib/tollgate /var/spool/tollgate \
    && chown tollgate:tollgate /var/lib/tollgate /var/spool/tollgate
COPY deploy/tollgate.toml /etc/tollgate/config.toml

# Config (read-only is fine), SQLite database, usage spool (rows wait here while the
# database is down: keep it across restarts).
VOLUME ["/etc/tollgate", "/var/lib/tollgate", "/var/spool/tollgate"]
ENV TOLLGATE_CONFIG=/etc/tollgate/config.toml
USER tollgate:tollgate
WORKDIR /var/lib/tollgate
EXPOSE 8080

# No curl in a slim image: bash's /dev/tcp sends the request and the status line is checked.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]

STOPSIGNAL SIGTERM
ENTRYPOINT ["tollgate"]
CMD ["serve"]

FROM runtime-base AS prebuilt
COPY dist/tollgate /usr/local/bin/tollgate

# The default target (last): the binary from the build stage.
FROM runtime-base AS runtime
COPY --from=build /out/tollgate /usr/local/bin/tollgate
